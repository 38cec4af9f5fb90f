"""Samplers against a denoiser whose answer is known: Gaussian data and its exact predictor.

For x_0 ~ N(MEAN, STD²) and x_t = √ᾱ x_0 + √(1-ᾱ) ε, E[x_0 | x_t] = MEAN + √ᾱ STD²/(ᾱ STD² + 1 − ᾱ) (x_t − √ᾱ MEAN).
The denoiser below returns that (as ε, x_0 or v) at any, also fractional, timestep, so every sampler
can be checked against the data distribution and against the exact probability-flow ODE.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_diffusion as kd

MEAN, STD = 0.1, 0.6


class GaussianOptimalDenoiser(keras.layers.Layer):
    """The exact prediction for Gaussian data; ᾱ(t) from log σ interpolated like `NoiseSchedule.sigma_from_timestep`."""

    def __init__(self, schedule, target="epsilon", mean=MEAN, std=STD, sigma_data=0.5, **kwargs):
        super().__init__(**kwargs)
        self.sigma_data = sigma_data
        self.log_sigma = np.log(schedule.sigmas).astype("float32")
        self.target, self.mean, self.std = target, mean, std

    def call(self, inputs):
        x, t = inputs[0], inputs[1]
        last = self.log_sigma.shape[0] - 1
        low = ops.clip(ops.floor(t), 0, last)
        fraction = t - low
        low_index, high_index = ops.cast(low, "int32"), ops.cast(ops.clip(low + 1, 0, last), "int32")
        log_sigma = ops.take(self.log_sigma, low_index) * (1 - fraction) + ops.take(self.log_sigma, high_index) * fraction
        alpha_bar = ops.reshape(1 / (1 + ops.exp(2 * log_sigma)), (-1, 1, 1, 1))
        signal, sigma = ops.sqrt(alpha_bar), ops.sqrt(1 - alpha_bar)
        scale = ops.sqrt(sigma**2 + self.sigma_data**2 * alpha_bar)  # EDM's c_in: its input is x_t / scale
        x = x * scale if self.target == "edm" else x
        x0 = self.mean + signal * self.std**2 / (alpha_bar * self.std**2 + 1 - alpha_bar) * (x - signal * self.mean)
        eps = (x - signal * x0) / sigma
        if self.target == "edm":
            return (sigma * x0 - self.sigma_data**2 * signal * eps) / (self.sigma_data * scale)
        return {"epsilon": eps, "x0": x0, "v": signal * eps - sigma * x0}[self.target]


def build(target="epsilon", std=STD):
    schedule = kd.schedules.LinearSchedule(1000)
    denoiser = GaussianOptimalDenoiser(schedule, target, std=std)
    return kd.DiffusionModel(denoiser, schedule=schedule, prediction=target, image_shape=(8, 8, 1), ema_decay=None)


@pytest.fixture(scope="module")
def analytic_model():
    return build()


def raw_samples(model, num_images=256, **kwargs):
    """The final x in the model's space, unclipped (`generate` itself clips images to [0, 1])."""
    final = {}
    model.generate(num_images, seed=0, clip_denoised=False, callback=lambda i, x: final.update(x=x), **kwargs)
    return final["x"]


def expected_ddim_std(alpha_bar, timesteps, eta, std):
    """The exact std after DDIM(η) with the exact predictor, from x_T ~ N(0, 1).

    With Gaussian data every step is affine: x_s = a·x_t + b + σ z, so Var_s = a² Var_t + σ².
    x̂_0 and ε̂ are affine in x_t with slopes √ᾱ_t std²/v_t and √(1-ᾱ_t)/v_t, v_t = ᾱ_t std² + 1 − ᾱ_t.
    Derived here independently of the library; DDPM is the η = 1 case.
    """
    variance = 1.0
    for i, t in enumerate(timesteps):
        ab_t = alpha_bar[t]
        ab_s = alpha_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
        v_t = ab_t * std**2 + 1 - ab_t
        sigma2 = eta**2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
        slope = np.sqrt(ab_s) * np.sqrt(ab_t) * std**2 / v_t + np.sqrt(1 - ab_s - sigma2) * np.sqrt(1 - ab_t) / v_t
        variance = slope**2 * variance + sigma2
    return np.sqrt(variance)


