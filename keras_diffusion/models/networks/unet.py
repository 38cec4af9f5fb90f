"""The U-Net denoiser ε_θ(x_t, t[, c]) (the thesis' section 2.2; DDPM appendix B)."""

import math
from collections.abc import Sequence

import keras
from keras import layers

from keras_diffusion.runtime.initializers import RandomNormal, layer_initializers
from keras_diffusion.models.networks.layers import AttentionBlock, DepthToSpace, ResidualBlock, SinusoidalEmbedding, SpaceToDepth
from keras_diffusion.models.networks.normalization import GroupNormalization
from keras_diffusion.models.networks.presets import PRESETS


@keras.saving.register_keras_serializable(package="keras_diffusion")
class UNet(keras.Model):
    """A DDPM-style U-Net, optionally class-conditional, built at construction.

    Each resolution level has `num_res_blocks` residual blocks (GroupNorm +
    SiLU, the time/class embedding added in every block), self-attention
    where the feature map's side is in `attention_resolutions`, then a
    stride-2 convolution; the decoder mirrors it with skip connections from
    every encoder block and, between levels, DDPM's nearest-neighbour
    upsampling and 3×3 convolution (or another `upsampling`). The output
    convolution starts at zero.

    Class conditioning adds a learned embedding of the label to the time
    embedding. The embedding table has `num_classes + 1` rows: label
    `num_classes` is the "null" class used for classifier-free guidance. Its
    rows start as N(0, 1) draws, on the scale of the time embedding, so the
    labels steer the network from the first updates.

    Called as `unet([x_t, t])`, or `unet([x_t, t, labels])` when
    `num_classes` is set; `t` holds one timestep per sample (int or float).
    The output has x_t's shape.

    Args:
        image_shape: (height, width, channels); height and width must be
            divisible by 2 ** (len(widths) - 1).
        widths: channels per resolution level, from the top.
        num_res_blocks: residual blocks per level in the encoder (the
            decoder has one more, as in DDPM).
        attention_resolutions: feature-map sides (e.g. `(7,)` or `(16,)`)
            that get a self-attention block after each residual block.
        num_classes: number of classes for a conditional model, or None.
        dropout: dropout rate inside the residual blocks.
        norm_groups: GroupNormalization groups; must divide every width.
            None (the default): the largest divisor of all widths up to 32
            (`default_norm_groups`), i.e. DDPM's 32 for the usual widths and
            a working value for any others (16 for `widths=(16, 32)`).
        num_heads: attention heads.
        embedding_dim: size of the time (and class) embedding; default
            `4 * widths[0]`.
        patch_size: 1, or the side p of the pixel patches the network works
            on: the input's p × p patches become channels (`SpaceToDepth`),
            every level runs at 1/p of the image's side, and the output
            convolution's p·p·C channels become pixels again
            (`DepthToSpace`). At p = 2 a 28×28 digit runs as 14×14×4, and
            the first level's side (`attention_resolutions` count in it) is 14.
        upsampling: how the decoder doubles the side between levels (one of
            `UPSAMPLING`). `"nearest_conv"` (DDPM's): nearest-neighbour ×2,
            then a 3×3 convolution at the higher resolution. `"conv_nearest"`:
            the 3×3 convolution at the lower resolution, then nearest-neighbour
            ×2 (a quarter of the multiply-adds). `"pixel_shuffle"`: a 3×3
            convolution at the lower resolution to 4× the next level's width,
            whose channels become 2×2 pixels (`DepthToSpace`), so the next
            level's blocks get its own width, not this level's.

    Example:
    >>> unet = UNet(image_shape=(8, 8, 1), widths=(8, 16), num_res_blocks=1, norm_groups=4)
    >>> tuple(unet([keras.ops.zeros((2, 8, 8, 1)), keras.ops.array([3, 999])]).shape)
    (2, 8, 8, 1)
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        widths: Sequence[int] = (64, 128, 256),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (),
        num_classes: int | None = None,
        dropout: float = 0.0,
        norm_groups: int | None = None,
        num_heads: int = 1,
        embedding_dim: int | None = None,
        patch_size: int = 1,
        upsampling: str = "nearest_conv",
        **kwargs,
    ):
        image_shape = tuple(int(d) for d in image_shape)
        widths = tuple(int(w) for w in widths)
        if norm_groups is None and widths and min(widths) >= 1:
            norm_groups = default_norm_groups(widths)
        attention_resolutions = tuple(int(r) for r in attention_resolutions)
        _check_arguments(image_shape, widths, num_res_blocks, num_classes, dropout, norm_groups, num_heads, patch_size)
        if upsampling not in UPSAMPLING:
            raise ValueError(f"`upsampling` must be one of {UPSAMPLING}; received {upsampling!r}.")
        embedding_dim = embedding_dim or 4 * widths[0]

        x_input = keras.Input(shape=image_shape, name="x_t")
        inputs, embedding = _conditioning(x_input, widths[0], embedding_dim, num_classes)
        blocks = _Blocks(embedding, dropout, norm_groups, num_heads, attention_resolutions)
        x = SpaceToDepth(patch_size, name="patches_in")(x_input) if patch_size > 1 else x_input
        x = _levels(blocks, x, widths, num_res_blocks, upsampling)
        x = GroupNormalization(norm_groups, epsilon=1e-5, name="norm_out")(x)
        x = layers.Activation("silu", name="silu_out")(x)
        outputs = layers.Conv2D(
            image_shape[-1] * patch_size**2, 3, padding="same", name="conv_out", **layer_initializers(zero_kernel=True)
        )(x)
        if patch_size > 1:
            outputs = DepthToSpace(patch_size, name="patches_out")(outputs)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)

        self.image_shape = image_shape
        self.widths = widths
        self.num_res_blocks = num_res_blocks
        self.attention_resolutions = attention_resolutions
        self.num_classes = num_classes
        self.dropout = dropout
        self.norm_groups = norm_groups
        self.num_heads = num_heads
        self.embedding_dim = embedding_dim
        self.patch_size = patch_size
        self.upsampling = upsampling

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": self.image_shape,
            "widths": self.widths,
            "num_res_blocks": self.num_res_blocks,
            "attention_resolutions": self.attention_resolutions,
            "num_classes": self.num_classes,
            "dropout": self.dropout,
            "norm_groups": self.norm_groups,
            "num_heads": self.num_heads,
            "embedding_dim": self.embedding_dim,
            "patch_size": self.patch_size,
            "upsampling": self.upsampling,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def preset(cls, name: str, **overrides) -> "UNet":
        """A U-Net from the `PRESETS` table, with any constructor argument overridden.

        The presets: `"micro"` (the main job's 0.30 M-parameter MNIST network,
        the best at about 12 minutes of a CPU; pixel-shuffle upsampling), `"tiny"` (the same at widths
        32-64-64, 1.06 M: the CLI's default, for longer runs), `"mnist"` (the
        MNIST application's, 3.9 M),
        `"cifar10"` (DDPM's CIFAR-10 network, 35.7 M) and `"cifar10_thesis"`
        (the thesis' CIFAR-10 network). Overriding `widths` without
        `norm_groups` keeps the largest group count that divides every width.

        Args:
            name: a key of `PRESETS`.
            **overrides: constructor arguments that replace the preset's, e.g.
                `image_shape` and `num_classes` for another dataset.

        Returns:
            The built U-Net.

        Example:
        >>> UNet.preset("tiny").count_params()
        1063905
        >>> UNet.preset("tiny", image_shape=(32, 32, 3), num_classes=None, widths=(24, 48)).norm_groups
        8
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown U-Net preset {name!r}; choose one of {sorted(PRESETS)}.")
        config = {**PRESETS[name], **overrides}
        if "widths" in overrides and "norm_groups" not in overrides:
            config["norm_groups"] = math.gcd(PRESETS[name]["norm_groups"], *(int(w) for w in config["widths"]))
        return cls(**config)

    @classmethod
    def mnist(cls, num_classes: int | None = 10, **kwargs) -> "UNet":
        """The MNIST application's conditional U-Net, `UNet.preset("mnist")`: 28→14→7, attention at 7×7 (3.9 M).

        Args:
            num_classes: 10 for the digits, None for an unconditional model.
            **kwargs: overrides of any constructor argument.

        Example:
        >>> UNet.mnist().count_params() > 1_000_000
        True
        """
        return cls.preset("mnist", num_classes=num_classes, **kwargs)

    @classmethod
    def cifar10(cls, num_classes: int | None = None, **kwargs) -> "UNet":
        """The DDPM paper's CIFAR-10 network, `UNet.preset("cifar10")`: 128 channels × (1, 2, 2, 2),
        attention at 16×16, dropout 0.1, 35.7 M parameters when unconditional.

        Args:
            num_classes: None (as in DDPM) or 10 for a class-conditional model.
            **kwargs: overrides of any constructor argument.
        """
        return cls.preset("cifar10", num_classes=num_classes, **kwargs)


def _conditioning(x_input, width: int, embedding_dim: int, num_classes: int | None):
    """The inputs (x_t, t[, labels]) and the embedding every residual block adds: time, plus class when conditional."""
    t_input = keras.Input(shape=(), name="t")
    inputs = [x_input, t_input]
    embedding = SinusoidalEmbedding(width, name="time_sinusoidal")(t_input)
    embedding = layers.Dense(embedding_dim, activation="silu", name="time_dense_1", **layer_initializers())(embedding)
    embedding = layers.Dense(embedding_dim, name="time_dense_2", **layer_initializers())(embedding)
    if num_classes is not None:
        label_input = keras.Input(shape=(), dtype="int32", name="labels")
        inputs.append(label_input)
        # N(0, 1) rows, as large as the time embedding: Keras' default uniform(±0.05) is 35x smaller and left a
        # conditional MNIST model near chance class accuracy after its first updates (docs/lab_notes.md).
        class_embedding = layers.Embedding(
            num_classes + 1, embedding_dim, embeddings_initializer=RandomNormal(stddev=1.0), name="class_embedding"
        )
        embedding = embedding + class_embedding(label_input)
    return inputs, embedding


class _Blocks:
    """Builds the U-Net's residual and attention blocks with their shared settings and the conditioning embedding."""

    def __init__(self, embedding, dropout, norm_groups, num_heads, attention_resolutions):
        self.embedding, self.dropout, self.norm_groups = embedding, dropout, norm_groups
        self.num_heads, self.attention_resolutions = num_heads, attention_resolutions

    def residual(self, x, filters: int, name: str):
        block = ResidualBlock(filters, dropout=self.dropout, norm_groups=self.norm_groups, name=name)
        return block([x, self.embedding])

    def attention(self, x, name: str, always: bool = False):
        if always or x.shape[1] in self.attention_resolutions:
            x = AttentionBlock(num_heads=self.num_heads, norm_groups=self.norm_groups, name=name)(x)
        return x


def _levels(blocks: _Blocks, x, widths, num_res_blocks: int, upsampling: str):
    """The encoder (keeping every block's output), the middle and the decoder with its skip connections."""
    x = layers.Conv2D(widths[0], 3, padding="same", name="conv_in", **layer_initializers())(x)
    skips = [x]
    for level, width in enumerate(widths):
        for block in range(num_res_blocks):
            x = blocks.residual(x, width, f"down_{level}_res_{block}")
            x = blocks.attention(x, f"down_{level}_attention_{block}")
            skips.append(x)
        if level < len(widths) - 1:
            downsample = layers.Conv2D(
                width, 3, strides=2, padding="same", name=f"down_{level}_downsample", **layer_initializers()
            )
            x = downsample(x)
            skips.append(x)
    x = blocks.residual(x, widths[-1], "middle_res_0")
    x = blocks.attention(x, "middle_attention", always=True)
    x = blocks.residual(x, widths[-1], "middle_res_1")
    for level in reversed(range(len(widths))):
        for block in range(num_res_blocks + 1):
            x = layers.Concatenate(name=f"up_{level}_concat_{block}")([x, skips.pop()])
            x = blocks.residual(x, widths[level], f"up_{level}_res_{block}")
            x = blocks.attention(x, f"up_{level}_attention_{block}")
        if level > 0:
            x = _upsample(x, widths[level], widths[level - 1], upsampling, name=f"up_{level}")
    return x


UPSAMPLING = ("nearest_conv", "conv_nearest", "pixel_shuffle")


def _upsample(x, width: int, next_width: int, upsampling: str, name: str):
    """Doubles the feature map's side between two decoder levels (see `UNet`'s `upsampling`)."""
    if upsampling == "nearest_conv":
        x = layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
        return layers.Conv2D(width, 3, padding="same", name=f"{name}_upsample_conv", **layer_initializers())(x)
    if upsampling == "conv_nearest":
        x = layers.Conv2D(width, 3, padding="same", name=f"{name}_upsample_conv", **layer_initializers())(x)
        return layers.UpSampling2D(2, interpolation="nearest", name=f"{name}_upsample")(x)
    x = layers.Conv2D(4 * next_width, 3, padding="same", name=f"{name}_upsample_conv", **layer_initializers())(x)
    return DepthToSpace(2, name=f"{name}_upsample")(x)


def default_norm_groups(widths: Sequence[int], at_most: int = 32) -> int:
    """The largest number of GroupNormalization groups, up to `at_most`, that divides every width.

    Example:
    >>> default_norm_groups((64, 128, 256)), default_norm_groups((16, 32)), default_norm_groups((24, 40))
    (32, 16, 8)
    """
    common = math.gcd(*(int(w) for w in widths))
    return max(d for d in range(1, min(common, at_most) + 1) if common % d == 0)


def _check_arguments(image_shape, widths, num_res_blocks, num_classes, dropout, norm_groups, num_heads, patch_size):
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"`image_shape` must be (height, width, channels); received {image_shape}.")
    if not widths or min(widths) < 1:
        raise ValueError(f"`widths` must be a non-empty sequence of positive ints; received {widths}.")
    if not isinstance(patch_size, int) or isinstance(patch_size, bool) or patch_size < 1:
        raise ValueError(f"`patch_size` must be a positive int (1: no patches); received {patch_size!r}.")
    factor = patch_size * 2 ** (len(widths) - 1)
    if image_shape[0] % factor or image_shape[1] % factor:
        raise ValueError(
            f"image_shape {image_shape[:2]} must be divisible by patch_size * 2**(len(widths)-1) = {factor} "
            f"for patches of {patch_size} and {len(widths)} resolution levels; use fewer widths, "
            "a smaller patch_size or pad the images."
        )
    bad = [w for w in widths if w % norm_groups]
    if bad:
        raise ValueError(f"norm_groups={norm_groups} must divide every width; it does not divide {bad}.")
    if num_res_blocks < 1:
        raise ValueError(f"`num_res_blocks` must be >= 1; received {num_res_blocks}.")
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"`num_classes` must be a positive int or None; received {num_classes!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1); received {dropout}.")
    if num_heads < 1:
        raise ValueError(f"`num_heads` must be >= 1; received {num_heads}.")
