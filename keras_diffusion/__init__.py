"""keras_diffusion: diffusion models for Keras 3 on TensorFlow and JAX."""

from keras_diffusion import callbacks, datasets, metrics, models, noise, predictions, samplers, schedules
from keras_diffusion.diffusion_model import DiffusionModel
from keras_diffusion.latent_diffusion_model import LatentDiffusionModel

__version__ = "0.1.0"
