"""Denoiser networks."""

from keras_diffusion.models.layers import AttentionBlock, GlobalBatchDropout, ResidualBlock, SinusoidalEmbedding
from keras_diffusion.models.normalization import GroupNormalization, group_normalization
from keras_diffusion.models.unet import UNet
from keras_diffusion.models.ardm import ARDM
from keras_diffusion.models.ardm_network import ARDMNetwork
from keras_diffusion.models.autoencoder import AutoencoderKL
from keras_diffusion.models.autoencoder_layers import ConvResidualBlock, Downsample, SpatialSelfAttention, Upsample
from keras_diffusion.models.denoising_autoencoder import DenoisingAutoencoder
from keras_diffusion.models.stable_diffusion_vae import StableDiffusionVAE
