"""The samplers that walk a fixed sequence of noise levels: DDPM, DDIM, Euler, Heun and the DPM-Solver++ family.

Each class pairs one update rule of `keras_diffusion.samplers.rules` with the
levels it visits and the state it carries (DPM-Solver++ keeps the previous x̂_0).
"""

import numpy as np
from keras import ops

from keras_diffusion.samplers.base import Sampler
from keras_diffusion.samplers.rules import (
    ddim_step,
    ddpm_step,
    dpmpp_2m_sde_step,
    dpmpp_2m_step,
    dpmpp_3m_step,
    euler_step,
    heun_step,
)


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
            (docs/lab_notes.md).
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
            docs/lab_notes.md).
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


# σ below which `"dpmpp_2m_sde"` adds no noise by default: the noise there bought no FID on the converged MNIST
# model and cost accuracy on Gaussian data (docs/benchmarks.md, "Which sampler?").
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
    within 2.9 % at 20). Both measured in docs/lab_notes.md. One evaluation
    per step; the first step and the last (to the data) are first order.

    Args:
        eta: the fraction η of the reverse SDE's noise, in (0, 1]: 1 (the
            default) is the reverse SDE; smaller values move towards the
            sampling ODE (`"dpmpp_2m"`, η = 0), trading the noise's
            washing-out of the network's error for a smaller discretisation
            error (docs/lab_notes.md).
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
    within 1 % (docs/lab_notes.md). On a trained model the stochastic
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


