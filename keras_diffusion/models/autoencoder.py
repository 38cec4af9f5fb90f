"""`AutoencoderKL`: the KL-regularised convolutional autoencoder of latent diffusion (LDM)."""

import math
import threading
from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

from keras_diffusion.models.base import OwnLossModel
from keras_diffusion.models.networks.autoencoder_layers import (
    ConvResidualBlock,
    Downsample,
    SpatialSelfAttention,
    Upsample,
)
from keras_diffusion.models.networks.normalization import GroupNormalization
from keras_diffusion.runtime.replicas import draw_for_global_batch, mean_over_global_batch

# LDM clamps the log-variance to keep exp() finite (ldm/modules/distributions).
LOG_VARIANCE_RANGE = (-30.0, 20.0)


@keras.saving.register_keras_serializable(package="keras_diffusion")
class AutoencoderKL(OwnLossModel):
    """A convolutional VAE: image → N(mean, exp(log_variance)) over a latent grid → image.

    The encoder maps an (H, W, C) image to a latent of shape
    (H/f, W/f, latent_channels) — a mean and a log-variance per element
    (a diagonal Gaussian posterior q(z|x)); the decoder maps a latent back to
    an image. This is the first stage of latent diffusion (LDM, Rombach et
    al. 2022; the thesis' section 3.2, eq. 18): the diffusion model then
    works on z = E(x), which is f² / latent_channels · C times smaller than x.
    The architecture is LDM's (residual blocks, a mid-block with
    self-attention, 1×1 "quant" convolutions), so `StableDiffusionVAE` is
    this class with Stable Diffusion's sizes.

    `fit(images)` minimises, per image,
    `Σ_pixels[(x − x̂)² + l1_weight·|x − x̂|] + kl_weight · KL(q(z|x) ‖ N(0, I))`
    with x̂ decoded from a sample z ~ q(z|x) (the reparameterisation trick;
    the noise comes from the model's `SeedGenerator`), i.e. the negative
    ELBO with a Gaussian decoder and a down-weighted KL (β-VAE). Sums over
    pixels and latent elements follow LDM, whose default β is 1e-6: a small
    β keeps reconstructions sharp while the KL stops the latent scale from
    drifting. The L1 term is an optional, perceptual-free sharpening.
    Logged metrics: `reconstruction` (per-pixel mean squared error in
    [0, 1]) and `kl` (per-image KL, unweighted).

    `compile()` takes no `loss`; its default optimizer is Adam(1e-3). The
    posterior seed's state is saved with the model, so a restored model
    continues with the noise of the run it resumes; under `tf.distribute`
    each replica draws its rows of the global batch's noise.

    Data convention (as `DiffusionModel`): images in [0, 1] as floats, or
    uint8; `decode` returns float32 images in [0, 1].

    Args:
        image_shape: (H, W, C); H and W divisible by `downsampling_factor`.
        downsampling_factor: f, a power of two (f = 4: 28×28 → 7×7, 32×32 → 8×8).
        latent_channels: channels of the latent.
        widths: channels per resolution level, log2(f) + 1 of them; default
            `(32, 64, 64, ...)`.
        num_res_blocks: residual blocks per level (the decoder has one more).
        norm_groups: GroupNormalization groups; must divide every width.
        mid_attention: self-attention in the lowest-resolution mid-block.
        kl_weight: β, the weight of the KL term.
        l1_weight: weight of the optional L1 reconstruction term.
        seed: seed of the posterior samples drawn in training.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:
    >>> autoencoder = AutoencoderKL(image_shape=(8, 8, 1), downsampling_factor=2,
    ...                             latent_channels=2, widths=(8, 8), norm_groups=4)
    >>> latents = autoencoder.encode(np.zeros((3, 8, 8, 1), "float32"))
    >>> tuple(latents.shape), tuple(autoencoder.decode(latents).shape)
    ((3, 4, 4, 2), (3, 8, 8, 1))
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        downsampling_factor: int = 4,
        latent_channels: int = 4,
        widths: Sequence[int] | None = None,
        num_res_blocks: int = 1,
        norm_groups: int = 8,
        mid_attention: bool = True,
        kl_weight: float = 1e-6,
        l1_weight: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        image_shape = tuple(int(d) for d in image_shape)
        levels = _check_downsampling(image_shape, downsampling_factor)
        widths = tuple(int(w) for w in widths) if widths is not None else tuple(min(32 * 2**i, 64) for i in range(levels))
        _check_arguments(widths, levels, downsampling_factor, latent_channels, num_res_blocks, norm_groups, kl_weight, l1_weight)
        self.image_shape = image_shape
        self.downsampling_factor = int(downsampling_factor)
        self.latent_channels = int(latent_channels)
        self.widths = widths
        self.num_res_blocks = int(num_res_blocks)
        self.norm_groups = int(norm_groups)
        self.mid_attention = bool(mid_attention)
        self.kl_weight = float(kl_weight)
        self.l1_weight = float(l1_weight)
        self.seed = seed
        self.latent_shape = (image_shape[0] // downsampling_factor, image_shape[1] // downsampling_factor, self.latent_channels)
        self.seed_generator = keras.random.SeedGenerator(seed, name="posterior_seed")
        self.encoder = build_encoder(image_shape, widths, self.num_res_blocks, self.latent_channels, self.norm_groups,
                                     self.mid_attention, epsilon=self._norm_epsilon)  # fmt: skip
        self.decoder = build_decoder(self.latent_shape, image_shape[-1], widths, self.num_res_blocks, self.norm_groups,
                                     self.mid_attention, epsilon=self._norm_epsilon)  # fmt: skip
        # The KL of the last training call, read by compute_loss. Per thread rather than add_loss: Layer.losses
        # is one list shared by the threads in which tf.distribute.MirroredStrategy traces its replicas, so
        # each replica's loss would also sum the KL terms of the replicas traced before it.
        self._training_kl = threading.local()
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.built = True

    _norm_epsilon = 1e-6  # LDM's GroupNorm epsilon

    # ------------------------------------------------------------ encode / decode

    def encode_distribution(self, images):
        """The posterior q(z|x) of each image.

        Args:
            images: (B, H, W, C) in [0, 1] (floats) or uint8.

        Returns:
            `(mean, log_variance)`, each of shape (B,) + `latent_shape`.
        """
        self._check_image_shape(tuple(images.shape))
        moments = self.encoder(_to_signed_unit(images), training=False)
        mean, log_variance = ops.split(moments, 2, axis=-1)
        return mean, ops.clip(log_variance, *LOG_VARIANCE_RANGE)

    def encode(self, images, sample: bool = False, seed=None):
        """Latents of images: the posterior mean, or a sample of q(z|x).

        Args:
            images: (B, H, W, C) in [0, 1] (floats) or uint8.
            sample: draw z = mean + σ·ε instead of returning the mean.
            seed: int or `keras.random.SeedGenerator` for the sample.

        Returns:
            A tensor of shape (B,) + `latent_shape`.
        """
        mean, log_variance = self.encode_distribution(images)
        if not sample:
            return mean
        return mean + ops.exp(0.5 * log_variance) * keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=seed)

    def decode(self, latents):
        """Images of latents, float32 in [0, 1].

        Args:
            latents: (B,) + `latent_shape`.

        Returns:
            A tensor of shape (B, H, W, C), clipped to [0, 1].
        """
        if tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(f"Expected latents of shape (batch, {', '.join(map(str, self.latent_shape))}); "
                             f"received {tuple(latents.shape)}.")  # fmt: skip
        return ops.clip(self._decode_unclipped(ops.convert_to_tensor(latents, "float32")), 0.0, 1.0)

    def _decode_unclipped(self, latents, training=False):
        return (ops.cast(self.decoder(latents, training=training), "float32") + 1.0) / 2.0

    def reconstruction_psnr(self, images, batch_size: int = 256) -> float:
        """Mean PSNR in dB of decode(encode(x)) (the posterior mean) against x, on [0, 1].

        Args:
            images: (N, H, W, C) NumPy array in [0, 1] or uint8.
            batch_size: images per network call.

        Returns:
            The mean over images of `10·log10(1 / MSE)`.
        """
        images = np.asarray(images)
        images = images.astype("float32") / 255.0 if images.dtype == np.uint8 else images.astype("float32")
        values = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            decoded = ops.convert_to_numpy(self.decode(self.encode(batch)))
            mse = np.mean((decoded - batch) ** 2, axis=(1, 2, 3))
            values.append(10.0 * np.log10(1.0 / np.maximum(mse, 1e-10)))
        return float(np.mean(np.concatenate(values)))

    # ------------------------------------------------------------------ training

    def call(self, images, training=None):
        """Reconstructs images (a posterior sample in training, the mean otherwise).

        In training the KL of every image's posterior is kept for
        `compute_loss`. The output is in [0, 1] up to the decoder's error
        (not clipped).
        """
        mean, log_variance = self.encode_distribution(images)
        latents = mean
        self._training_kl.value = None
        if training:
            latent_shape = tuple(ops.shape(mean)[1:])
            noise = draw_for_global_batch(
                lambda n: keras.random.normal((n,) + latent_shape, dtype=mean.dtype, seed=self.seed_generator),
                ops.shape(mean)[0],
            )  # fmt: skip
            latents = mean + ops.exp(0.5 * log_variance) * noise
            self._training_kl.value = kl_to_standard_normal(mean, log_variance)
        return self._decode_unclipped(latents, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Σ_pixels[(x − x̂)² + l1_weight·|x − x̂|] plus the KL term of `call`, averaged over the (global) batch."""
        target = ops.cast(x, "float32") / 255.0 if keras.backend.standardize_dtype(x.dtype) == "uint8" else ops.cast(x, "float32")
        error = target - ops.cast(y_pred, "float32")
        axes = tuple(range(1, len(error.shape)))
        per_image = ops.sum(ops.square(error), axis=axes)
        if self.l1_weight:
            per_image = per_image + self.l1_weight * ops.sum(ops.abs(error), axis=axes)
        if sample_weight is not None:
            per_image = per_image * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        kl = getattr(self._training_kl, "value", None)
        self._training_kl.value = None
        kl = ops.zeros_like(per_image) if kl is None else kl  # evaluate() calls with training=False: no KL
        # Per-image updates: the metrics' sums over replicas are then the global batch's means.
        self.reconstruction_tracker.update_state(ops.square(error))
        self.kl_tracker.update_state(kl)
        return mean_over_global_batch(per_image + self.kl_weight * kl)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on images alone (the targets are the inputs); arrays are checked first."""
        if y is not None:
            raise ValueError("An autoencoder is fit on images alone (its targets are its inputs); pass y=None.")
        if isinstance(x, np.ndarray):
            self._check_image_shape(x.shape)
            _check_unit_range(x)
        return super().fit(x, None, *args, **kwargs)

    def _check_image_shape(self, shape):
        if tuple(shape[1:]) != self.image_shape:
            raise ValueError(
                f"Expected images of shape (batch, {', '.join(map(str, self.image_shape))}); received {tuple(shape)}. "
                "Resize the data or build the autoencoder with this image_shape."
            )

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": self.image_shape,
            "downsampling_factor": self.downsampling_factor,
            "latent_channels": self.latent_channels,
            "widths": self.widths,
            "num_res_blocks": self.num_res_blocks,
            "norm_groups": self.norm_groups,
            "mid_attention": self.mid_attention,
            "kl_weight": self.kl_weight,
            "l1_weight": self.l1_weight,
            "seed": self.seed,
        }


def kl_to_standard_normal(mean, log_variance):
    """KL(N(mean, exp(log_variance)) ‖ N(0, I)) per sample, summed over all other axes.

    `½ Σ (mean² + σ² − 1 − log σ²)` (Kingma & Welling 2014, appendix B).

    Example:
    >>> float(kl_to_standard_normal(keras.ops.zeros((1, 3)), keras.ops.zeros((1, 3)))[0])
    0.0
    """
    terms = ops.square(mean) + ops.exp(log_variance) - 1.0 - log_variance
    return 0.5 * ops.sum(ops.cast(terms, "float32"), axis=tuple(range(1, len(mean.shape))))


def build_encoder(image_shape, widths, num_res_blocks, latent_channels, norm_groups, mid_attention, epsilon=1e-6):
    """The encoder: [-1, 1] image → mean and log-variance stacked on the channel axis.

    Layer names follow diffusers' `Encoder` (down_blocks.{i}.resnets.{j} is
    `down_{i}_res_{j}`), which `StableDiffusionVAE` relies on to load weights.
    """
    inputs = keras.Input(shape=image_shape, name="image")
    x = layers.Conv2D(widths[0], 3, padding="same", name="conv_in")(inputs)
    for level, width in enumerate(widths):
        for block in range(num_res_blocks):
            x = ConvResidualBlock(width, norm_groups, epsilon, name=f"down_{level}_res_{block}")(x)
        if level < len(widths) - 1:
            x = Downsample(width, name=f"down_{level}_downsample")(x)
    x = _mid_block(x, widths[-1], norm_groups, mid_attention, epsilon)
    x = GroupNormalization(norm_groups, epsilon=epsilon, name="conv_norm_out")(x)
    x = layers.Activation("silu", name="silu_out")(x)
    x = layers.Conv2D(2 * latent_channels, 3, padding="same", name="conv_out")(x)
    outputs = layers.Conv2D(2 * latent_channels, 1, name="quant_conv")(x)
    return keras.Model(inputs, outputs, name="encoder")


def build_decoder(latent_shape, image_channels, widths, num_res_blocks, norm_groups, mid_attention, epsilon=1e-6):
    """The decoder: latent → image in [-1, 1] (unbounded output). Names follow diffusers' `Decoder`."""
    inputs = keras.Input(shape=latent_shape, name="latents")
    x = layers.Conv2D(latent_shape[-1], 1, name="post_quant_conv")(inputs)
    x = layers.Conv2D(widths[-1], 3, padding="same", name="conv_in")(x)
    x = _mid_block(x, widths[-1], norm_groups, mid_attention, epsilon)
    for up_index, level in enumerate(reversed(range(len(widths)))):
        for block in range(num_res_blocks + 1):
            x = ConvResidualBlock(widths[level], norm_groups, epsilon, name=f"up_{up_index}_res_{block}")(x)
        if level > 0:
            x = Upsample(widths[level], name=f"up_{up_index}_upsample")(x)
    x = GroupNormalization(norm_groups, epsilon=epsilon, name="conv_norm_out")(x)
    x = layers.Activation("silu", name="silu_out")(x)
    outputs = layers.Conv2D(image_channels, 3, padding="same", name="conv_out")(x)
    return keras.Model(inputs, outputs, name="decoder")


