"""How exactly a sampler reproduces Gaussian data when it is given the exact denoiser.

For data x_0 ~ N(μ, s²) and x_t = √ᾱ x_0 + √(1-ᾱ) ε, the best possible
denoiser is known in closed form:
E[x_0 | x_t] = μ + √ᾱ s² / (ᾱ s² + 1 − ᾱ) · (x_t − √ᾱ μ).
A sampler driven by it should end at N(μ, s²); what it ends at instead is its
discretisation error alone (no network error), which is what sets samplers
apart at 10-50 network evaluations. Narrow data (small s) is the hard case:
the last few noise levels, near σ ≈ s, carry all of the change.

Every deterministic sampler is then an affine map of the start noise,
x_out = a·x_T + b, so two start values give its output mean b and std |a|
exactly, without sampling noise; stochastic samplers are run on many values.
"""

from dataclasses import dataclass

import numpy as np

from keras_diffusion import samplers as samplers_module
from keras_diffusion.schedules import LinearSchedule, NoiseSchedule


@dataclass(frozen=True)
class GaussianSamplerError:
    """The relative errors of the sample std and mean (0.01 = 1 %), and the network evaluations spent."""

    std_error: float
    mean_error: float
    function_evaluations: int


def gaussian_denoiser(mean: float, std: float):
    """The exact `denoise(x, t, alpha_bar) -> (x̂_0, ε̂)` for data N(mean, std²), in NumPy."""

    def denoise(x, t, alpha_bar):
        x = np.asarray(x, np.float32)
        alpha_bar = np.asarray(alpha_bar, np.float32)
        signal = np.sqrt(alpha_bar)
        x0 = mean + signal * std**2 / (alpha_bar * std**2 + 1.0 - alpha_bar) * (x - signal * mean)
        return x0, (x - signal * x0) / np.sqrt(1.0 - alpha_bar)

    return denoise


def gaussian_sampler_error(
    sampler: "str | samplers_module.Sampler",
    steps: int,
    std: float,
    mean: float = 0.2,
    schedule: NoiseSchedule | None = None,
    num_values: int = 200_000,
    seed: int = 0,
) -> GaussianSamplerError:
    """Runs `sampler` with the exact denoiser of N(mean, std²) data and returns its errors.

    The sampler's own loop, noise levels and update rules run on float32
    NumPy values (as in a model); the start is x_T ~ N(0, 1), as in `DiffusionModel.generate`.

    Args:
        sampler: a sampler name or instance (`keras_diffusion.samplers`).
        steps: the sampler's `steps`.
        std: the data std s in the model's space (pixels in [-1, 1]).
        mean: the data mean μ.
        schedule: default `LinearSchedule(1000)`.
        num_values: scalar samples for a stochastic sampler (a deterministic
            one needs two and is exact).
        seed: the noise of a stochastic sampler.

    Returns:
        A `GaussianSamplerError`; std_error = std_out/s − 1, mean_error = mean_out/μ − 1.

    Example:
    >>> error = gaussian_sampler_error("dpmpp_3m", 20, std=0.3)
    >>> abs(error.std_error) < 0.01, error.function_evaluations
    (True, 20)
    """
    sampler = samplers_module.get_sampler(sampler)
    if sampler.adaptive:
        raise ValueError(f"{sampler!r} picks its own steps; give a fixed-step sampler.")
    if not std > 0 or mean == 0:
        raise ValueError(f"Need std > 0 and mean != 0 (errors are relative); got std={std}, mean={mean}.")
    schedule = schedule if schedule is not None else LinearSchedule(1000)
    denoise = gaussian_denoiser(mean, std)
    rng = np.random.default_rng(seed)
    deterministic = sampler.noise_draws == 0
    start = (np.array([0.0, 1.0]) if deterministic else rng.standard_normal(num_values)).astype(np.float32)

    def step_function(x, state, row, noise):
        x_next, state = sampler.step(denoise, x, state, sampler.named(row), noise)
        return np.asarray(x_next, np.float32), tuple(np.asarray(value, np.float32) for value in state)

    def draw_noise(count):
        return rng.standard_normal((count,) + start.shape).astype(np.float32) if count else None

    out = np.asarray(sampler.run(step_function, start, schedule, steps, draw_noise), np.float64)
    out_mean, out_std = (out[0], abs(out[1] - out[0])) if deterministic else (out.mean(), out.std())
    return GaussianSamplerError(float(out_std / std - 1.0), float(out_mean / mean - 1.0), sampler.function_evaluations(steps))
