"""Noise schedules: the numbers of the forward process q(x_t | x_0).

A schedule fixes β_1..β_T and everything derived from them (DDPM, Ho et al.
2020, eq. 4 and 7; the thesis' eq. 9-11). All tables are computed once in
float64 NumPy and cast when they enter a graph, so ᾱ_t near 0 or 1 keeps its
precision. Index `t` runs over 0..T-1 (the paper's t = 1..T).

The levels a sampler visits are spaced here too (`noise_levels`: DDIM's
`timestep_sequence`, Karras' and the log-SNR σ spacings), since they are a
function of the schedule alone.
"""

import math

import keras
import numpy as np
from keras import ops


class NoiseSchedule:
    """Base class: a variance schedule β_t and the tables derived from it.

    Subclasses implement `_betas()`; every other table follows from it.

    Args:
        timesteps: the number of diffusion steps T.

    Attributes (float64 NumPy arrays of length T):
        betas: β_t.
        alphas: α_t = 1 - β_t.
        alpha_bar: ᾱ_t = ∏_{s≤t} α_s, so q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I).
        alpha_bar_prev: ᾱ_{t-1}, with ᾱ_{-1} = 1.
        posterior_variance: β̃_t = β_t (1-ᾱ_{t-1}) / (1-ᾱ_t), the variance
            of q(x_{t-1} | x_t, x_0) (DDPM eq. 7).
        posterior_mean_coef1, posterior_mean_coef2: the posterior mean is
            `coef1 * x_0 + coef2 * x_t` (DDPM eq. 7).
    """

    def __init__(self, timesteps: int = 1000):
        if not isinstance(timesteps, (int, np.integer)) or isinstance(timesteps, bool) or timesteps < 2:
            raise ValueError(
                f"`timesteps` must be an integer >= 2; received timesteps={timesteps!r}."
            )
        self.timesteps = int(timesteps)
        betas = np.asarray(self._betas(), dtype=np.float64)
        if betas.shape != (self.timesteps,) or not np.all((betas > 0) & (betas < 1)):
            raise ValueError(
                f"{type(self).__name__} produced invalid betas: need {self.timesteps} values in (0, 1)."
            )
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = np.cumprod(self.alphas)
        if not self.alpha_bar[-1] >= np.finfo(np.float32).tiny:
            raise ValueError(
                f"{type(self).__name__} with {self.timesteps} steps drives ᾱ_T to {self.alpha_bar[-1]:.3g}, "
                "below float32 range: x_T keeps no signal and σ_T is infinite. Use fewer timesteps or "
                "smaller betas (DDPM: T=1000, β from 1e-4 to 0.02)."
            )
        self.alpha_bar_prev = np.concatenate([[1.0], self.alpha_bar[:-1]])
        self.posterior_variance = betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        self.posterior_mean_coef2 = (1.0 - self.alpha_bar_prev) * np.sqrt(self.alphas) / (1.0 - self.alpha_bar)

    def _betas(self) -> np.ndarray:
        raise NotImplementedError

    def add_noise(self, x0, noise, t):
        """Samples q(x_t | x_0) in closed form: √ᾱ_t x_0 + √(1-ᾱ_t) ε.

        Args:
            x0: clean data, shape (B, ...).
            noise: ε of the same shape, usually standard normal.
            t: integer timesteps in [0, T), shape (B,).

        Returns:
            x_t with the shape and dtype of `x0`.

        Example:
        >>> s = LinearSchedule()
        >>> x0 = keras.ops.ones((2, 4))
        >>> tuple(s.add_noise(x0, keras.ops.zeros((2, 4)), keras.ops.array([0, 999])).shape)
        (2, 4)
        """
        signal, sigma = self.signal_and_noise_scales(t, ops.ndim(x0), x0.dtype)
        return signal * x0 + sigma * noise

    def signal_and_noise_scales(self, t, ndim: int, dtype="float32"):
        """√ᾱ_t and √(1-ᾱ_t) for integer timesteps `t`, shaped to broadcast.

        Args:
            t: integer timesteps, shape (B,).
            ndim: rank of the data they will multiply.
            dtype: dtype of the result.

        Returns:
            Two tensors of shape (B, 1, ..., 1) with `ndim` axes.
        """
        t = ops.cast(t, "int32")
        shape = (-1,) + (1,) * (ndim - 1)
        signal = ops.take(ops.convert_to_tensor(np.sqrt(self.alpha_bar), dtype), t)
        sigma = ops.take(ops.convert_to_tensor(np.sqrt(1.0 - self.alpha_bar), dtype), t)
        return ops.reshape(signal, shape), ops.reshape(sigma, shape)

    @property
    def sigmas(self) -> np.ndarray:
        """σ_t = √((1-ᾱ_t)/ᾱ_t), the noise level of x_t/√ᾱ_t (the variance-exploding view of Karras et al. 2022)."""
        return np.sqrt((1.0 - self.alpha_bar) / self.alpha_bar)

    def timestep_from_sigma(self, sigma) -> np.ndarray:
        """The (fractional) timestep with noise level σ: log σ interpolated linearly between table entries.

        The inverse of `sigma_from_timestep` on [σ_0, σ_{T-1}]; values outside are clamped.
        Lets samplers visit noise levels between the trained timesteps (a
        denoiser taking a float `t` is evaluated at fractional t).
        """
        return np.interp(np.log(np.asarray(sigma, np.float64)), np.log(self.sigmas), np.arange(self.timesteps, dtype=np.float64))

    def sigma_from_timestep(self, t) -> np.ndarray:
        """σ at a (fractional) timestep in [0, T-1], interpolating log σ linearly."""
        return np.exp(np.interp(np.asarray(t, np.float64), np.arange(self.timesteps), np.log(self.sigmas)))

    def get_config(self) -> dict:
        return {"timesteps": self.timesteps}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_diffusion")