def _mid_block(x, width, norm_groups, mid_attention, epsilon):
    x = ConvResidualBlock(width, norm_groups, epsilon, name="mid_res_0")(x)
    if mid_attention:
        x = SpatialSelfAttention(norm_groups, epsilon, name="mid_attention")(x)
    return ConvResidualBlock(width, norm_groups, epsilon, name="mid_res_1")(x)


def _to_signed_unit(images):
    """[0, 1] floats or uint8 → float32 in [-1, 1]."""
    images = ops.convert_to_tensor(images)
    if keras.backend.standardize_dtype(images.dtype) == "uint8":
        return ops.cast(images, "float32") / 127.5 - 1.0
    return ops.cast(images, "float32") * 2.0 - 1.0


def _check_downsampling(image_shape, downsampling_factor) -> int:
    if len(image_shape) != 3:
        raise ValueError(f"`image_shape` must be (height, width, channels); received {image_shape}.")
    if not isinstance(downsampling_factor, (int, np.integer)) or downsampling_factor < 1 or downsampling_factor & (downsampling_factor - 1):
        raise ValueError(f"`downsampling_factor` must be a power of two (1, 2, 4, 8, ...); received {downsampling_factor!r}.")
    if image_shape[0] % downsampling_factor or image_shape[1] % downsampling_factor:
        raise ValueError(
            f"Height and width {image_shape[:2]} must be divisible by downsampling_factor={downsampling_factor}; "
            "pad or resize the images, or choose a smaller factor."
        )
    return int(math.log2(downsampling_factor)) + 1


