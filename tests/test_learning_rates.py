"""`kd.learning_rates.warmup_cosine`: the shape of the schedule and its input checks."""

import keras
import numpy as np
import pytest

import keras_diffusion as kd


def values(schedule, updates):
    return np.array([float(keras.ops.convert_to_numpy(schedule(step))) for step in range(updates + 1)])


def test_warmup_rises_linearly_to_the_peak_then_the_rate_decays_as_a_cosine_to_zero():
    peak, updates = 3e-3, 200
    rates = values(kd.learning_rates.warmup_cosine(peak, updates, warmup=0.1), updates)
    np.testing.assert_allclose(rates[:21], peak * np.arange(21) / 20, rtol=1e-5, atol=1e-12)
    decay = 0.5 * peak * (1 + np.cos(np.pi * np.arange(181) / 180))
    np.testing.assert_allclose(rates[20:], decay, rtol=1e-4, atol=1e-9)
    assert rates.max() == pytest.approx(peak) and rates[-1] == pytest.approx(0.0, abs=1e-12)


def test_without_warmup_the_run_starts_at_the_peak():
    rates = values(kd.learning_rates.warmup_cosine(1e-3, 10, warmup=0.0), 10)
    assert rates[0] == pytest.approx(1e-3) and np.all(np.diff(rates) < 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(peak=1e-3, updates=1), "updates"), (dict(peak=0.0, updates=10), "peak"),
     (dict(peak=1e-3, updates=10, warmup=1.0), "warmup")],  # fmt: skip
)
def test_bad_arguments_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kd.learning_rates.warmup_cosine(**kwargs)
