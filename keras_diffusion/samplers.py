"""Reverse-process update rules, each a short pure function next to its equation.

A sampler step maps x_t to x_{t'} (t' < t, the previous timestep of the
chosen sub-sequence) given the model's estimates x̂_0 and ε̂ at x_t, the
cumulative products ᾱ_t, ᾱ_{t'} (ᾱ = 1 after the last step) and fresh
standard-normal noise z. Samplers know nothing of networks: the model turns
its output into (x̂_0, ε̂) with `keras_diffusion.predictions` and calls them.
"""

import numpy as np
from keras import ops

SPACINGS = ("leading", "trailing", "linspace")


def timestep_sequence(timesteps: int, steps: int, spacing: str = "leading") -> np.ndarray:
    """The decreasing sub-sequence of timesteps a sampler visits.

    Args:
        timesteps: T of the schedule.
        steps: how many network evaluations, 1 <= steps <= T.
        spacing: `"leading"` (0, k, 2k, ... with k = T // steps, as in DDIM),
            `"trailing"` (T-1, T-1-k, ...; starts at the noisiest step) or
            `"linspace"` (rounded linspace from 0 to T-1).

    Returns:
        int64 array of `steps` distinct timesteps in (T-1 .. 0), decreasing.

    Example:
    >>> timestep_sequence(1000, 4).tolist()
    [750, 500, 250, 0]
    """
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= timesteps:
        raise ValueError(
            f"`steps` must be an integer between 1 and the model's timesteps ({timesteps}); "
            f"received steps={steps!r}."
        )
    if spacing == "leading":
        sequence = np.arange(steps, dtype=np.int64) * (timesteps // steps)
    elif spacing == "trailing":
        sequence = np.round(np.arange(timesteps, 0, -timesteps / steps)).astype(np.int64)[::-1] - 1
    elif spacing == "linspace":
        sequence = np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int64)
    else:
        raise ValueError(f"Unknown timestep spacing {spacing!r}; use one of {SPACINGS}.")
    return sequence[::-1].copy()


def classifier_free_guidance(eps_conditional, eps_unconditional, guidance_scale):
    """ε̂ = (1 + w) ε(x, c) − w ε(x, ∅) (Ho & Salimans 2022; the thesis' w).

    w = 0 gives the conditional model; larger w trades diversity for fidelity.
    """
    return (1.0 + guidance_scale) * eps_conditional - guidance_scale * eps_unconditional


def ddim_sigma(alpha_bar_t, alpha_bar_prev, eta):
    """σ_t(η) = η √((1-ᾱ_{t'})/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_{t'}) (DDIM eq. 16, Song et al. 2021).

    η = 1 gives the DDPM posterior standard deviation, η = 0 a deterministic sampler.
    """
    return eta * ops.sqrt((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * (1.0 - alpha_bar_t / alpha_bar_prev))


def ddim_step(x_t, x0, eps, alpha_bar_t, alpha_bar_prev, noise, eta=0.0):
    """x_{t'} = √ᾱ_{t'} x̂_0 + √(1-ᾱ_{t'}-σ²) ε̂ + σ z (DDIM eq. 12; the thesis' eq. 19)."""
    sigma = ddim_sigma(alpha_bar_t, alpha_bar_prev, eta)
    direction = ops.sqrt(ops.maximum(1.0 - alpha_bar_prev - sigma**2, 0.0))
    return ops.sqrt(alpha_bar_prev) * x0 + direction * eps + sigma * noise


def ddpm_step(x_t, x0, eps, alpha_bar_t, alpha_bar_prev, noise, eta=None):
    """Ancestral step: x_{t'} ~ q(x_{t'} | x_t, x̂_0) (DDPM eq. 6-7; the thesis' eq. 12-13).

    With β' = 1 - ᾱ_t/ᾱ_{t'} (β_t itself for consecutive steps, the respaced β
    of Nichol & Dhariwal otherwise) the mean is
    √ᾱ_{t'} β'/(1-ᾱ_t) x̂_0 + √(1-β') (1-ᾱ_{t'})/(1-ᾱ_t) x_t and the variance
    β̃ = β' (1-ᾱ_{t'})/(1-ᾱ_t). `eps` and `eta` are unused (uniform signature).
    """
    beta = 1.0 - alpha_bar_t / alpha_bar_prev
    mean = (ops.sqrt(alpha_bar_prev) * beta * x0 + ops.sqrt(1.0 - beta) * (1.0 - alpha_bar_prev) * x_t) / (
        1.0 - alpha_bar_t
    )
    variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
    return mean + ops.sqrt(variance) * noise


SAMPLERS = {"ddpm": ddpm_step, "ddim": ddim_step}


def get(name: str):
    """The step function of a sampler by name (`"ddpm"` or `"ddim"`)."""
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; use one of {sorted(SAMPLERS)}.")
    return SAMPLERS[name]