class LinearSchedule(NoiseSchedule):
    """β_t linear from `beta_start` to `beta_end` (DDPM; the thesis' choice).

    The end points are used as given for any T; the DDPM values (1e-4, 0.02)
    were chosen for T = 1000.

    Args:
        timesteps: number of steps T.
        beta_start: β_1.
        beta_end: β_T.

    Example:
    >>> s = LinearSchedule(timesteps=1000)
    >>> round(float(s.alpha_bar[-1]), 6)
    4e-05
    """

    def __init__(self, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if not 0 < beta_start <= beta_end < 1:
            raise ValueError(
                "Need 0 < beta_start <= beta_end < 1; received "
                f"beta_start={beta_start}, beta_end={beta_end}."
            )
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        super().__init__(timesteps)

    def _betas(self):
        return np.linspace(self.beta_start, self.beta_end, self.timesteps, dtype=np.float64)

    def get_config(self):
        return {**super().get_config(), "beta_start": self.beta_start, "beta_end": self.beta_end}


@keras.saving.register_keras_serializable(package="keras_diffusion")
class CosineSchedule(NoiseSchedule):
    """ᾱ_t = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2) (Nichol & Dhariwal 2021, eq. 17).

    β_t = 1 - ᾱ_t/ᾱ_{t-1} is clipped to `max_beta` to avoid the singularity at t = T.

    Args:
        timesteps: number of steps T.
        offset: the small offset s that keeps β_1 from being too small.
        max_beta: upper clip of β_t.

    Example:
    >>> s = CosineSchedule(timesteps=1000)
    >>> bool(s.alpha_bar[0] > 0.9999)
    True
    """

    def __init__(self, timesteps: int = 1000, offset: float = 0.008, max_beta: float = 0.999):
        if offset < 0 or not 0 < max_beta < 1:
            raise ValueError(
                f"Need offset >= 0 and 0 < max_beta < 1; received offset={offset}, max_beta={max_beta}."
            )
        self.offset = float(offset)
        self.max_beta = float(max_beta)
        super().__init__(timesteps)

    def _betas(self):
        steps = np.arange(self.timesteps + 1, dtype=np.float64) / self.timesteps
        f = np.cos((steps + self.offset) / (1 + self.offset) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, self.max_beta)

    def get_config(self):
        return {**super().get_config(), "offset": self.offset, "max_beta": self.max_beta}


_SCHEDULES = {"linear": LinearSchedule, "cosine": CosineSchedule}


# ------------------------------------------------------------------ spacing: the levels a sampler visits

SPACINGS = ("leading", "trailing", "linspace", "karras", "logsnr")

def timestep_sequence(timesteps: int, steps: int, spacing: str = "leading") -> np.ndarray:
    """The decreasing sub-sequence of integer timesteps a sampler visits.

    Args:
        timesteps: T of the schedule.
        steps: how many noise levels, 1 <= steps <= T.
        spacing: `"leading"` (0, k, 2k, ... with k = T // steps, as in DDIM),
            `"trailing"` (T-1, T-1-k, ...; starts at the noisiest step) or
            `"linspace"` (rounded linspace from 0 to T-1).

    Returns:
        int64 array of `steps` distinct timesteps in (T-1 .. 0), decreasing.

    Example:
    >>> timestep_sequence(1000, 4).tolist()
    [750, 500, 250, 0]
    """
    _check_steps(steps, timesteps)
    if spacing == "leading":
        sequence = np.arange(steps, dtype=np.int64) * (timesteps // steps)
    elif spacing == "trailing":
        sequence = np.round(np.arange(timesteps, 0, -timesteps / steps)).astype(np.int64)[::-1] - 1
    elif spacing == "linspace":
        sequence = np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int64)
    else:
        raise ValueError(f"Unknown timestep spacing {spacing!r}; use one of {SPACINGS}.")
    return sequence[::-1].copy()


def karras_sigmas(sigma_min: float, sigma_max: float, steps: int, rho: float = 7.0) -> np.ndarray:
    """σ_i = (σ_max^{1/ρ} + i/(n-1) (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0..n-1 (Karras et al. 2022, eq. 5).

    Returns:
        float64 array of `steps` decreasing noise levels from σ_max to σ_min.

    Example:
    >>> karras_sigmas(0.01, 80.0, 3).round(3).tolist()
    [80.0, 3.46, 0.01]
    """
    if steps == 1:
        return np.array([sigma_max], np.float64)
    ramp = np.linspace(0.0, 1.0, steps)
    inverse_rho_min, inverse_rho_max = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (inverse_rho_max + ramp * (inverse_rho_min - inverse_rho_max)) ** rho


def logsnr_sigmas(sigma_min: float, sigma_max: float, steps: int) -> np.ndarray:
    """σ_i = σ_max (σ_min/σ_max)^{i/(n-1)}: equal steps in λ = log(α/σ) = −log σ (Lu et al. 2022, "logSNR").

    Returns:
        float64 array of `steps` decreasing noise levels from σ_max to σ_min.

    Example:
    >>> logsnr_sigmas(0.01, 100.0, 3).round(6).tolist()
    [100.0, 1.0, 0.01]
    """
    if steps == 1:
        return np.array([sigma_max], np.float64)
    return np.exp(np.linspace(np.log(sigma_max), np.log(sigma_min), steps))


#: The highest σ that the `"karras"` and `"logsnr"` spacings visit (EDM's σ_max, Karras et al. 2022):
#: above it x_t is noise to within √ᾱ = 1/√(1 + σ²) ≈ 0.0125 of the data, so a level there costs a
#: network evaluation and gains nothing. It matters for the cosine schedule, whose σ_{T-1} is about
#: 20,000: uncapped, 4 of 10 log-SNR levels lie above σ = 100.
SIGMA_MAX = 80.0


def noise_levels(schedule: NoiseSchedule, steps: int, spacing: str = "leading") -> tuple[np.ndarray, np.ndarray]:
    """The noise levels a sampler visits: timesteps (float) and their ᾱ, from noisiest to cleanest.

    Args:
        schedule: the model's `NoiseSchedule`.
        steps: how many levels (network evaluations for first-order samplers).
        spacing: one of `SPACINGS`; `"karras"` spaces σ = √((1-ᾱ)/ᾱ) as in
            Karras et al. (2022) between the schedule's σ_0 and
            min(σ_{T-1}, `SIGMA_MAX`); `"logsnr"` spaces log σ evenly over
            the same range (equal steps h in the log-SNR λ = −log σ,
            DPM-Solver's "logSNR" spacing). Both give fractional timesteps.

    Returns:
        (t, alpha_bar), float64 arrays of length `steps`.

    Example:
    >>> t, alpha_bar = noise_levels(LinearSchedule(1000), 4)
    >>> t.tolist()
    [750.0, 500.0, 250.0, 0.0]
    """
    if spacing in ("karras", "logsnr"):
        _check_steps(steps, schedule.timesteps)
        sigma_min, sigma_max = schedule.sigmas[0], min(schedule.sigmas[-1], SIGMA_MAX)
        if spacing == "karras":
            sigmas = karras_sigmas(sigma_min, sigma_max, steps)
        else:
            sigmas = logsnr_sigmas(sigma_min, sigma_max, steps)
        return schedule.timestep_from_sigma(sigmas), 1.0 / (1.0 + sigmas**2)
    timesteps = timestep_sequence(schedule.timesteps, steps, spacing)
    return timesteps.astype(np.float64), schedule.alpha_bar[timesteps]


def _check_steps(steps, timesteps):
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or not 1 <= steps <= timesteps:
        raise ValueError(
            f"`steps` must be an integer between 1 and the model's timesteps ({timesteps}); received steps={steps!r}."
        )


def get_schedule(identifier, timesteps: int | None = None) -> NoiseSchedule:
    """Resolves a schedule from a name, a config dict or an instance.

    Args:
        identifier: `"linear"`, `"cosine"`, a `NoiseSchedule`, or a dict from
            `keras.saving.serialize_keras_object(schedule)`.
        timesteps: T for a schedule given by name; must agree with an
            instance's T when both are given.

    Returns:
        A `NoiseSchedule`.

    Example:
    >>> get_schedule("cosine", timesteps=500).timesteps
    500
    """
    if isinstance(identifier, NoiseSchedule):
        schedule = identifier
    elif isinstance(identifier, dict):
        schedule = keras.saving.deserialize_keras_object(identifier)
    elif isinstance(identifier, str) and identifier in _SCHEDULES:
        return _SCHEDULES[identifier](timesteps=1000 if timesteps is None else timesteps)
    else:
        raise ValueError(
            f"Unknown schedule {identifier!r}. Use one of {sorted(_SCHEDULES)} "
            "or a keras_diffusion.schedules.NoiseSchedule instance."
        )
    if timesteps is not None and schedule.timesteps != timesteps:
        raise ValueError(
            f"The schedule has {schedule.timesteps} timesteps but timesteps={timesteps} "
            "was given; pass one or make them agree."
        )
    return schedule
