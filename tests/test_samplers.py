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
    np.testing.assert_allclose(to_numpy(predictions.classifier_free_guidance(cond, uncond, 0.0)), cond)
    np.testing.assert_allclose(to_numpy(predictions.classifier_free_guidance(cond, uncond, 2.0)), 3 * cond - 2 * uncond)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 50, 1000])
def test_timestep_sequences_are_distinct_decreasing_and_in_range(spacing, steps):
    sequence = schedules.timestep_sequence(1000, steps, spacing)
    assert len(sequence) == steps
    assert np.all(np.diff(sequence) < 0)
    assert 0 <= sequence.min() and sequence.max() <= 999


def test_full_sequence_visits_every_timestep():
    np.testing.assert_array_equal(schedules.timestep_sequence(1000, 1000), np.arange(999, -1, -1))


@pytest.mark.parametrize("steps", [0, 1001, 2.5, None])
def test_steps_outside_one_to_timesteps_are_rejected(steps):
    with pytest.raises(ValueError, match="steps"):
        schedules.timestep_sequence(1000, steps)


def test_unknown_sampler_and_spacing_are_rejected():
    with pytest.raises(ValueError, match="Unknown sampler"):
        samplers.get_sampler("euler_a")
    with pytest.raises(ValueError, match="does not take \\['eta'\\]"):
        samplers.get_sampler("heun", eta=1.0)
    with pytest.raises(ValueError, match="spacing"):
        schedules.timestep_sequence(1000, 10, "random")


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


DETERMINISTIC_RULES = {
    "ddim": lambda x_t, x0, eps, ab_t, ab_prev: samplers.ddim_step(x_t, x0, eps, ab_t, ab_prev, 0.0, 0.0),
    "ddpm": lambda x_t, x0, eps, ab_t, ab_prev: samplers.ddpm_step(x_t, x0, eps, ab_t, ab_prev, 0.0),
    "euler": lambda x_t, x0, eps, ab_t, ab_prev: samplers.euler_step(x_t, eps, ab_t, ab_prev),
    "dpmpp_2m_first_order": lambda x_t, x0, eps, ab_t, ab_prev: samplers.dpmpp_2m_step(
        x_t, x0, x0, ab_t, ab_prev, 1.0, 0.0
    ),
}


@settings(max_examples=40, deadline=None)
@given(t=st.integers(1, 999), gap=st.integers(1, 200), rule=st.sampled_from(sorted(DETERMINISTIC_RULES)))
def test_any_noise_free_step_is_finite_and_shrinks_the_noise_level(t, gap, rule):
    t_prev = max(t - gap, 0)
    ab_t, ab_prev = SCHEDULE.alpha_bar[t], SCHEDULE.alpha_bar[t_prev]
    eps = np.ones((2, 3), "float32")
    x0 = np.zeros((2, 3), "float32")
    x_t = np.sqrt(ab_t) * x0 + np.sqrt(1 - ab_t) * eps
    out = to_numpy(DETERMINISTIC_RULES[rule](x_t, x0, eps, ab_t, ab_prev))
    assert out.shape == (2, 3) and np.all(np.isfinite(out))
    # With no injected noise the remaining noise is at most √(1-ᾱ_{t'}) < √(1-ᾱ_t).
    assert np.all(np.abs(out) <= np.sqrt(1 - ab_prev) + 1e-6)


