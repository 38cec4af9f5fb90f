"""Moved to `keras_diffusion.autoencoder` (the trainable models sit beside `DiffusionModel`); this path still imports."""

import warnings

from keras_diffusion.autoencoder import *  # noqa: F403
from keras_diffusion import autoencoder as _moved

warnings.warn(
    "keras_diffusion.models.autoencoder moved to keras_diffusion.autoencoder; import it from there.", DeprecationWarning, stacklevel=2
)
globals().update({name: getattr(_moved, name) for name in dir(_moved) if not name.startswith("__")})
