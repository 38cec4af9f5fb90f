"""Reverse-process samplers: update rules beside their equations, and the objects that drive them.

- `rules`: the update rules, one pure function per equation (`ddim_step`, `ddpm_step`, `euler_step`, ...).
- `base`: `Sampler`, the base class (which levels to visit, the state between steps, the loop).
- `solvers`: DDPM, DDIM, Euler, Heun and DPM-Solver++ (2M, 2M SDE, 3M).
- `score_sde`: the reverse SDE, predictor–corrector and the probability-flow ODE (Song et al. 2021).
- `registry`: the samplers by name (`available()`, `get_sampler()`, the `RECOMMENDED` default).
- `settings`: `Sampling`, every setting of a generation in one object, as `generate`, the callbacks and
  the command line take it.
"""

from keras_diffusion.samplers.base import Sampler, StepValues
from keras_diffusion.samplers.registry import RECOMMENDED, SAMPLERS, available, get_sampler, sampler_label
from keras_diffusion.samplers.rules import (
    ddim_sigma,
    ddim_step,
    ddpm_step,
    dpmpp_2m_sde_step,
    dpmpp_2m_step,
    dpmpp_3m_step,
    euler_maruyama_step,
    euler_step,
    heun_step,
    langevin_corrector_step,
)
from keras_diffusion.samplers.score_sde import PredictorCorrectorSampler, ProbabilityFlowODESampler, ReverseSDESampler
from keras_diffusion.samplers.settings import Sampling
from keras_diffusion.samplers.solvers import (
    DEFAULT_NOISE_SIGMA_MIN,
    DDIMSampler,
    DDPMSampler,
    DPMSolverPlusPlus2MSampler,
    DPMSolverPlusPlus2MSDESampler,
    DPMSolverPlusPlus3MSampler,
    EulerSampler,
    HeunSampler,
)