@settings(max_examples=30, deadline=None)
@given(t=st.integers(1, 999), gap=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_euler_and_first_order_dpm_solver_equal_deterministic_ddim(t, gap, seed):
    """Three derivations of the same first-order step: DDIM η=0, Euler in σ, DPM-Solver++(1) (Lu et al. 2022, §4)."""
    rng = np.random.default_rng(seed)
    x_t, x0 = rng.standard_normal((2, 5))
    ab_t, ab_prev = SCHEDULE.alpha_bar[t], SCHEDULE.alpha_bar[max(t - gap, 0)]
    eps = (x_t - np.sqrt(ab_t) * x0) / np.sqrt(1 - ab_t)
    ddim = to_numpy(samplers.ddim_step(x_t, x0, eps, ab_t, ab_prev, 0.0, 0.0))
    np.testing.assert_allclose(to_numpy(samplers.euler_step(x_t, eps, ab_t, ab_prev)), ddim, rtol=1e-6, atol=1e-6)
    first_order = to_numpy(samplers.dpmpp_2m_step(x_t, x0, x0 * 0, ab_t, ab_prev, 1.0, 0.0))
    np.testing.assert_allclose(first_order, ddim, rtol=1e-6, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(t=st.integers(1, 999), gap=st.integers(1, 300), seed=st.integers(0, 2**16))
def test_first_order_sde_dpm_solver_is_the_ddpm_posterior_step(t, gap, seed):
    """SDE-DPM-Solver++(1) and DDPM's q(x_t' | x_t, x̂_0) (small variance): the same mean, noise scale and draw."""
    rng = np.random.default_rng(seed)
    x_t, x0, z = rng.standard_normal((3, 5))
    ab_t, ab_prev = SCHEDULE.alpha_bar[t], SCHEDULE.alpha_bar[max(t - gap, 0)]
    eps = (x_t - np.sqrt(ab_t) * x0) / np.sqrt(1 - ab_t)
    ddpm = to_numpy(samplers.ddpm_step(x_t, x0, eps, ab_t, ab_prev, z, "small"))
    one, zero = np.float64(1.0), np.float64(0.0)  # every argument float64, as the arrays (TF does not mix)
    sde = to_numpy(samplers.dpmpp_2m_sde_step(x_t, x0, x0 * 0, ab_t, ab_prev, one, zero, z))
    np.testing.assert_allclose(sde, ddpm, rtol=1e-5, atol=1e-5)
    # The last step, to the data, adds no noise and returns x̂_0.
    np.testing.assert_allclose(to_numpy(samplers.dpmpp_2m_sde_step(x_t, x0, x0 * 0, ab_t, one, one, zero, z)), x0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(t=st.integers(1, 999), gap=st.integers(1, 300), ratio=st.floats(0.3, 3.0), seed=st.integers(0, 2**16))
def test_sde_dpm_solver_with_vanishing_eta_is_the_ode_solver(t, gap, ratio, seed):
    """η → 0 removes the noise and turns the SDE step into DPM-Solver++(2M), the second-order term included."""
    rng = np.random.default_rng(seed)
    x_t, x0, x0_previous, z = rng.standard_normal((4, 5))
    ab_t, ab_next = SCHEDULE.alpha_bar[t], SCHEDULE.alpha_bar[max(t - gap, 0)]
    ratio, one = np.float64(ratio), np.float64(1.0)
    ode = to_numpy(samplers.dpmpp_2m_step(x_t, x0, x0_previous, ab_t, ab_next, ratio, one))
    sde = to_numpy(samplers.dpmpp_2m_sde_step(x_t, x0, x0_previous, ab_t, ab_next, ratio, one, z, eta=1e-12))
    np.testing.assert_allclose(sde, ode, rtol=1e-5, atol=1e-5)
    # The last step still returns D = x̂_0 + its correction, without noise, whatever η.
    last = to_numpy(samplers.dpmpp_2m_sde_step(x_t, x0, x0_previous, ab_t, one, ratio, np.float64(0.0), z, eta=0.3))
    np.testing.assert_allclose(last, x0, atol=1e-6)


def test_the_sde_dpm_solver_keeps_its_settings_in_its_config_and_refuses_bad_ones():
    sampler = samplers.get_sampler("dpmpp_2m_sde", eta=0.25, noise_sigma_min=0.5)
    assert sampler.get_config() == {"spacing": "logsnr", "eta": 0.25, "noise_sigma_min": 0.5}
    assert sampler.cache_key() != samplers.get_sampler("dpmpp_2m_sde", eta=0.25).cache_key()  # compiled separately
    for eta in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="eta"):
            samplers.get_sampler("dpmpp_2m_sde", eta=eta)
    for sigma in (-1.0, float("inf")):
        with pytest.raises(ValueError, match="noise_sigma_min"):
            samplers.get_sampler("dpmpp_2m_sde", noise_sigma_min=sigma)


def test_the_sde_dpm_solver_adds_noise_only_above_noise_sigma_min():
    """The per-step η column: η above the threshold, 0 (a DPM-Solver++(2M) step) at or below it."""
    sampler = samplers.get_sampler("dpmpp_2m_sde", eta=0.5, noise_sigma_min=1.0)
    table = sampler.parameters(SCHEDULE, 12)
    sigma = np.sqrt((1 - table[:, 1]) / table[:, 1])
    eta = table[:, sampler.columns.index("eta")]
    assert sigma.max() > 1.0 > sigma.min()
    np.testing.assert_array_equal(eta, np.where(sigma > 1.0, 0.5, 0.0))
    # With the threshold at 0 every step is stochastic, and the ODE solver's steps are what η = 0 gives.
    assert np.all(samplers.get_sampler("dpmpp_2m_sde", noise_sigma_min=0.0).parameters(SCHEDULE, 12)[:, -1] == 1.0)
    # The default stops the noise at σ = 0.3.
    default = samplers.get_sampler("dpmpp_2m_sde").parameters(SCHEDULE, 12)
    default_sigma = np.sqrt((1 - default[:, 1]) / default[:, 1])
    np.testing.assert_array_equal(default[:, -1], np.where(default_sigma > 0.3, 1.0, 0.0))
    assert 0 < np.sum(default[:, -1] == 0) < 12
    ode_table = samplers.get_sampler("dpmpp_2m").parameters(SCHEDULE, 12)
    np.testing.assert_array_equal(table[:, :-1], ode_table)


def dpm_solver_local_error(h, second_order):
    """One step of DPM-Solver++ on x̂_0(λ) = a + bλ, whose ODE solution is x(λ) = α(λ)(a + bλ − b) + Cσ(λ)."""
    a, b, constant = 0.3, -0.2, 0.7
    lam = np.array([-1.0, -1.0 + h, -1.0 + 2 * h])
    ab = 1 / (1 + np.exp(-2 * lam))  # λ = ½ log(ᾱ/(1-ᾱ))
    exact = np.sqrt(ab) * (a + b * lam - b) + constant * np.sqrt(1 - ab)
    step = samplers.dpmpp_2m_step(exact[1], a + b * lam[1], a + b * lam[0], ab[1], ab[2], 1.0, second_order)
    return abs(float(to_numpy(step)) - exact[2])


def test_dpm_solver_2m_has_third_order_local_error_and_first_order_has_second():
    """Halving h divides the local error by ≈8 for 2M (second-order method) and ≈4 for the first-order step."""
    assert dpm_solver_local_error(0.2, 1.0) / dpm_solver_local_error(0.1, 1.0) == pytest.approx(8, rel=0.15)
    assert dpm_solver_local_error(0.2, 0.0) / dpm_solver_local_error(0.1, 0.0) == pytest.approx(4, rel=0.15)


def test_langevin_corrector_has_the_requested_signal_to_noise_ratio():
    rng = np.random.default_rng(6)
    x, eps, noise = rng.standard_normal((3, 2, 50)).astype("float32")
    ab, alpha, snr = np.float32(0.5), np.float32(0.99), 0.16
    # Flipping ε flips the drift δ·score and keeps the noise term √(2δ)z (δ depends on |score| only).
    plus = to_numpy(samplers.langevin_corrector_step(x, eps, ab, alpha, noise, snr)) - x
    minus = to_numpy(samplers.langevin_corrector_step(x, -eps, ab, alpha, noise, snr)) - x
    drift, diffusion = (plus - minus) / 2, (plus + minus) / 2
    ratio = np.linalg.norm(drift, axis=1) / np.linalg.norm(diffusion, axis=1)
    np.testing.assert_allclose(ratio, snr * np.sqrt(alpha), rtol=1e-4)


def test_karras_levels_span_the_schedule_and_map_back_to_their_sigma():
    t, alpha_bar = schedules.noise_levels(SCHEDULE, 12, "karras")
    # From σ = SIGMA_MAX (80; this schedule's σ_{T-1} is 157) down to the schedule's first level.
    assert t[0] == pytest.approx(SCHEDULE.timestep_from_sigma(schedules.SIGMA_MAX)) and 900 < t[0] < 999
    assert t[-1] == pytest.approx(0, abs=1e-9)
    assert np.all(np.diff(t) < 0)
    sigma = np.sqrt((1 - alpha_bar) / alpha_bar)
    np.testing.assert_allclose(SCHEDULE.sigma_from_timestep(t), sigma, rtol=1e-9)
    # ρ = 7 spacing: equal steps in σ^{1/7}.
    np.testing.assert_allclose(np.diff(sigma ** (1 / 7)), np.diff(sigma ** (1 / 7))[0], rtol=1e-9)


@pytest.mark.parametrize("name", sorted(samplers.SAMPLERS))
def test_every_sampler_round_trips_through_its_config_and_counts_evaluations(name):
    sampler = samplers.get_sampler(name)
    rebuilt = type(sampler)(**sampler.get_config())
    assert rebuilt.cache_key() == sampler.cache_key()
    if name != "ode":
        table = sampler.parameters(SCHEDULE, 10)
        assert table.shape[0] == 10 and np.all(np.isfinite(table))
        assert np.all(np.diff(table[:, 1]) > 0) and table[-1, 2] == 1.0  # ᾱ increases towards the data
        assert sampler.function_evaluations(10) >= 10


def test_ddpm_large_variance_adds_beta_and_no_noise_at_the_last_step():
    ab_t, ab_prev = np.float32(SCHEDULE.alpha_bar[500]), np.float32(SCHEDULE.alpha_bar[499])
    x_t, x0 = np.zeros(4, "float32"), np.zeros(4, "float32")
    noise = np.ones(4, "float32")
    large = to_numpy(samplers.ddpm_step(x_t, x0, None, ab_t, ab_prev, noise, "large"))
    np.testing.assert_allclose(large, np.sqrt(SCHEDULE.betas[500]), rtol=1e-5)
    last = to_numpy(samplers.ddpm_step(x_t, x0, None, np.float32(SCHEDULE.alpha_bar[0]), np.float32(1), noise, "large"))
    np.testing.assert_allclose(last, 0.0, atol=1e-7)


@pytest.mark.parametrize("prediction", predictions.PREDICTIONS)
def test_min_snr_weight_turns_every_target_loss_into_the_clamped_x0_loss(prediction):
    """weight · ‖target error‖² = min(SNR, γ) · ‖x̂_0 error‖² for each parametrisation (Hang et al. 2023)."""
    rng = np.random.default_rng(7)
    x0, eps, x0_hat = rng.standard_normal((3, 32))
    for alpha_bar in (0.999, 0.5, 0.01):
        signal, sigma = np.sqrt(alpha_bar), np.sqrt(1 - alpha_bar)
        x_t = signal * x0 + sigma * eps
        eps_hat = (x_t - signal * x0_hat) / sigma
        target = predictions.training_target(prediction, x0, eps, signal, sigma)
        output = predictions.training_target(prediction, x0_hat, eps_hat, signal, sigma)
        snr = alpha_bar / (1 - alpha_bar)
        weight = float(to_numpy(predictions.min_snr_weight(prediction, np.float64(snr), 5.0)))
        weighted = weight * np.sum((target - output) ** 2)
        assert weighted == pytest.approx(min(snr, 5.0) * np.sum((x0 - x0_hat) ** 2), rel=1e-5)


@pytest.mark.parametrize("name", samplers.available())
def test_every_sampler_names_each_column_of_its_step_table(name):
    sampler = samplers.get_sampler(name)
    table = sampler.parameters(schedules.LinearSchedule(100), 6)
    assert table.shape == (6, len(sampler.columns)) and len(set(sampler.columns)) == len(sampler.columns)
    row = sampler.named(table[2])
    for index, column in enumerate(sampler.columns):
        assert getattr(row, column) == table[2, index] == row[index]
    with pytest.raises(AttributeError, match="rows hold"):
        row.no_such_value
