"""Keras callbacks for diffusion training: FID/KID, sample grids and training curves."""

from keras_diffusion.callbacks.checkpoint import EpochCheckpoint, TrainingCheckpoint
from keras_diffusion.callbacks.clock import TrainingClock
from keras_diffusion.callbacks.ema_snapshots import EMASnapshots, read_ema_snapshots
from keras_diffusion.callbacks.fid_callback import FIDCallback
from keras_diffusion.callbacks.image_grid import ImageGridCallback, make_image_grid
from keras_diffusion.callbacks.plots import CurvePoint, TrainingCurvesCallback, plot_training_curves
from keras_diffusion.data.files import save_image_atomically
from keras_diffusion.training.nan_guard import NaNGuard, NonFiniteLossError

__all__ = [
    "CurvePoint",
    "EMASnapshots",
    "EpochCheckpoint",
    "FIDCallback",
    "ImageGridCallback",
    "NaNGuard",
    "NonFiniteLossError",
    "TrainingCheckpoint",
    "TrainingClock",
    "TrainingCurvesCallback",
    "make_image_grid",
    "plot_training_curves",
    "read_ema_snapshots",
    "save_image_atomically",
]
