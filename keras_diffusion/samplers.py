"""Reverse-process samplers: update rules as short pure functions, and the objects that drive them.

Every sampler meets a model at one small interface. The model gives it a
function `denoise(x, t, alpha_bar) -> (x̂_0, ε̂)` (network, guidance and the
prediction-target conversion already applied) and the sampler moves x from
one noise level to the next. A noise level is a (possibly fractional)
timestep t and its ᾱ; x is always in the model's own scaling,
x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε. After the last level comes ᾱ = 1, the data.

The update rules are plain functions next to their equations (`ddim_step`,
`ddpm_step`, `euler_step`, `heun_step`, `dpmpp_2m_step`,
`euler_maruyama_step`, `langevin_corrector_step`). The `Sampler` classes
add what a loop needs: which levels to visit (`levels`), the state carried
between steps (DPM-Solver++ keeps the previous x̂_0) and how much fresh noise
a step draws. To write your own sampler, subclass `Sampler` and implement
`step`; pass the instance as `model.generate(sampler=...)`.
"""

import inspect
from collections.abc import Callable, Sequence

import numpy as np
from keras import ops

from keras_diffusion.schedules import (  # noqa: F401 - re-exported
    SPACINGS,
    NoiseSchedule,
    _check_steps,
    karras_sigmas,
    logsnr_sigmas,
    noise_levels,
    timestep_sequence,
)

from keras_diffusion.guidance import classifier_free_guidance  # noqa: F401 - the model's; imported for old code

# The noise levels a sampler visits are the schedule's business: `keras_diffusion.schedules`
# defines them; they are imported here, where samplers use them (and for older imports).


# ----------------------------------------------------------------------------- update rules


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


def ddpm_step(x_t, x0, eps, alpha_bar_t, alpha_bar_prev, noise, variance="small"):
    """Ancestral step: x_{t'} ~ q(x_{t'} | x_t, x̂_0) (DDPM eq. 6-7; the thesis' eq. 12-13).

    With β' = 1 - ᾱ_t/ᾱ_{t'} (β_t itself for consecutive steps, the respaced β
    of Nichol & Dhariwal otherwise) the mean is
    √ᾱ_{t'} β'/(1-ᾱ_t) x̂_0 + √(1-β') (1-ᾱ_{t'})/(1-ᾱ_t) x_t and the variance is
    β̃ = β' (1-ᾱ_{t'})/(1-ᾱ_t) (`variance="small"`) or β' (`"large"`, DDPM's
    other choice). The last step (ᾱ_{t'} = 1) adds no noise. `eps` is unused.
    """
    beta = 1.0 - alpha_bar_t / alpha_bar_prev
    mean = (ops.sqrt(alpha_bar_prev) * beta * x0 + ops.sqrt(1.0 - beta) * (1.0 - alpha_bar_prev) * x_t) / (
        1.0 - alpha_bar_t
    )
    if variance == "small":
        step_variance = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
    else:
        step_variance = ops.where(alpha_bar_prev < 1.0, beta, 0.0)
    return mean + ops.sqrt(step_variance) * noise


def euler_step(x_t, eps, alpha_bar_t, alpha_bar_next):
    """One Euler step of the probability-flow ODE dx̃/dσ = ε̂ in x̃ = x/√ᾱ (Karras et al. 2022, Alg. 1).

    x̃_{t'} = x̃_t + (σ_{t'} − σ_t) ε̂, σ = √((1-ᾱ)/ᾱ); returned in the model's scaling √ᾱ_{t'} x̃_{t'}.
    (With ε-prediction this is algebraically DDIM with η = 0 at the same levels.)
    """
    sigma, sigma_next = _sigma(alpha_bar_t), _sigma(alpha_bar_next)
    return ops.sqrt(alpha_bar_next) * (x_t / ops.sqrt(alpha_bar_t) + (sigma_next - sigma) * eps)


def heun_step(x_t, eps, eps_euler, alpha_bar_t, alpha_bar_next):
    """Heun's correction (Karras et al. 2022, Alg. 1 lines 9-11): the trapezoid of ε̂ at both ends.

    `eps_euler` is ε̂ evaluated at the Euler prediction `euler_step(...)`;
    x̃_{t'} = x̃_t + (σ_{t'} − σ_t) (ε̂ + ε̂')/2.
    """
    return euler_step(x_t, 0.5 * (eps + eps_euler), alpha_bar_t, alpha_bar_next)


