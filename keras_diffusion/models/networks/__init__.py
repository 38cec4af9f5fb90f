"""Denoiser networks and their layers: the U-Net and its presets, ARDM's network, the autoencoders' blocks."""

from keras_diffusion.models.networks.ardm_network import ARDMNetwork
from keras_diffusion.models.networks.autoencoder_layers import ConvResidualBlock, Downsample, SpatialSelfAttention, Upsample
from keras_diffusion.models.networks.layers import (
    AttentionBlock,
    DepthToSpace,
    GlobalBatchDropout,
    ResidualBlock,
    SinusoidalEmbedding,
    SpaceToDepth,
)
from keras_diffusion.models.networks.normalization import GroupNormalization, group_normalization
from keras_diffusion.models.networks.presets import PRESETS
from keras_diffusion.models.networks.unet import UNet
