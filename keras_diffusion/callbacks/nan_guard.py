"""`NaNGuard` lives in `keras_diffusion.nan_guard` (the models install it, and models do not import
callbacks); it is a callback like the others, so it is importable from here too."""

from keras_diffusion.nan_guard import NaNGuard, NonFiniteLossError  # noqa: F401
