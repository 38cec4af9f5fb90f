"""`Sampling`: every setting of a generation in one object, checked once.

`DiffusionModel.generate` builds one from its arguments; the callbacks, the
command line and the sampler sweeps hold one and hand it over whole, so a
setting is named, defaulted and checked in one place.
"""

import dataclasses

import numpy as np

from keras_diffusion.samplers.base import Sampler
from keras_diffusion.samplers.registry import RECOMMENDED, get_sampler, sampler_label


def _is_count(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How to generate: the sampler, its steps, the guidance weight and the weights to sample with.

    Args:
        sampler: a name of `keras_diffusion.samplers.available()` (default the
            recommended `"dpmpp_2m_sde"`), or a `Sampler` with its own settings,
            e.g. `get_sampler("ddim", eta=1.0)`.
        steps: noise levels to visit, >= 1; None for the sampler's own default
            (`Sampler.default_steps`).
        guidance_scale: classifier-free guidance weight w >= 0 (0: the
            conditional model alone; only conditional models take w > 0).
        batch_size: images per network call; None for up to 256.
        clip_denoised: clip x̂_0 to [-1, 1] at every step; None for the model's default.
        use_ema: sample with the EMA weights, where the model keeps them.

    Raises:
        ValueError: on a setting out of range, naming it.

    Example:
    >>> settings = Sampling("ddim", steps=50, guidance_scale=2.0)
    >>> settings.sampler_object().name, settings.describe()
    ('ddim', 'ddim, 50 steps, w = 2')
    >>> settings.replace(steps=10).steps
    10
    """

    sampler: str | Sampler = RECOMMENDED
    steps: int | None = None
    guidance_scale: float = 0.0
    batch_size: int | None = None
    clip_denoised: bool | None = None
    use_ema: bool = True

    def __post_init__(self):
        get_sampler(self.sampler)  # an unknown name fails here, with the names it knows
        if self.steps is not None and not _is_count(self.steps):
            raise ValueError(f"`steps` must be a positive integer or None; received {self.steps!r}.")
        scale = self.guidance_scale
        is_number = isinstance(scale, (int, float, np.number)) and not isinstance(scale, bool)
        if not is_number or not np.isfinite(scale) or scale < 0:
            raise ValueError(f"`guidance_scale` must be a finite number >= 0; received {scale!r}.")
        if self.batch_size is not None and not _is_count(self.batch_size):
            raise ValueError(f"`batch_size` must be a positive integer or None; received {self.batch_size!r}.")

    def sampler_object(self) -> Sampler:
        """The `Sampler` these settings name."""
        return get_sampler(self.sampler)

    def replace(self, **changes) -> "Sampling":
        """A copy with some settings changed (checked again)."""
        return dataclasses.replace(self, **changes)

    def arguments(self) -> dict:
        """These settings as keyword arguments of `DiffusionModel.generate`."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def describe(self) -> str:
        """A short label for logs and plots, e.g. "ddim, 50 steps, w = 2" or "ddim (eta=1.0), 20 steps"."""
        sampler = sampler_label(self.sampler_object())
        steps = "default steps" if self.steps is None else f"{self.steps} steps"
        guidance = f", w = {self.guidance_scale:g}" if self.guidance_scale else ""
        return f"{sampler}, {steps}{guidance}"
