"""Keras callbacks for diffusion training: FID/KID, sample grids and training curves."""

from keras_diffusion.callbacks.checkpoint import TrainingCheckpoint
from keras_diffusion.callbacks.fid_callback import FIDCallback
from keras_diffusion.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from keras_diffusion.callbacks.image_grid import ImageGridCallback, make_image_grid, save_image_atomically
from keras_diffusion.callbacks.plots import TrainingCurvesCallback, plot_training_curves

__all__ = [
    "FIDCallback",
    "ImageGridCallback",
    "NaNGuard",
    "NonFiniteLossError",
    "TrainingCheckpoint",
    "TrainingCurvesCallback",
    "make_image_grid",
    "plot_training_curves",
    "save_image_atomically",
]
