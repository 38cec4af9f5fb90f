"""Moved to `keras_diffusion.ardm` (the trainable models sit beside `DiffusionModel`); this path still imports."""

import warnings

from keras_diffusion.ardm import *  # noqa: F403
from keras_diffusion import ardm as _moved

warnings.warn(
    "keras_diffusion.models.ardm moved to keras_diffusion.ardm; import it from there.", DeprecationWarning, stacklevel=2
)
globals().update({name: getattr(_moved, name) for name in dir(_moved) if not name.startswith("__")})