def _check_arguments(widths, levels, downsampling_factor, latent_channels, num_res_blocks, norm_groups, kl_weight, l1_weight):
    if len(widths) != levels:
        raise ValueError(
            f"downsampling_factor={downsampling_factor} needs {levels} widths (log2(f) + 1 resolution levels); "
            f"received widths={widths}."
        )
    if latent_channels < 1 or num_res_blocks < 1:
        raise ValueError(f"`latent_channels` and `num_res_blocks` must be >= 1; received {latent_channels}, {num_res_blocks}.")
    if any(width % norm_groups for width in widths):
        raise ValueError(f"`norm_groups`={norm_groups} must divide every width; received widths={widths}.")
    if kl_weight < 0 or l1_weight < 0:
        raise ValueError(f"`kl_weight` and `l1_weight` must be >= 0; received {kl_weight}, {l1_weight}.")


def _check_unit_range(images: np.ndarray):
    if images.dtype == np.uint8 or images.size == 0:
        return
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"Images must be uint8 or float; received dtype {images.dtype}.")
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 1.0:
        raise ValueError(
            f"Float images must lie in [0, 1] (finite); these range over [{low:g}, {high:g}]. "
            "Divide [0, 255] data by 255, map [-1, 1] data with (x + 1) / 2."
        )
