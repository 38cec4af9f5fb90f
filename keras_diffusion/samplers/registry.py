"""The samplers by name: `SAMPLERS`, the `RECOMMENDED` default, `available()`, `get_sampler()` and `sampler_label()`."""

import inspect

from keras_diffusion.samplers.base import Sampler
from keras_diffusion.samplers.score_sde import PredictorCorrectorSampler, ProbabilityFlowODESampler, ReverseSDESampler
from keras_diffusion.samplers.solvers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPlusPlus2MSampler,
    DPMSolverPlusPlus2MSDESampler,
    DPMSolverPlusPlus3MSampler,
    EulerSampler,
    HeunSampler,
)

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


RECOMMENDED = "dpmpp_2m_sde"  # the sampler `DiffusionModel.generate` uses when none is named (docs/lab_notes.md)


def available() -> list[str]:
    """The sampler names `get_sampler` and `DiffusionModel.generate` accept."""
    return sorted(SAMPLERS)


def get_sampler(identifier: "str | Sampler", **kwargs) -> Sampler:
    """A sampler from its name (with constructor arguments) or a `Sampler` instance.

    Args:
        identifier: one of `available()` or a `Sampler`.
        **kwargs: arguments of the sampler's constructor, e.g. `eta` for
            "ddim", `spacing`, `snr` for "pc". Arguments the sampler does not
            take raise a ValueError.

    Returns:
        A `Sampler`.

    Example:
    >>> get_sampler("ddim", eta=1.0)
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


def sampler_label(sampler: Sampler) -> str:
    """The sampler's name, with the settings that differ from its defaults: `dpmpp_2m_sde (eta=0.25)`.

    Example:
    >>> sampler_label(kd.samplers.get_sampler("dpmpp_2m_sde", eta=0.25)), sampler_label(kd.samplers.get_sampler("ddim"))
    ('dpmpp_2m_sde (eta=0.25)', 'ddim')
    """
    try:
        defaults = type(sampler)().get_config()
    except TypeError:  # a sampler of the user's own without defaults for every argument
        return sampler.name
    changed = [f"{key}={value}" for key, value in sampler.get_config().items() if defaults.get(key) != value]
    return f"{sampler.name} ({', '.join(changed)})" if changed else sampler.name