@pytest.mark.parametrize(
    "sampler, steps, eta", [("ddim", 20, 0.0), ("ddim", 50, 0.0), ("ddim", 50, 1.0), ("ddpm", 100, 0.0)]
)
def test_ddim_and_ddpm_samples_have_the_exact_std_of_the_discrete_recursion(analytic_model, sampler, steps, eta):
    settings = {"eta": eta} if sampler == "ddim" else {}
    data = raw_samples(analytic_model, sampler=kd.samplers.get_sampler(sampler, **settings), steps=steps)
    timesteps = kd.schedules.timestep_sequence(1000, steps)
    effective_eta = 1.0 if sampler == "ddpm" else eta
    assert data.mean() == pytest.approx(MEAN, abs=0.01)
    expected = expected_ddim_std(analytic_model.schedule.alpha_bar, timesteps, effective_eta, STD)
    assert data.std() == pytest.approx(expected, rel=0.02)


def test_the_full_ddpm_chain_recovers_the_data_distribution(analytic_model):
    data = raw_samples(analytic_model, sampler="ddpm", steps=1000)
    assert data.mean() == pytest.approx(MEAN, abs=0.01)
    assert data.std() == pytest.approx(STD, rel=0.03)


# Accuracy of each sampler at its usual budget on this (narrow-ish, STD 0.6) Gaussian, measured on
# 256 × 64 values; the ODE-based and SDE samplers are within 1.5 %, the few-step ones within 6 %.
ACCURACY = [
    ("ddim", 50, 0.06),
    ("euler", 50, 0.06),
    ("heun", 20, 0.06),
    ("dpmpp_2m", 20, 0.03),
    ("ddpm", 250, 0.04),
    ("sde", 250, 0.03),
    ("pc", 250, 0.03),
    ("ode", 1, 0.02),
]


@pytest.mark.parametrize("sampler, steps, tolerance", ACCURACY)
def test_every_sampler_reproduces_the_data_mean_and_std(analytic_model, sampler, steps, tolerance):
    data = raw_samples(analytic_model, sampler=sampler, steps=steps)
    assert data.mean() == pytest.approx(MEAN, abs=0.01)
    assert data.std() == pytest.approx(STD, rel=tolerance)


@pytest.fixture(scope="module")
def ode_solution(analytic_model):
    """The probability-flow ODE solved to tight tolerance from the same start noise, from σ_{T-1} to σ_0."""
    return raw_samples(analytic_model, sampler=kd.samplers.ProbabilityFlowODESampler(rtol=1e-6, atol=1e-6))


def distance_to_ode(model, reference, sampler, steps):
    """RMS distance to the ODE solution; Karras levels run from σ_{T-1} to σ_0 like the ODE solve."""
    return np.sqrt(np.mean((raw_samples(model, sampler=kd.samplers.get_sampler(sampler, spacing="karras"), steps=steps) - reference) ** 2))


def test_dpm_solver_at_20_steps_is_closer_to_the_ode_solution_than_ddim(analytic_model, ode_solution):
    dpm = distance_to_ode(analytic_model, ode_solution, "dpmpp_2m", 20)
    ddim = distance_to_ode(analytic_model, ode_solution, "ddim", 20)
    assert dpm < 0.75 * ddim


@pytest.mark.parametrize("sampler, order", [("ddim", 1), ("euler", 1), ("dpmpp_2m", 2), ("heun", 2)])
def test_deterministic_samplers_converge_to_the_ode_solution_at_their_order(
    analytic_model, ode_solution, sampler, order
):
    """Doubling the steps divides the global error by ≈2 (first order) or by ≥3 (second order)."""
    coarse = distance_to_ode(analytic_model, ode_solution, sampler, 40)
    fine = distance_to_ode(analytic_model, ode_solution, sampler, 80)
    if order == 1:
        assert coarse / fine == pytest.approx(2.0, rel=0.15)
    else:
        assert coarse / fine > 3.0


@pytest.mark.parametrize("target", ["x0", "v", "edm"])
def test_x0_v_and_edm_predictions_sample_what_the_epsilon_model_samples(analytic_model, target):
    for sampler in ("ddpm", "dpmpp_2m"):
        expected = raw_samples(analytic_model, num_images=16, sampler=sampler, steps=20)
        np.testing.assert_allclose(raw_samples(build(target), num_images=16, sampler=sampler, steps=20), expected, atol=2e-4)


def test_the_ode_sampler_reports_its_function_evaluations(analytic_model):
    sampler = kd.samplers.ProbabilityFlowODESampler()
    analytic_model.generate(4, sampler=sampler, seed=0)
    assert sampler.function_evaluations(None) > 10
