"""The trainable models and, in `networks`, the denoiser networks they train.

- `diffusion_model`: `DiffusionModel`, a denoiser trained with the diffusion loss and sampled by `generate`.
- `latent_diffusion_model`: `LatentDiffusionModel`, the same in a frozen autoencoder's latent space.
- `ardm`: `ARDM`, the order-agnostic autoregressive diffusion model.
- `autoencoder`, `denoising_autoencoder`, `stable_diffusion_vae`: the first stage of latent diffusion.
- `base`: `OwnLossModel`, the base of every model here (its own loss, Adam by default, atomic saves);
  `seed_states`: `SavesSeedStates`, which saves the seed generators' states with the variables.
- `networks`: the U-Net and its presets, ARDM's network, the autoencoders' blocks, the layers.
- `pretrained`: models shipped in the package (`load_pretrained("mnist")`) and `export_for_inference`.
"""

from keras_diffusion.models import networks
from keras_diffusion.models.ardm import ARDM
from keras_diffusion.models.autoencoder import AutoencoderKL
from keras_diffusion.models.base import OwnLossModel
from keras_diffusion.models.denoising_autoencoder import DenoisingAutoencoder
from keras_diffusion.models.diffusion_model import DiffusionModel
from keras_diffusion.models.latent_diffusion_model import LatentDiffusionModel
from keras_diffusion.models.networks import (
    PRESETS,
    ARDMNetwork,
    AttentionBlock,
    ConvResidualBlock,
    DepthToSpace,
    Downsample,
    GlobalBatchDropout,
    GroupNormalization,
    ResidualBlock,
    SinusoidalEmbedding,
    SpaceToDepth,
    SpatialSelfAttention,
    UNet,
    Upsample,
    group_normalization,
)
from keras_diffusion.models.pretrained import available_pretrained, export_for_inference, load_pretrained
from keras_diffusion.models.seed_states import SavesSeedStates
from keras_diffusion.models.stable_diffusion_vae import StableDiffusionVAE
