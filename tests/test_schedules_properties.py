"""Property tests (hypothesis) of the noise schedules: finite tables, shapes, monotone noise levels."""

import keras
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_diffusion import schedules

# Settings whose ᾱ_T stays far from float underflow (Σβ ≤ 80, ᾱ_T ≥ e^-80); see docs/errors.md.
linear_schedules = st.builds(
    lambda timesteps, beta_start, span: schedules.LinearSchedule(
        timesteps, beta_start=beta_start, beta_end=beta_start + span
    ),
    timesteps=st.integers(2, 2000),
    beta_start=st.floats(1e-5, 1e-2),
    span=st.floats(0.0, 0.03),
)
cosine_schedules = st.builds(
    schedules.CosineSchedule,
    timesteps=st.integers(2, 4000),
    offset=st.floats(0.0, 0.1),
    max_beta=st.floats(0.5, 0.999),
)
any_schedule = st.one_of(linear_schedules, cosine_schedules)
EXAMPLES = settings(max_examples=25, deadline=None)
FEW_EXAMPLES = settings(max_examples=10, deadline=None)  # keras.ops on new shapes compile per example on JAX


@EXAMPLES
@given(schedule=any_schedule)
def test_every_table_has_one_finite_entry_per_timestep(schedule):
    tables = {
        "betas": schedule.betas, "alphas": schedule.alphas, "alpha_bar": schedule.alpha_bar,
        "alpha_bar_prev": schedule.alpha_bar_prev, "posterior_variance": schedule.posterior_variance,
        "posterior_mean_coef1": schedule.posterior_mean_coef1,
        "posterior_mean_coef2": schedule.posterior_mean_coef2, "sigmas": schedule.sigmas,
    }  # fmt: skip
    for name, table in tables.items():
        assert table.shape == (schedule.timesteps,), name
        assert table.dtype == np.float64, name
        assert np.all(np.isfinite(table)), name
    assert np.all((schedule.betas > 0) & (schedule.betas < 1))


@EXAMPLES
@given(schedule=any_schedule)
def test_noise_levels_increase_and_the_signal_to_noise_ratio_falls_with_t(schedule):
    alpha_bar = schedule.alpha_bar
    assert 0 < alpha_bar[-1] and alpha_bar[0] < 1
    assert np.all(np.diff(alpha_bar) < 0)
    assert np.all(np.diff(schedule.sigmas) > 0)
    assert np.all(np.diff(alpha_bar / (1 - alpha_bar)) < 0)
    np.testing.assert_allclose(schedule.alpha_bar_prev[1:], alpha_bar[:-1], rtol=0)


@EXAMPLES
@given(schedule=any_schedule)
def test_the_posterior_variance_lies_between_zero_and_beta(schedule):
    # DDPM eq. 7: β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t) ∈ [0, β_t], and β̃_0 = 0.
    assert schedule.posterior_variance[0] == 0.0
    assert np.all(schedule.posterior_variance >= 0)
    assert np.all(schedule.posterior_variance <= schedule.betas * (1 + 1e-12))
    # The posterior mean coef1·x_0 + coef2·x_t is a non-negative combination of x_0 and x_t.
    assert np.all(schedule.posterior_mean_coef1 >= 0) and np.all(schedule.posterior_mean_coef2 >= 0)


@FEW_EXAMPLES
@given(
    schedule=any_schedule,
    batch=st.integers(1, 6),
    ndim=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_signal_and_noise_scales_broadcast_and_keep_unit_variance(schedule, batch, ndim, seed):
    t = np.random.default_rng(seed).integers(0, schedule.timesteps, batch)
    signal, sigma = schedule.signal_and_noise_scales(t, ndim)
    signal, sigma = keras.ops.convert_to_numpy(signal), keras.ops.convert_to_numpy(sigma)
    assert signal.shape == sigma.shape == (batch,) + (1,) * (ndim - 1)
    assert signal.dtype == sigma.dtype == np.float32
    np.testing.assert_allclose(signal**2 + sigma**2, 1.0, atol=1e-6)  # q(x_t|x_0) preserves unit variance
    np.testing.assert_allclose(signal.reshape(-1), np.sqrt(schedule.alpha_bar[t]), rtol=1e-6)


@FEW_EXAMPLES
@given(schedule=any_schedule, t=st.integers(0, 10**6), shape=st.lists(st.integers(1, 4), min_size=1, max_size=3))
def test_add_noise_without_noise_scales_the_data_by_the_signal_level(schedule, t, shape):
    t = t % schedule.timesteps
    x0 = np.linspace(-1, 1, 2 * int(np.prod(shape))).reshape((2, *shape)).astype("float32")
    x_t = keras.ops.convert_to_numpy(schedule.add_noise(x0, np.zeros_like(x0), np.array([t, t])))
    assert x_t.shape == x0.shape and x_t.dtype == np.float32
    np.testing.assert_allclose(x_t, np.sqrt(schedule.alpha_bar[t]) * x0, rtol=1e-6, atol=1e-7)


@EXAMPLES
@given(schedule=any_schedule, fraction=st.floats(0.0, 1.0))
def test_timestep_and_sigma_conversions_are_inverse_and_monotone(schedule, fraction):
    t = fraction * (schedule.timesteps - 1)
    sigma = schedule.sigma_from_timestep(t)
    assert np.isfinite(sigma) and sigma > 0
    np.testing.assert_allclose(schedule.timestep_from_sigma(sigma), t, rtol=1e-9, atol=1e-9)
    integer_steps = np.arange(schedule.timesteps)
    np.testing.assert_allclose(schedule.sigma_from_timestep(integer_steps), schedule.sigmas, rtol=1e-12)
    assert np.all(np.diff(schedule.timestep_from_sigma(schedule.sigmas)) > 0)


@settings(max_examples=10, deadline=None)
@given(schedule=any_schedule)
def test_a_schedule_round_trips_through_keras_serialization(schedule):
    restored = schedules.get_schedule(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule) and restored.get_config() == schedule.get_config()
    np.testing.assert_array_equal(restored.alpha_bar, schedule.alpha_bar)
