"""Networks and their layers: the U-Net, ARDM's network, the autoencoders' blocks, the SD VAE adapter.

The trainable models `ARDM`, `AutoencoderKL` and `DenoisingAutoencoder` live beside `DiffusionModel`
(`keras_diffusion.ardm`, `.autoencoder`, `.denoising_autoencoder`) and are re-exported here.
"""

from keras_diffusion.models.layers import (
    AttentionBlock,
    DepthToSpace,
    GlobalBatchDropout,
    ResidualBlock,
    SinusoidalEmbedding,
    SpaceToDepth,
)
from keras_diffusion.models.normalization import GroupNormalization, group_normalization
from keras_diffusion.models.unet import UNet
from keras_diffusion.models.ardm_network import ARDMNetwork
from keras_diffusion.models.autoencoder_layers import ConvResidualBlock, Downsample, SpatialSelfAttention, Upsample
from keras_diffusion.ardm import ARDM
from keras_diffusion.autoencoder import AutoencoderKL
from keras_diffusion.denoising_autoencoder import DenoisingAutoencoder
from keras_diffusion.models.stable_diffusion_vae import StableDiffusionVAE
