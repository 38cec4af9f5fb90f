"""keras_diffusion: diffusion models for Keras 3, one model code on every backend.

The face of the package. The mathematics a user picks by name sits at the top
(`schedules`, `noise`, `timestep_sampling`, `predictions`, `ema`); everything
else lives in a sub-package named for its job:

- `models`: the trainable models (`DiffusionModel`, `LatentDiffusionModel`, `ARDM`, the autoencoders) and,
  in `models.networks`, the U-Net, its layers and presets.
- `samplers`: update rules, the `Sampler` base, the solvers, the score-SDE family and `Sampling`, a
  generation's settings.
- `metrics`: FID, KID, class accuracy and sampler sweeps.
- `callbacks`: FID, sample grids, curves, checkpoints and EMA snapshots during `fit`.
- `training`: optimizers, learning-rate recipes and the NaN guard.
- `data`: datasets, files written atomically and image conversions.
- `runtime`: engine defaults, compilation, replicas and processes, and the few Keras internals we touch.
- `cli`: the `keras-diffusion` command.

`datasets`, `optimizers`, `learning_rates` and `distributed` are also reachable here, under the
names the docs use (`kd.datasets.load`, `kd.optimizers.Adam`, ...).
"""

import contextlib as _contextlib
import os as _os
import sys as _sys


@_contextlib.contextmanager
def _quiet_engine_start():
    """In the `keras-diffusion` command, the engines import with the process's stderr sent to /dev/null.

    TensorFlow and XLA write start-up lines from C++ straight to stderr when they load, before their
    logging honours TF_CPP_MIN_LOG_LEVEL. The command hides them unless the user set that variable or
    KERAS_DIFFUSION_DEBUG; Python errors still surface (they are raised after stderr is restored).
    """
    command = _os.path.basename((getattr(_sys, "argv", None) or [""])[0]) == "keras-diffusion"
    if not command or "TF_CPP_MIN_LOG_LEVEL" in _os.environ or _os.environ.get("KERAS_DIFFUSION_DEBUG"):
        yield
        return
    _os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    _sys.stderr.flush()
    saved, silent = _os.dup(2), _os.open(_os.devnull, _os.O_WRONLY)
    _os.dup2(silent, 2)
    try:
        yield
    finally:
        _os.dup2(saved, 2)
        _os.close(saved)
        _os.close(silent)


with _quiet_engine_start():
    from keras_diffusion.runtime.defaults import apply_engine_defaults  # imports Keras and its engine

apply_engine_defaults()  # before any engine runs; see runtime/defaults.py and docs/installation.md

from keras_diffusion import (  # noqa: E402
    callbacks,
    data,
    ema,
    metrics,
    models,
    noise,
    predictions,
    runtime,
    samplers,
    schedules,
    timestep_sampling,
    training,
)
from keras_diffusion.data import datasets  # noqa: E402
from keras_diffusion.models import DiffusionModel, LatentDiffusionModel  # noqa: E402
from keras_diffusion.runtime import distributed  # noqa: E402
from keras_diffusion.training import learning_rates, optimizers  # noqa: E402

__version__ = "0.2.0.dev0"
