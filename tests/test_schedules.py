import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_diffusion import schedules


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_alpha_bar_is_strictly_decreasing_in_unit_interval(name):
    s = schedules.get_schedule(name, 1000)
    assert np.all(np.diff(s.alpha_bar) < 0)
    assert 0 < s.alpha_bar[-1] < s.alpha_bar[0] < 1


def test_linear_betas_match_ddpm_end_points_and_alpha_bar_is_their_product():
    s = schedules.LinearSchedule(1000)
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(s.betas), (0.02 - 1e-4) / 999, rtol=1e-9)
    np.testing.assert_allclose(s.alpha_bar, np.cumprod(1 - s.betas), rtol=1e-12)
    # Closed form of log ᾱ_T, known value for DDPM's schedule: ᾱ_T ≈ 4.04e-5.
    assert s.alpha_bar[-1] == pytest.approx(4.0358e-5, rel=1e-3)


def test_cosine_alpha_bar_follows_the_squared_cosine():
    s = schedules.CosineSchedule(1000)
    t = np.arange(1, 1001) / 1000
    f = np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2
    unclipped = s.betas < 0.999
    np.testing.assert_allclose(s.alpha_bar[unclipped], f[unclipped], rtol=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_tables_match_their_definitions(name):
    s = schedules.get_schedule(name, 200)
    beta_tilde = s.betas * (1 - s.alpha_bar_prev) / (1 - s.alpha_bar)
    np.testing.assert_allclose(s.posterior_variance, beta_tilde, rtol=1e-12)
    assert s.posterior_variance[0] == 0.0
    assert np.all(s.posterior_variance[1:] <= s.betas[1:])
    # The posterior mean of x_{t-1} given x_0 = x_t = 1 through q: coef1 + coef2 written out.
    expected = np.sqrt(s.alpha_bar_prev) * s.betas / (1 - s.alpha_bar) + np.sqrt(s.alphas) * (
        1 - s.alpha_bar_prev
    ) / (1 - s.alpha_bar)
    np.testing.assert_allclose(s.posterior_mean_coef1 + s.posterior_mean_coef2, expected, rtol=1e-12)


def test_add_noise_has_the_statistics_of_q_xt_given_x0():
    s = schedules.LinearSchedule(1000)
    rng = np.random.default_rng(0)
    n = 20000
    for t in (0, 100, 500, 999):
        noise = rng.standard_normal((n, 1)).astype("float32")
        x0 = np.full((n, 1), 0.7, "float32")
        xt = keras.ops.convert_to_numpy(s.add_noise(x0, noise, np.full((n,), t)))
        assert xt.mean() == pytest.approx(np.sqrt(s.alpha_bar[t]) * 0.7, abs=4 * np.sqrt(1 / n))
        assert xt.std() == pytest.approx(np.sqrt(1 - s.alpha_bar[t]), rel=0.03)


def test_schedule_config_round_trips_through_keras_serialization():
    s = schedules.CosineSchedule(500, offset=0.01)
    restored = schedules.get_schedule(keras.saving.serialize_keras_object(s))
    assert isinstance(restored, schedules.CosineSchedule)
    assert restored.get_config() == s.get_config()
    np.testing.assert_array_equal(restored.alpha_bar, s.alpha_bar)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: schedules.get_schedule("quadratic"), "Unknown schedule"),
        (lambda: schedules.LinearSchedule(1), "timesteps"),
        (lambda: schedules.LinearSchedule(10, beta_start=0.1, beta_end=0.01), "beta_start"),
        (lambda: schedules.get_schedule(schedules.LinearSchedule(100), timesteps=1000), "agree"),
    ],
)
def test_bad_schedule_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@settings(max_examples=30, deadline=None)
@given(
    timesteps=st.integers(2, 2000),
    beta_start=st.floats(1e-6, 1e-2),
    span=st.floats(0.0, 0.03),
)
def test_any_linear_schedule_gives_finite_monotone_tables(timesteps, beta_start, span):
    s = schedules.LinearSchedule(timesteps, beta_start=beta_start, beta_end=min(beta_start + span, 0.9))
    for table in (s.alpha_bar, s.posterior_variance, s.posterior_mean_coef1, s.posterior_mean_coef2):
        assert np.all(np.isfinite(table))
    assert np.all(np.diff(s.alpha_bar) < 0)
    assert np.all((s.posterior_variance >= 0) & (s.posterior_variance <= s.betas))


def test_a_schedule_that_underflows_alpha_bar_is_rejected():
    with pytest.raises(ValueError, match="smaller betas"):
        schedules.LinearSchedule(3000, beta_start=0.4, beta_end=0.9)