def dpmpp_2m_step(x_t, x0, x0_previous, alpha_bar_t, alpha_bar_next, ratio, second_order):
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2) in the model's scaling.

    With α = √ᾱ, σ = √(1-ᾱ), λ = log(α/σ) and h = λ_{t'} − λ_t:
    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} (e^{−h} − 1) D, where D = x̂_0 (first
    order) or D = (1 + 1/(2r)) x̂_0 − 1/(2r) x̂_0^{prev} with r = h_prev/h
    (second order, from the previous step's x̂_0). `second_order` is 0 or 1.
    """
    alpha_t, sigma_t = ops.sqrt(alpha_bar_t), ops.sqrt(1.0 - alpha_bar_t)
    alpha_next, sigma_next = ops.sqrt(alpha_bar_next), ops.sqrt(1.0 - alpha_bar_next)
    exp_minus_h = (sigma_next * alpha_t) / (alpha_next * sigma_t)  # finite (0) at the data, where h = ∞
    correction = second_order * (x0 - x0_previous) / (2.0 * ratio)
    return (sigma_next / sigma_t) * x_t - alpha_next * (exp_minus_h - 1.0) * (x0 + correction)


def dpmpp_2m_sde_step(x_t, x0, x0_previous, alpha_bar_t, alpha_bar_next, ratio, second_order, noise, eta=1.0):
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, the solver of the reverse SDE; midpoint form) in the model's scaling.

    With α, σ, λ, h and D as in `dpmpp_2m_step`, each step solves the linear
    part of the reverse SDE exactly and adds the noise it injects:
    x_{t'} = (σ_{t'}/σ_t) e^{−h} x_t + α_{t'} (1 − e^{−2h}) D + σ_{t'} √(1 − e^{−2h}) z.
    First order (D = x̂_0) it is the DDPM posterior step q(x_{t'} | x_t, x̂_0);
    the last step (σ_{t'} = 0) returns D, adding no noise. With `eta` = η
    in [0, 1] a fraction of that noise (k-diffusion's η, the SDE whose noise
    is scaled by η between the sampling ODE and the reverse SDE):
    x_{t'} = (σ_{t'}/σ_t) e^{−ηh} x_t + α_{t'} (1 − e^{−(1+η)h}) D + σ_{t'} √(1 − e^{−2ηh}) z,
    which is `dpmpp_2m_step` at η = 0 and the line above at η = 1; D's
    correction keeps the midpoint form (x̂_0 − x̂_0^{prev})/(2r). `eta` may
    be a tensor (one value per step, as `DPMSolverPlusPlus2MSDESampler` uses it).
    """
    alpha_t, sigma_t = ops.sqrt(alpha_bar_t), ops.sqrt(1.0 - alpha_bar_t)
    alpha_next, sigma_next = ops.sqrt(alpha_bar_next), ops.sqrt(1.0 - alpha_bar_next)
    exp_minus_h = (sigma_next * alpha_t) / (alpha_next * sigma_t)
    exp_minus_eta_h = exp_minus_h**eta  # e^{−ηh}; at the data (h = ∞) 0, or 1 for η = 0 (0⁰), both exact there
    correction = second_order * (x0 - x0_previous) / (2.0 * ratio)
    return (
        (sigma_next / sigma_t) * exp_minus_eta_h * x_t
        + alpha_next * (1.0 - exp_minus_h * exp_minus_eta_h) * (x0 + correction)
        + sigma_next * ops.sqrt(ops.maximum(1.0 - exp_minus_eta_h**2, 0.0)) * noise
    )


def dpmpp_3m_step(x_t, x0, x0_previous, x0_before, alpha_bar_t, alpha_bar_next, h, r0, r1, order):
    """DPM-Solver++(3M) (Lu et al. 2022, multistep, third order) in the model's scaling.

    With φ₁ = e^{−h} − 1, φ₂ = φ₁/h + 1, φ₃ = φ₂/h − ½ and the divided
    differences of the last three x̂_0 (steps h, r₀h, r₁h back in λ):
    D₁⁰ = (x̂_0 − x̂_0^{prev})/r₀, D₁¹ = (x̂_0^{prev} − x̂_0^{before})/r₁,
    D₁ = D₁⁰ + r₀/(r₀+r₁) (D₁⁰ − D₁¹), D₂ = (D₁⁰ − D₁¹)/(r₀+r₁),
    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} φ₁ x̂_0 + α_{t'} (φ₂ D₁ − φ₃ D₂)   (order 3),
    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} φ₁ (x̂_0 + D₁⁰/2)                   (order 2, as `dpmpp_2m_step`),
    x_{t'} = (σ_{t'}/σ_t) x_t − α_{t'} φ₁ x̂_0                            (order 1, DDIM).
    `order` is 1, 2 or 3; h, r₀ and r₁ must be finite (any value where the order does not use them).
    """
    alpha_t, sigma_t = ops.sqrt(alpha_bar_t), ops.sqrt(1.0 - alpha_bar_t)
    alpha_next, sigma_next = ops.sqrt(alpha_bar_next), ops.sqrt(1.0 - alpha_bar_next)
    phi1 = (sigma_next * alpha_t) / (alpha_next * sigma_t) - 1.0  # e^{−h} − 1, finite (−1) at the data
    d1_recent = (x0 - x0_previous) / r0
    d1_older = (x0_previous - x0_before) / r1
    d1 = d1_recent + r0 / (r0 + r1) * (d1_recent - d1_older)
    d2 = (d1_recent - d1_older) / (r0 + r1)
    phi2 = phi1 / h + 1.0
    phi3 = phi2 / h - 0.5
    third = alpha_next * (phi2 * d1 - phi3 * d2)
    second = -alpha_next * phi1 * 0.5 * d1_recent
    first = (sigma_next / sigma_t) * x_t - alpha_next * phi1 * x0
    use_second = ops.cast(order == 2, x_t.dtype)
    use_third = ops.cast(order == 3, x_t.dtype)
    return first + use_second * second + use_third * third


def euler_maruyama_step(x_t, eps, alpha_bar_t, alpha_bar_next, noise):
    """Reverse-time Euler–Maruyama for the VP-SDE dx = −½β(s)x ds + √β(s) dw (Song et al. 2021, eq. 6).

    The reverse SDE is dx = [−½βx − β ∇log p_s(x)] ds + √β dw̄, with the score
    ∇log p_t(x) = −ε̂/√(1-ᾱ_t). Over a step, ∫β ds = log(ᾱ_{t'}/ᾱ_t) =: Δ, so
    x_{t'} = x_t + Δ (½ x_t + ∇log p) + √Δ z.
    """
    delta = ops.log(alpha_bar_next / alpha_bar_t)
    score = -eps / ops.sqrt(1.0 - alpha_bar_t)
    return x_t + delta * (0.5 * x_t + score) + ops.sqrt(delta) * noise


def langevin_corrector_step(x_t, eps, alpha_bar_t, alpha, noise, snr):
    """One Langevin MCMC step at a fixed noise level (Song et al. 2021, Alg. 5, VP form).

    x ← x + δ ∇log p_t(x) + √(2δ) z, with δ = 2α (snr ‖z‖ / ‖∇log p_t‖)² per
    sample, so the signal-to-noise ratio of the update is `snr`.
    """
    score = -eps / ops.sqrt(1.0 - alpha_bar_t)
    axes = tuple(range(1, len(x_t.shape)))
    noise_norm = ops.sqrt(ops.sum(ops.square(noise), axis=axes, keepdims=True))
    score_norm = ops.sqrt(ops.sum(ops.square(score), axis=axes, keepdims=True))
    step_size = 2.0 * alpha * ops.square(snr * noise_norm / ops.maximum(score_norm, 1e-12))
    return x_t + step_size * score + ops.sqrt(2.0 * step_size) * noise


def _sigma(alpha_bar):
    return ops.sqrt((1.0 - alpha_bar) / alpha_bar)


# ----------------------------------------------------------------------------- sampler objects

Denoise = Callable  # denoise(x, t, alpha_bar) -> (x0_hat, eps_hat)


class StepValues:
    """One row of `Sampler.parameters`, its values named by the sampler's `columns`.

    `step` reads `row.alpha_bar_t` rather than `row[1]`; indexing still works,
    for samplers written before the names.

    Example:
    >>> row = StepValues(np.array([999.0, 0.1, 0.2]), ("t", "alpha_bar_t", "alpha_bar_next"))
    >>> float(row.alpha_bar_next), float(row[0])
    (0.2, 999.0)
    """

    __slots__ = ("_values", "_columns")

    def __init__(self, values, columns: Sequence[str]):
        self._values = values
        self._columns = {name: index for index, name in enumerate(columns)}

    def __getitem__(self, index):
        return self._values[index]

    def __getattr__(self, name: str):
        columns = object.__getattribute__(self, "_columns")
        if name not in columns:
            raise AttributeError(f"No step value {name!r}; this sampler's rows hold {list(columns)}.")
        return object.__getattribute__(self, "_values")[columns[name]]


class Sampler:
    """Base class: drives an update rule over a sequence of noise levels.

    The model calls, once per generated batch, `parameters(schedule, steps)`
    for a float table with one row per step, `initial_state(x)`, and then
    `step(denoise, x, state, row, noise)` for each row. `step` is compiled
    (with the network) once per sampler configuration; everything that
    changes from step to step must be in `row`. Subclasses implement `step`
    and, when they need more than (t, ᾱ_t, ᾱ_next) per step, `parameters`.

    Attributes:
        name: short name used in messages.
        noise_draws: standard-normal tensors of x's shape that a step needs
            (stacked along a new first axis in `noise`).
        gaussian_only: True when the rule assumes Gaussian noise (score-based samplers).
        adaptive: True when the sampler picks its own evaluations and ignores
            `steps` (the ODE solver); `function_evaluations` is then known after a run.
        recommended_steps: the levels `steps=None` means (`default_steps`);
            None for the schedule's T, the whole chain.
        columns: the names of `parameters`' columns, read in `step` as `row.<name>`.

    Args:
        spacing: how the noise levels are spaced, one of `SPACINGS`.

    Example:
    >>> class Deterministic(Sampler):
    ...     def step(self, denoise, x, state, row, noise):
    ...         x0, eps = denoise(x, row.t, row.alpha_bar_t)
    ...         return ddim_step(x, x0, eps, row.alpha_bar_t, row.alpha_bar_next, noise=0.0), state
    >>> # model.generate(16, sampler=Deterministic(), steps=50)
    """

    name = "sampler"
    noise_draws = 0
    gaussian_only = False
    adaptive = False
    evaluations_per_step = 1
    recommended_steps: int | None = None  # None: the schedule's T (the full chain)
    columns: tuple[str, ...] = ("t", "alpha_bar_t", "alpha_bar_next")

    def __init__(self, spacing: str = "leading"):
        if spacing not in SPACINGS:
            raise ValueError(f"Unknown timestep spacing {spacing!r}; use one of {SPACINGS}.")
        self.spacing = spacing

    def parameters(self, schedule: NoiseSchedule, steps: int) -> np.ndarray:
        """One float row per step: (t, ᾱ_t, ᾱ_next), ᾱ_next = 1 after the last level.

        Returns:
            float64 array of shape (steps, 3) or wider in subclasses.
        """
        t, alpha_bar = noise_levels(schedule, steps, self.spacing)
        return np.stack([t, alpha_bar, np.append(alpha_bar[1:], 1.0)], axis=1)

    def default_steps(self, schedule: NoiseSchedule) -> int:
        """The levels `generate(steps=None)` visits: `recommended_steps`, or T (the whole chain) when None."""
        if self.recommended_steps is None:
            return int(schedule.timesteps)
        return min(int(self.recommended_steps), int(schedule.timesteps))

    def initial_state(self, x) -> tuple:
        """Tensors carried from step to step (none by default)."""
        return ()

    def step(self, denoise: Denoise, x, state: tuple, row: StepValues, noise):
        """Moves x one level down. Returns (x_next, state)."""
        raise NotImplementedError(f"{type(self).__name__} must implement step().")

    def named(self, row) -> StepValues:
        """`row` (one row of `parameters`) with its values named by `columns`."""
        return StepValues(row, self.columns)

    def function_evaluations(self, steps: int) -> int:
        """Network evaluations for `steps` levels (what a NFE axis counts)."""
        return self.evaluations_per_step * steps

    def run(self, step_function, x, schedule: NoiseSchedule, steps: int, draw_noise, callback=None):
        """The sampling loop: one compiled `step_function(x, state, row, noise)` call per row.

        Args:
            step_function: `step` compiled with the network bound.
            x: the starting noise, shape (B, ...).
            schedule: the model's schedule.
            steps: the number of levels.
            draw_noise: `draw_noise(n)` returns n noise tensors of x's shape
                stacked on a new first axis, or None for n = 0.
            callback: optional `callback(index, x)` after each step.

        Returns:
            The final x (the model's data space).
        """
        state = self.initial_state(x)
        for index, row in enumerate(self.parameters(schedule, steps).astype(np.float32)):
            x, state = step_function(x, state, row, draw_noise(self.noise_draws))
            if callback is not None:
                callback(index, x)
        return x

    def get_config(self) -> dict:
        return {"spacing": self.spacing}

    def cache_key(self) -> tuple:
        """Identifies the compiled step function: samplers with equal keys share one."""
        return (type(self).__qualname__,) + tuple(sorted((k, repr(v)) for k, v in self.get_config().items()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class DDPMSampler(Sampler):
    """Ancestral sampling, `ddpm_step` (DDPM; respaced when steps < T).

    Args:
        variance: `"small"` (posterior β̃, the default) or `"large"` (β).
        spacing: see `Sampler`.
    """

    name = "ddpm"
    noise_draws = 1  # steps=None: all T steps, the DDPM chain itself (leading spacing then visits every t)

    def __init__(self, variance: str = "small", spacing: str = "leading"):
        super().__init__(spacing)
        if variance not in ("small", "large"):
            raise ValueError(f"`variance` must be 'small' or 'large'; received {variance!r}.")
        self.variance = variance

    def step(self, denoise, x, state, row, noise):
        t, alpha_bar_t, alpha_bar_next = row.t, row.alpha_bar_t, row.alpha_bar_next
        x0, eps = denoise(x, t, alpha_bar_t)
        return ddpm_step(x, x0, eps, alpha_bar_t, alpha_bar_next, noise[0], self.variance), state

    def get_config(self):
        return {**super().get_config(), "variance": self.variance}


class DDIMSampler(Sampler):
    """DDIM, `ddim_step` with η (0: deterministic; 1: the DDPM posterior noise).

    Args:
        eta: η >= 0.
        spacing: default `"logsnr"`; at 50 steps it loses 5 % of the std of
            narrow Gaussian data where DDIM's usual `"leading"` loses 22 %
            (docs/benchmarks.md).
    """

    name = "ddim"
    recommended_steps = 50

    def __init__(self, eta: float = 0.0, spacing: str = "logsnr"):
        super().__init__(spacing)
        if not np.isfinite(eta) or eta < 0:
            raise ValueError(f"`eta` must be a finite number >= 0; received eta={eta!r}.")
        self.eta = float(eta)
        self.noise_draws = 1 if self.eta > 0 else 0

    def step(self, denoise, x, state, row, noise):
        t, alpha_bar_t, alpha_bar_next = row.t, row.alpha_bar_t, row.alpha_bar_next
        x0, eps = denoise(x, t, alpha_bar_t)
        z = noise[0] if self.noise_draws else 0.0
        return ddim_step(x, x0, eps, alpha_bar_t, alpha_bar_next, z, self.eta), state

    def get_config(self):
        return {**super().get_config(), "eta": self.eta}


class EulerSampler(Sampler):
    """Euler steps of the probability-flow ODE (`euler_step`).

    Args:
        spacing: default `"logsnr"` (more accurate here than `"karras"`).
    """

    name = "euler"
    recommended_steps = 50

    def __init__(self, spacing: str = "logsnr"):
        super().__init__(spacing)

    def step(self, denoise, x, state, row, noise):
        t, alpha_bar_t, alpha_bar_next = row.t, row.alpha_bar_t, row.alpha_bar_next
        _, eps = denoise(x, t, alpha_bar_t)
        return euler_step(x, eps, alpha_bar_t, alpha_bar_next), state


class HeunSampler(Sampler):
    """Heun's second-order method (Karras et al. 2022, Alg. 1; `heun_step`).

    Two network evaluations per step except the last (to the data), which is
    an Euler step: 2·steps − 1 in all, as Karras et al. count them. (The
    compiled step also makes the second call at the last step and discards
    it, so the compute is 2·steps evaluations.)

    Args:
        spacing: default `"logsnr"` (more accurate here than `"karras"`).
    """

    name = "heun"
    columns = Sampler.columns + ("t_next",)
    evaluations_per_step = 2
    recommended_steps = 25

    def __init__(self, spacing: str = "logsnr"):
        super().__init__(spacing)

    def parameters(self, schedule, steps):
        rows = super().parameters(schedule, steps)
        t_next = np.append(rows[1:, 0], 0.0)  # unused at the last row, where the step is Euler
        return np.concatenate([rows, t_next[:, None]], axis=1)

    def step(self, denoise, x, state, row, noise):
        t, alpha_bar_t, alpha_bar_next, t_next = row.t, row.alpha_bar_t, row.alpha_bar_next, row.t_next
        _, eps = denoise(x, t, alpha_bar_t)
        x_euler = euler_step(x, eps, alpha_bar_t, alpha_bar_next)
        # The last step (ᾱ_next = 1) stays Euler: evaluate the correction at a harmless
        # level and discard it (an ops.where keeps one compiled function for all steps).
        last = alpha_bar_next >= 1.0
        safe_alpha_bar = ops.where(last, alpha_bar_t, alpha_bar_next)
        _, eps_euler = denoise(ops.where(last, x, x_euler), ops.where(last, t, t_next), safe_alpha_bar)
        return ops.where(last, x_euler, heun_step(x, eps, eps_euler, alpha_bar_t, alpha_bar_next)), state

    def function_evaluations(self, steps):
        return 2 * steps - 1


class DPMSolverPlusPlus2MSampler(Sampler):
    """DPM-Solver++(2M), `dpmpp_2m_step`: second order from the previous x̂_0, one evaluation per step.

    The first step and the last (to the data) are first order, as in Lu et al. (2022).

    Args:
        spacing: default `"logsnr"` (equal steps in λ, where the solver's
            error is spread evenly; the most accurate spacing for it, see
            docs/benchmarks.md).
    """

    name = "dpmpp_2m"
    columns = Sampler.columns + ("ratio", "second_order")
    recommended_steps = 20

    def __init__(self, spacing: str = "logsnr"):
        super().__init__(spacing)

    def parameters(self, schedule, steps):
        rows = super().parameters(schedule, steps)
        alpha_bar, alpha_bar_next = rows[:, 1], rows[:, 2]
        log_snr = 0.5 * np.log(alpha_bar / (1.0 - alpha_bar))  # λ at each visited level
        with np.errstate(divide="ignore"):
            log_snr_next = 0.5 * np.log(alpha_bar_next / (1.0 - alpha_bar_next))
        h = log_snr_next - log_snr
        ratio = np.ones(steps)
        ratio[1:] = h[:-1] / h[1:]
        second_order = np.ones(steps)
        second_order[0] = 0.0
        second_order[~np.isfinite(h)] = 0.0  # the last step, to the data
        ratio[second_order == 0] = 1.0
        return np.concatenate([rows, ratio[:, None], second_order[:, None]], axis=1)

    def initial_state(self, x):
        return (ops.zeros_like(x),)

    def step(self, denoise, x, state, row, noise):
        t, alpha_bar_t, alpha_bar_next = row.t, row.alpha_bar_t, row.alpha_bar_next
        ratio, second_order = row.ratio, row.second_order
        x0, _ = denoise(x, t, alpha_bar_t)
        x_next = dpmpp_2m_step(x, x0, state[0], alpha_bar_t, alpha_bar_next, ratio, second_order)
        return x_next, (x0,)


# σ below which `"dpmpp_2m_sde"` adds no noise by default: on the converged MNIST model FID 9.33 / 9.88 at
# 10 / 20 steps against 9.42 / 9.89 with noise at every level (N = 2048), and on Gaussian data of std 0.1-0.6
# a std error within 0.8 % at 15-25 steps against up to 4.1 % (docs/benchmarks.md, 2026-12-02).
DEFAULT_NOISE_SIGMA_MIN = 0.3


class DPMSolverPlusPlus2MSDESampler(DPMSolverPlusPlus2MSampler):
    """SDE-DPM-Solver++(2M), `dpmpp_2m_sde_step`: the 2M multistep rule on the reverse SDE.

    The recommended sampler (`RECOMMENDED`, the default of
    `DiffusionModel.generate`). Like `"ddpm"` it injects fresh noise at every
    step down to σ = 0.3, which washes out part of a trained network's error,
    so it scored the best FID per network evaluation on a trained model; the
    steps below σ = 0.3 are noise-free DPM-Solver++(2M) steps, where the noise
    bought no FID and cost accuracy. On Gaussian data it reproduces the
    data's std within 1 % at 15-25 evaluations (with noise down to σ = 0:
    within 2.9 % at 20). Both measured in docs/benchmarks.md. One evaluation
    per step; the first step and the last (to the data) are first order.

    Args:
        eta: the fraction η of the reverse SDE's noise, in (0, 1]: 1 (the
            default) is the reverse SDE; smaller values move towards the
            sampling ODE (`"dpmpp_2m"`, η = 0), trading the noise's
            washing-out of the network's error for a smaller discretisation
            error (docs/benchmarks.md).
        noise_sigma_min: levels at or below this σ = √((1-ᾱ)/ᾱ) take
            noise-free DPM-Solver++(2M) steps (η = 0 there; EDM's S_tmin,
            Karras et al. 2022, Alg. 2). Default 0.3 (measured:
            `DEFAULT_NOISE_SIGMA_MIN`); 0 adds noise at every level.
        spacing: default `"logsnr"`.
    """

    name = "dpmpp_2m_sde"
    noise_draws = 1
    columns = DPMSolverPlusPlus2MSampler.columns + ("eta",)

    def __init__(self, eta: float = 1.0, noise_sigma_min: float = DEFAULT_NOISE_SIGMA_MIN, spacing: str = "logsnr"):
        if not (np.isfinite(eta) and 0.0 < eta <= 1.0):
            raise ValueError(f"`eta` of 'dpmpp_2m_sde' must be in (0, 1] (η = 0 is 'dpmpp_2m'); received {eta!r}.")
        if not (np.isfinite(noise_sigma_min) and noise_sigma_min >= 0.0):
            raise ValueError(f"`noise_sigma_min` must be a finite σ >= 0; received {noise_sigma_min!r}.")
        super().__init__(spacing)
        self.eta = float(eta)
        self.noise_sigma_min = float(noise_sigma_min)

    def parameters(self, schedule, steps):
        rows = super().parameters(schedule, steps)
        sigma = np.sqrt((1.0 - rows[:, 1]) / rows[:, 1])  # σ of the level each step leaves
        return np.concatenate([rows, np.where(sigma > self.noise_sigma_min, self.eta, 0.0)[:, None]], axis=1)

    def step(self, denoise, x, state, row, noise):
        t, alpha_bar_t, alpha_bar_next = row.t, row.alpha_bar_t, row.alpha_bar_next
        ratio, second_order = row.ratio, row.second_order
        x0, _ = denoise(x, t, alpha_bar_t)
        x_next = dpmpp_2m_sde_step(
            x, x0, state[0], alpha_bar_t, alpha_bar_next, ratio, second_order, noise[0], row.eta
        )  # fmt: skip
        return x_next, (x0,)

    def get_config(self):
        return {**super().get_config(), "eta": self.eta, "noise_sigma_min": self.noise_sigma_min}


class DPMSolverPlusPlus3MSampler(Sampler):
    """DPM-Solver++(3M), `dpmpp_3m_step`: third order from the last two x̂_0, one evaluation per step.

    The most accurate solver of the sampling ODE here: at 20 network
    evaluations it reproduces the std of Gaussian data of std 0.1-0.6
    within 1 % (docs/benchmarks.md). On a trained model the stochastic
    `"dpmpp_2m_sde"` (the default of `DiffusionModel.generate`) scores the
    better FID. The first two steps build up
    the order (1, 2, then 3) and the last one (to the data) is first order.
    Below `min_third_order_steps` levels a third-order multistep update
    overshoots (its steps in λ are too long), so the sampler stays at
    second order there, i.e. DPM-Solver++(2M).

    Args:
        spacing: default `"logsnr"` (equal steps in λ).
        min_third_order_steps: fewest levels at which order 3 is used.
    """

    name = "dpmpp_3m"
    columns = Sampler.columns + ("h", "r0", "r1", "order")
    recommended_steps = 20

    def __init__(self, spacing: str = "logsnr", min_third_order_steps: int = 15):
        super().__init__(spacing)
        if not isinstance(min_third_order_steps, (int, np.integer)) or min_third_order_steps < 1:
            raise ValueError(f"`min_third_order_steps` must be an integer >= 1; received {min_third_order_steps!r}.")
        self.min_third_order_steps = int(min_third_order_steps)

    def parameters(self, schedule, steps):
        rows = super().parameters(schedule, steps)
        alpha_bar, alpha_bar_next = rows[:, 1], rows[:, 2]
        log_snr = 0.5 * np.log(alpha_bar / (1.0 - alpha_bar))
        with np.errstate(divide="ignore"):
            h = 0.5 * np.log(alpha_bar_next / (1.0 - alpha_bar_next)) - log_snr  # ∞ at the last step
        max_order = 3 if steps >= self.min_third_order_steps else 2
        order = np.minimum(np.arange(1, steps + 1), max_order).astype(np.float64)
        order[~np.isfinite(h)] = 1.0
        finite_h = np.where(np.isfinite(h), h, 1.0)
        r0, r1 = np.ones(steps), np.ones(steps)
        r0[1:] = finite_h[:-1] / finite_h[1:]
        r1[2:] = finite_h[:-2] / finite_h[2:]
        return np.concatenate([rows, finite_h[:, None], r0[:, None], r1[:, None], order[:, None]], axis=1)

    def initial_state(self, x):
        return (ops.zeros_like(x), ops.zeros_like(x))

    def step(self, denoise, x, state, row, noise):
        t, alpha_bar_t, alpha_bar_next = row.t, row.alpha_bar_t, row.alpha_bar_next
        h, r0, r1, order = row.h, row.r0, row.r1, row.order
        x0, _ = denoise(x, t, alpha_bar_t)
        x_next = dpmpp_3m_step(x, x0, state[0], state[1], alpha_bar_t, alpha_bar_next, h, r0, r1, order)
        return x_next, (x0, state[0])

    def get_config(self):
        return {**super().get_config(), "min_third_order_steps": self.min_third_order_steps}


class ReverseSDESampler(Sampler):
    """Euler–Maruyama on the reverse-time VP-SDE (`euler_maruyama_step`); the last step returns x̂_0.

    Args:
        spacing: see `Sampler`.
    """

    name = "sde"
    noise_draws = 1
    gaussian_only = True

    def step(self, denoise, x, state, row, noise):
        t, alpha_bar_t, alpha_bar_next = row.t, row.alpha_bar_t, row.alpha_bar_next
        x0, eps = denoise(x, t, alpha_bar_t)
        # Song et al.'s "noise removal": the final step outputs the denoised mean.
        return ops.where(alpha_bar_next >= 1.0, x0, euler_maruyama_step(x, eps, alpha_bar_t, alpha_bar_next, noise[0])), state


class PredictorCorrectorSampler(Sampler):
    """Predictor–corrector (Song et al. 2021, Alg. 1): Langevin corrector steps, then an SDE predictor step.

    At each level: `corrector_steps` × `langevin_corrector_step` with the
    given signal-to-noise ratio, then `euler_maruyama_step` (the last level
    returns x̂_0).

    Args:
        snr: the corrector's signal-to-noise ratio r (Song et al. use 0.16 for
            CIFAR-10 with VE and 0.01-0.1 for VP models).
        corrector_steps: Langevin steps per level, >= 1.
        spacing: see `Sampler`.
    """

    name = "pc"
    columns = Sampler.columns + ("alpha",)
    gaussian_only = True

    def __init__(self, snr: float = 0.05, corrector_steps: int = 1, spacing: str = "leading"):
        super().__init__(spacing)
        if not np.isfinite(snr) or snr <= 0:
            raise ValueError(f"`snr` must be a positive number; received {snr!r}.")
        if not isinstance(corrector_steps, (int, np.integer)) or corrector_steps < 1:
            raise ValueError(f"`corrector_steps` must be an integer >= 1; received {corrector_steps!r}.")
        self.snr = float(snr)
        self.corrector_steps = int(corrector_steps)
        self.noise_draws = 1 + self.corrector_steps
        self.evaluations_per_step = 1 + self.corrector_steps

    def parameters(self, schedule, steps):
        rows = super().parameters(schedule, steps)
        # α_t = 1 − β_t of the nearest trained timestep scales the Langevin step (Alg. 5).
        alpha = schedule.alphas[np.clip(np.round(rows[:, 0]).astype(int), 0, schedule.timesteps - 1)]
        return np.concatenate([rows, alpha[:, None]], axis=1)

    def step(self, denoise, x, state, row, noise):
        t, alpha_bar_t, alpha_bar_next, alpha = row.t, row.alpha_bar_t, row.alpha_bar_next, row.alpha
        for index in range(self.corrector_steps):
            _, eps = denoise(x, t, alpha_bar_t)
            x = langevin_corrector_step(x, eps, alpha_bar_t, alpha, noise[1 + index], self.snr)
        x0, eps = denoise(x, t, alpha_bar_t)
        return ops.where(alpha_bar_next >= 1.0, x0, euler_maruyama_step(x, eps, alpha_bar_t, alpha_bar_next, noise[0])), state

    def get_config(self):
        return {**super().get_config(), "snr": self.snr, "corrector_steps": self.corrector_steps}


class ProbabilityFlowODESampler(Sampler):
    """The probability-flow ODE solved by SciPy's adaptive `solve_ivp` (Song et al. 2021, eq. 13).

    In x̃ = x/√ᾱ and σ = √((1-ᾱ)/ᾱ) the ODE is dx̃/dσ = ε̂(x, t(σ)) (the same
    ODE `euler_step` and `heun_step` discretise); it is integrated from the
    schedule's largest σ to its smallest with relative and absolute
    tolerances, then x̂_0 is taken at the smallest level. `steps` is ignored:
    the solver picks its own evaluations (see `last_function_evaluations`).
    The network call is compiled; the solver loop runs in NumPy (float64).

    Args:
        rtol: relative tolerance of the solver.
        atol: absolute tolerance of the solver.
        method: a `scipy.integrate.solve_ivp` method ("RK45", "RK23", "DOP853").
    """

    name = "ode"
    adaptive = True

    def __init__(self, rtol: float = 1e-4, atol: float = 1e-4, method: str = "RK45"):
        super().__init__("leading")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"`rtol` and `atol` must be positive; received rtol={rtol}, atol={atol}.")
        self.rtol, self.atol, self.method = float(rtol), float(atol), method
        self.last_function_evaluations = None

    def step(self, denoise, x, state, row, noise):
        """The base contract's step to the data (ᾱ_next = 1): returns (x̂_0, state).

        `run` evaluates the ODE's right-hand side from it, ε̂ = (x − √ᾱ x̂_0)/√(1 − ᾱ).
        """
        x0, _ = denoise(x, row.t, row.alpha_bar_t)
        return x0, state

    def run(self, step_function, x, schedule: NoiseSchedule, steps: int, draw_noise, callback=None):
        """Integrates the ODE, its right-hand side from the compiled `step`; returns x̂_0 (NumPy).

        `steps` and `draw_noise` are unused; `callback(index, x)` is called with the final x̂_0.
        """
        from scipy.integrate import solve_ivp

        shape = tuple(x.shape)
        sigmas = schedule.sigmas

        def evaluate(sigma, x_tilde):
            alpha_bar = 1.0 / (1.0 + sigma**2)
            row = np.array([schedule.timestep_from_sigma(sigma), alpha_bar, 1.0], np.float32)
            x_model = (np.sqrt(alpha_bar) * x_tilde).reshape(shape).astype("float32")
            x0, _ = step_function(x_model, (), row, None)
            x0 = ops.convert_to_numpy(x0).astype(np.float64)
            eps = (x_model - np.sqrt(alpha_bar) * x0) / np.sqrt(1.0 - alpha_bar)
            return x0, eps

        def right_hand_side(sigma, x_tilde):
            _, eps = evaluate(sigma, x_tilde)
            return np.asarray(eps, np.float64).reshape(-1)

        x_tilde = np.asarray(x, np.float64).reshape(-1) / np.sqrt(1.0 / (1.0 + sigmas[-1] ** 2))
        solution = solve_ivp(
            right_hand_side, (sigmas[-1], sigmas[0]), x_tilde, method=self.method, rtol=self.rtol, atol=self.atol
        )
        if not solution.success:
            raise RuntimeError(f"The probability-flow ODE solver failed: {solution.message}")
        x0, _ = evaluate(sigmas[0], solution.y[:, -1])
        self.last_function_evaluations = int(solution.nfev) + 1
        if callback is not None:
            callback(0, x0)
        return x0

    def function_evaluations(self, steps):
        return self.last_function_evaluations

    def get_config(self):
        return {"rtol": self.rtol, "atol": self.atol, "method": self.method}


SAMPLERS = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "euler": EulerSampler,
    "heun": HeunSampler,
    "dpmpp_2m": DPMSolverPlusPlus2MSampler,
    "dpmpp_3m": DPMSolverPlusPlus3MSampler,
    "dpmpp_2m_sde": DPMSolverPlusPlus2MSDESampler,
    "sde": ReverseSDESampler,
    "pc": PredictorCorrectorSampler,
    "ode": ProbabilityFlowODESampler,
}


RECOMMENDED = "dpmpp_2m_sde"  # the sampler `DiffusionModel.generate` uses when none is named (docs/benchmarks.md)


def available() -> list[str]:
    """The sampler names `get` and `DiffusionModel.generate` accept."""
    return sorted(SAMPLERS)


def get(identifier: "str | Sampler", **kwargs) -> Sampler:
    """A sampler from its name (with constructor arguments) or a `Sampler` instance.

    Args:
        identifier: one of `available()` or a `Sampler`.
        **kwargs: arguments of the sampler's constructor, e.g. `eta` for
            "ddim", `spacing`, `snr` for "pc". Arguments the sampler does not
            take raise a ValueError.

    Returns:
        A `Sampler`.

    Example:
    >>> get("ddim", eta=1.0)
    DDIMSampler(spacing='logsnr', eta=1.0)
    """
    if isinstance(identifier, Sampler):
        if kwargs:
            raise ValueError(f"Sampler arguments {sorted(kwargs)} apply to sampler names; set them on {identifier!r}.")
        return identifier
    if not isinstance(identifier, str) or identifier not in SAMPLERS:
        raise ValueError(f"Unknown sampler {identifier!r}; use one of {available()} or a Sampler instance.")
    cls = SAMPLERS[identifier]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ValueError(
            f"The {identifier!r} sampler does not take {unknown}; it takes {sorted(accepted) or 'no arguments'}."
        )
    return cls(**kwargs)
