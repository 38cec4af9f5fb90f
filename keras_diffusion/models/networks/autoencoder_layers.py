"""Building blocks of the KL autoencoder (LDM, Rombach et al. 2022; the Stable Diffusion VAE).

They mirror the blocks of the LDM/diffusers `AutoencoderKL` one to one (same
sub-layer names: `norm1`, `conv1`, `conv_shortcut`, `to_q`, ...), so that
`kd.models.StableDiffusionVAE` can load the published weights by name. Unlike
the U-Net's blocks they take no time embedding.
"""

import math

import keras
from keras import layers, ops

from keras_diffusion.models.networks.normalization import GroupNormalization


@keras.saving.register_keras_serializable(package="keras_diffusion")
class ConvResidualBlock(layers.Layer):
    """GroupNorm → SiLU → 3×3 conv, twice, plus a (1×1-projected) skip.

    Args:
        filters: output channels.
        norm_groups: groups of the two GroupNormalization layers.
        epsilon: GroupNormalization epsilon (1e-6 in LDM / Stable Diffusion).

    Example:
    >>> tuple(ConvResidualBlock(8, norm_groups=4)(keras.ops.ones((1, 4, 4, 4))).shape)
    (1, 4, 4, 8)
    """

    def __init__(self, filters: int, norm_groups: int = 32, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.norm_groups = int(norm_groups)
        self.epsilon = float(epsilon)
        self.norm1 = GroupNormalization(
            norm_groups, epsilon=epsilon, activation="silu", name="norm1", dtype=self.dtype_policy
        )
        self.conv1 = layers.Conv2D(filters, 3, padding="same", name="conv1", dtype=self.dtype_policy)
        self.norm2 = GroupNormalization(
            norm_groups, epsilon=epsilon, activation="silu", name="norm2", dtype=self.dtype_policy
        )
        self.conv2 = layers.Conv2D(filters, 3, padding="same", name="conv2", dtype=self.dtype_policy)
        self.conv_shortcut = None

    def build(self, input_shape):
        hidden_shape = tuple(input_shape[:-1]) + (self.filters,)
        self.norm1.build(input_shape)
        self.conv1.build(input_shape)
        self.norm2.build(hidden_shape)
        self.conv2.build(hidden_shape)
        if input_shape[-1] != self.filters:
            self.conv_shortcut = layers.Conv2D(self.filters, 1, name="conv_shortcut", dtype=self.dtype_policy)
            self.conv_shortcut.build(input_shape)

    def call(self, x):
        h = self.conv1(self.norm1(x))  # the norms apply the SiLU (in float32)
        h = self.conv2(self.norm2(h))
        skip = x if self.conv_shortcut is None else self.conv_shortcut(x)
        return skip + h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.filters,)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "norm_groups": self.norm_groups, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="keras_diffusion")
class SpatialSelfAttention(layers.Layer):
    """Single-head self-attention over the H·W positions with a residual (LDM's `AttnBlock`).

    Args:
        norm_groups: groups of the GroupNormalization before attention.
        epsilon: its epsilon.

    Example:
    >>> tuple(SpatialSelfAttention(norm_groups=4)(keras.ops.ones((1, 4, 4, 8))).shape)
    (1, 4, 4, 8)
    """

    def __init__(self, norm_groups: int = 32, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.norm_groups = int(norm_groups)
        self.epsilon = float(epsilon)
        self.group_norm = GroupNormalization(norm_groups, epsilon=epsilon, name="group_norm", dtype=self.dtype_policy)

    def build(self, input_shape):
        channels = input_shape[-1]
        self.group_norm.build(input_shape)
        for name in ("to_q", "to_k", "to_v", "to_out"):
            dense = layers.Dense(channels, name=name, dtype=self.dtype_policy)
            dense.build(input_shape)
            setattr(self, name, dense)

    def call(self, x):
        batch, height, width, channels = ops.shape(x)
        h = self.group_norm(x)
        query, key, value = (ops.reshape(f(h), (batch, height * width, channels)) for f in (self.to_q, self.to_k, self.to_v))
        weights = ops.softmax(ops.matmul(query, ops.transpose(key, (0, 2, 1))) / math.sqrt(int(x.shape[-1])), axis=-1)
        attended = ops.reshape(ops.matmul(weights, value), (batch, height, width, channels))
        return x + self.to_out(attended)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "norm_groups": self.norm_groups, "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="keras_diffusion")
class Downsample(layers.Layer):
    """Halves H and W: pad one row/column at the bottom/right, then a stride-2 3×3 conv.

    The asymmetric padding is LDM's (and the Stable Diffusion VAE's); it maps
    28 → 14 → 7 and 32 → 16 → 8.

    Args:
        filters: output channels.

    Example:
    >>> tuple(Downsample(4)(keras.ops.ones((1, 28, 28, 4))).shape)
    (1, 14, 14, 4)
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.conv = layers.Conv2D(filters, 3, strides=2, padding="valid", name="conv", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build((input_shape[0], None, None, input_shape[-1]))

    def call(self, x):
        return self.conv(ops.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))

    def compute_output_shape(self, input_shape):
        halve = lambda side: None if side is None else (side + 1 - 3) // 2 + 1  # noqa: E731
        return (input_shape[0], halve(input_shape[1]), halve(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package="keras_diffusion")
class Upsample(layers.Layer):
    """Doubles H and W: nearest-neighbour upsampling, then a 3×3 conv.

    Args:
        filters: output channels.

    Example:
    >>> tuple(Upsample(4)(keras.ops.ones((1, 7, 7, 4))).shape)
    (1, 14, 14, 4)
    """

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.conv = layers.Conv2D(filters, 3, padding="same", name="conv", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.conv.build((input_shape[0], None, None, input_shape[-1]))

    def call(self, x):
        return self.conv(ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2))

    def compute_output_shape(self, input_shape):
        double = lambda side: None if side is None else 2 * side  # noqa: E731
        return (input_shape[0], double(input_shape[1]), double(input_shape[2]), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}
