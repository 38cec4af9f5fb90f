"""The score-SDE family (Song et al. 2021): the reverse SDE, predictor–corrector and the probability-flow ODE.

They treat the network as the score ∇log p_t(x) = −ε̂/√(1-ᾱ_t) of Gaussian
noise, so they serve models trained with Gaussian noise only (`gaussian_only`).
"""

import numpy as np
from keras import ops

from keras_diffusion.samplers.base import Sampler
from keras_diffusion.samplers.rules import euler_maruyama_step, langevin_corrector_step
from keras_diffusion.schedules import NoiseSchedule


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
