"""Samplers against a denoiser whose answer is known: Gaussian data and its exact ε-predictor."""

import keras
import numpy as np
import pytest

import keras_diffusion as kd

MEAN, STD = 0.1, 0.35  # of the data in the model's [-1, 1] space; few values reach the clip at ±1


class GaussianOptimalDenoiser(keras.layers.Layer):
    """E[ε | x_t] for x_0 ~ N(MEAN, STD²): √(1-ᾱ)/(ᾱ STD² + 1 - ᾱ) · (x_t − √ᾱ MEAN)."""

    def __init__(self, alpha_bar, **kwargs):
        super().__init__(**kwargs)
        self.alpha_bar = np.asarray(alpha_bar, "float32")

    def call(self, inputs):
        x, t = inputs[0], inputs[1]
        alpha_bar = keras.ops.reshape(keras.ops.take(self.alpha_bar, keras.ops.cast(t, "int32")), (-1, 1, 1, 1))
        scale = keras.ops.sqrt(1 - alpha_bar) / (alpha_bar * STD**2 + 1 - alpha_bar)
        return scale * (x - keras.ops.sqrt(alpha_bar) * MEAN)


def expected_std(alpha_bar, timesteps, eta):
    """The exact std after DDIM(η) with the exact predictor, from x_T ~ N(0, 1).

    With Gaussian data every step is affine: x_s = a·x_t + b + σ z, so Var_s = a² Var_t + σ².
    x̂_0 and ε̂ are affine in x_t with slopes √ᾱ_t STD²/v_t and √(1-ᾱ_t)/v_t, v_t = ᾱ_t STD² + 1 − ᾱ_t.
    Derived here independently of the library; DDPM is the η = 1 case.
    """
    variance = 1.0
    for i, t in enumerate(timesteps):
        ab_t = alpha_bar[t]
        ab_s = alpha_bar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0
        v_t = ab_t * STD**2 + 1 - ab_t
        sigma2 = eta**2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
        slope = np.sqrt(ab_s) * np.sqrt(ab_t) * STD**2 / v_t + np.sqrt(1 - ab_s - sigma2) * np.sqrt(1 - ab_t) / v_t
        variance = slope**2 * variance + sigma2
    return np.sqrt(variance)


@pytest.fixture(scope="module")
def analytic_model():
    schedule = kd.schedules.LinearSchedule(1000)
    return kd.DiffusionModel(GaussianOptimalDenoiser(schedule.alpha_bar), schedule=schedule, image_shape=(8, 8, 1))


def generate_in_model_space(model, **kwargs):
    return model.generate(256, seed=0, clip_denoised=False, **kwargs) * 2 - 1


@pytest.mark.parametrize(
    "sampler, steps, eta", [("ddim", 20, 0.0), ("ddim", 50, 0.0), ("ddim", 50, 1.0), ("ddpm", 100, 0.0)]
)
def test_samples_of_gaussian_data_have_the_mean_and_the_exact_std_of_the_discrete_sampler(
    analytic_model, sampler, steps, eta
):
    data = generate_in_model_space(analytic_model, sampler=sampler, steps=steps, eta=eta)
    timesteps = kd.samplers.timestep_sequence(1000, steps)
    effective_eta = 1.0 if sampler == "ddpm" else eta
    assert data.mean() == pytest.approx(MEAN, abs=0.01)
    assert data.std() == pytest.approx(expected_std(analytic_model.schedule.alpha_bar, timesteps, effective_eta), rel=0.02)


def test_the_full_ddpm_chain_recovers_the_data_distribution(analytic_model):
    data = generate_in_model_space(analytic_model, sampler="ddpm", steps=1000)
    assert data.mean() == pytest.approx(MEAN, abs=0.01)
    assert data.std() == pytest.approx(STD, rel=0.03)
