"""`Sampler`, the base of every sampler, and `StepValues`, the named row of values a step reads.

Every sampler meets a model at one small interface. The model gives it a
function `denoise(x, t, alpha_bar) -> (x̂_0, ε̂)` (network, guidance and the
prediction-target conversion already applied) and the sampler moves x from
one noise level to the next: `parameters` says which levels to visit and
what each step reads, `initial_state` what a step carries to the next, and
`step` applies one update rule (`keras_diffusion.samplers.rules`). To write
your own sampler, subclass `Sampler`, implement `step` and pass the instance
as `model.generate(sampler=...)`.
"""

from collections.abc import Callable, Sequence

import numpy as np

from keras_diffusion.schedules import SPACINGS, NoiseSchedule, noise_levels


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
