import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_diffusion import predictions, samplers, schedules

SCHEDULE = schedules.LinearSchedule(1000)


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_ddim_sigma_with_eta_one_equals_ddpm_posterior_variance():
    ab, ab_prev = SCHEDULE.alpha_bar[1:], SCHEDULE.alpha_bar_prev[1:]
    sigma = to_numpy(samplers.ddim_sigma(ab, ab_prev, 1.0))
    np.testing.assert_allclose(sigma**2, SCHEDULE.posterior_variance[1:], rtol=1e-6)


@pytest.mark.parametrize("t, t_prev", [(999, 998), (500, 480), (20, 0)])
def test_ddim_step_with_eta_one_equals_the_ddpm_ancestral_step(t, t_prev):
    rng = np.random.default_rng(t)
    x_t, x0, noise = (rng.standard_normal((4, 3)) for _ in range(3))
    ab_t, ab_prev = SCHEDULE.alpha_bar[t], SCHEDULE.alpha_bar[t_prev]
    eps = (x_t - np.sqrt(ab_t) * x0) / np.sqrt(1 - ab_t)
    ddim = to_numpy(samplers.ddim_step(x_t, x0, eps, ab_t, ab_prev, noise, eta=1.0))
    ddpm = to_numpy(samplers.ddpm_step(x_t, x0, eps, ab_t, ab_prev, noise))
    np.testing.assert_allclose(ddim, ddpm, rtol=1e-6, atol=1e-6)


def test_ddpm_step_uses_the_schedule_posterior_mean_and_variance():
    t = 300
    rng = np.random.default_rng(1)
    x_t, x0, noise = (rng.standard_normal(5) for _ in range(3))
    out = to_numpy(samplers.ddpm_step(x_t, x0, None, SCHEDULE.alpha_bar[t], SCHEDULE.alpha_bar[t - 1], noise))
    mean = SCHEDULE.posterior_mean_coef1[t] * x0 + SCHEDULE.posterior_mean_coef2[t] * x_t
    np.testing.assert_allclose(out, mean + np.sqrt(SCHEDULE.posterior_variance[t]) * noise, rtol=1e-6)


def test_deterministic_ddim_stays_on_the_trajectory_of_an_exact_prediction():
    rng = np.random.default_rng(2)
    x0, eps = rng.standard_normal((2, 8))
    ab_t, ab_prev = SCHEDULE.alpha_bar[700], SCHEDULE.alpha_bar[300]
    x_t = np.sqrt(ab_t) * x0 + np.sqrt(1 - ab_t) * eps
    x_prev = to_numpy(samplers.ddim_step(x_t, x0, eps, ab_t, ab_prev, np.zeros(8), eta=0.0))
    np.testing.assert_allclose(x_prev, np.sqrt(ab_prev) * x0 + np.sqrt(1 - ab_prev) * eps, rtol=1e-6)


def test_last_step_returns_the_predicted_clean_image():
    rng = np.random.default_rng(3)
    x_t, x0, eps, noise = rng.standard_normal((4, 6)).astype("float32")
    ab_0, one = np.float32(SCHEDULE.alpha_bar[0]), np.float32(1.0)
    for step in (samplers.ddim_step, samplers.ddpm_step):
        np.testing.assert_allclose(to_numpy(step(x_t, x0, eps, ab_0, one, noise)), x0, rtol=1e-5, atol=1e-6)


def test_guidance_weight_zero_is_the_conditional_prediction_and_two_extrapolates():
    rng = np.random.default_rng(4)
    cond, uncond = rng.standard_normal((2, 10))
    np.testing.assert_allclose(to_numpy(samplers.classifier_free_guidance(cond, uncond, 0.0)), cond)
    np.testing.assert_allclose(to_numpy(samplers.classifier_free_guidance(cond, uncond, 2.0)), 3 * cond - 2 * uncond)


@pytest.mark.parametrize("spacing", samplers.SPACINGS)
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_timestep_sequences_are_distinct_decreasing_and_in_range(spacing, steps):
    sequence = samplers.timestep_sequence(1000, steps, spacing)
    assert len(sequence) == steps
    assert np.all(np.diff(sequence) < 0)
    assert 0 <= sequence.min() and sequence.max() <= 999


def test_full_sequence_visits_every_timestep():
    np.testing.assert_array_equal(samplers.timestep_sequence(1000, 1000), np.arange(999, -1, -1))


@pytest.mark.parametrize("steps", [0, 1001, 2.5, None])
def test_steps_outside_one_to_timesteps_are_rejected(steps):
    with pytest.raises(ValueError, match="steps"):
        samplers.timestep_sequence(1000, steps)


def test_unknown_sampler_and_spacing_are_rejected():
    with pytest.raises(ValueError, match="Unknown sampler"):
        samplers.get("euler_a")
    with pytest.raises(ValueError, match="spacing"):
        samplers.timestep_sequence(1000, 10, "random")


@pytest.mark.parametrize("prediction", predictions.PREDICTIONS)
def test_each_prediction_target_converts_back_to_x0_and_epsilon(prediction):
    rng = np.random.default_rng(5)
    x0, eps = rng.standard_normal((2, 16))
    signal, sigma = np.sqrt(0.3), np.sqrt(0.7)
    x_t = signal * x0 + sigma * eps
    target = predictions.training_target(prediction, x0, eps, signal, sigma)
    x0_hat, eps_hat = predictions.to_x0_and_epsilon(prediction, target, x_t, signal, sigma)
    np.testing.assert_allclose(to_numpy(x0_hat), x0, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(to_numpy(eps_hat), eps, rtol=1e-6, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(1, 999),
    gap=st.integers(1, 200),
    eta=st.floats(0.0, 1.0),
    sampler=st.sampled_from(sorted(samplers.SAMPLERS)),
)
def test_any_step_is_finite_and_shrinks_the_noise_level(t, gap, eta, sampler):
    t_prev = max(t - gap, 0)
    ab_t, ab_prev = SCHEDULE.alpha_bar[t], SCHEDULE.alpha_bar[t_prev]
    eps = np.ones((2, 3), "float32")
    x0 = np.zeros((2, 3), "float32")
    x_t = np.sqrt(ab_t) * x0 + np.sqrt(1 - ab_t) * eps
    out = to_numpy(samplers.get(sampler)(x_t, x0, eps, ab_t, ab_prev, np.zeros((2, 3)), eta))
    assert out.shape == (2, 3) and np.all(np.isfinite(out))
    # With no injected noise the remaining noise is at most √(1-ᾱ_{t'}) < √(1-ᾱ_t).
    assert np.all(np.abs(out) <= np.sqrt(1 - ab_prev) + 1e-6)
