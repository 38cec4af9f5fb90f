"""Denoiser networks."""

from keras_diffusion.models.layers import AttentionBlock, ResidualBlock, SinusoidalEmbedding
from keras_diffusion.models.unet import UNet
from keras_diffusion.models.ardm import ARDM, ARDMNetwork
