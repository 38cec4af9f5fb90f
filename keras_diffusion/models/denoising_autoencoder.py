"""Moved to `keras_diffusion.denoising_autoencoder` (the trainable models sit beside `DiffusionModel`); this path still imports."""

import warnings

from keras_diffusion.denoising_autoencoder import *  # noqa: F403
from keras_diffusion import denoising_autoencoder as _moved

warnings.warn(
    "keras_diffusion.models.denoising_autoencoder moved to keras_diffusion.denoising_autoencoder; import it from there.", DeprecationWarning, stacklevel=2
)
globals().update({name: getattr(_moved, name) for name in dir(_moved) if not name.startswith("__")})
