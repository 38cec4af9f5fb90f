"""Building blocks of the U-Net denoiser (DDPM, Ho et al. 2020, appendix B)."""

import math

import keras
from keras import layers, ops

from keras_diffusion.runtime.replicas import draw_for_global_batch
from keras_diffusion.runtime.initializers import layer_initializers
from keras_diffusion.models.networks.normalization import GroupNormalization


@keras.saving.register_keras_serializable(package="keras_diffusion")
class SinusoidalEmbedding(layers.Layer):
    """Transformer-style sinusoidal embedding of a scalar timestep per sample.

    emb(t)_i = sin(t · f_i) for the first half and cos(t · f_i) for the second,
    with f_i = exp(-log(max_period) · i / (dim/2)) (Vaswani et al. 2017).

    Args:
        dim: output size, even.
        max_period: the longest wavelength.

    Example:
    >>> tuple(SinusoidalEmbedding(8)(keras.ops.array([0.0, 10.0])).shape)
    (2, 8)
    """

    def __init__(self, dim: int, max_period: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        if dim < 2 or dim % 2:
            raise ValueError(f"`dim` must be an even integer >= 2; received dim={dim}.")
        self.dim = dim
        self.max_period = max_period

    def call(self, t):
        half = self.dim // 2
        frequencies = ops.exp(-math.log(self.max_period) * ops.arange(half, dtype="float32") / half)
        angles = ops.cast(ops.reshape(t, (-1, 1)), "float32") * frequencies[None, :]
        return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.dim)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "max_period": self.max_period}


@keras.saving.register_keras_serializable(package="keras_diffusion")
class GlobalBatchDropout(layers.Layer):
    """Inverted dropout whose mask is drawn for the global batch, as one device draws it.

    Keras' `Dropout` draws a mask of `inputs`' shape, this replica's rows
    only. Under `tf.distribute` every replica has the same seed state, so every
    replica would drop the same units for different examples. This layer draws the
    mask with `draw_for_global_batch`, so with data parallelism each example
    gets the mask a single device would give it. On one device (and on JAX)
    the mask is the one `keras.layers.Dropout` draws from the same seed state.

    Args:
        rate: fraction of the units to drop, in [0, 1).
        seed: seed of the mask; None for a random one.

    Call args:
        inputs: a tensor whose first axis is the batch.
        training: drops units only when truthy.

    Returns:
        `inputs` with each unit zeroed with probability `rate` and the rest
        scaled by 1 / (1 - rate), so the expected value is unchanged;
        `inputs` itself at inference or when `rate` is 0.

    Example:
    >>> dropout = GlobalBatchDropout(0.5, seed=0)
    >>> tuple(dropout(keras.ops.ones((2, 3)), training=True).shape)
    (2, 3)
    >>> float(keras.ops.sum(dropout(keras.ops.ones((2, 3)))))
    6.0
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1); received rate={rate}.")
        self.rate = rate
        self.seed = seed
        # As keras.layers.Dropout: no seed generator at rate 0, so seed states saved by U-Nets built on Dropout restore.
        if rate > 0:
            self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        # keras.random.dropout of ones is the mask with its 1 / (1 - rate) scale, drawn as Dropout draws it.
        mask = draw_for_global_batch(
            lambda n: keras.random.dropout(
                ops.ones((n,) + tuple(ops.shape(inputs)[1:]), dtype=inputs.dtype), self.rate, seed=self.seed_generator
            ),
            ops.shape(inputs)[0],
        )
        return inputs * mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class _BlockLayer(layers.Layer):
    """What `SpaceToDepth` and `DepthToSpace` share: the patch side and its check."""

    def __init__(self, block_size: int, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(block_size, int) or isinstance(block_size, bool) or block_size < 1:
            raise ValueError(f"`block_size` must be a positive int; received {block_size!r}.")
        self.block_size = block_size

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


@keras.saving.register_keras_serializable(package="keras_diffusion")
class SpaceToDepth(_BlockLayer):
    """Moves each `block_size` × `block_size` patch of pixels into the channels (a "pixel unshuffle").

    (B, H, W, C) → (B, H/b, W/b, b·b·C); output channel (i·b + j)·C + c holds
    input pixel (b·y + i, b·x + j) of channel c, the order of `tf.nn.space_to_depth`.
    A U-Net that starts with it runs every layer on a quarter of the positions
    (b = 2) with four times the channels per position, which a CPU's vector
    units fill better than 16 channels at full resolution.

    Args:
        block_size: patch side b; H and W must be divisible by it.

    Example:
    >>> x = keras.ops.reshape(keras.ops.arange(16.0), (1, 4, 4, 1))
    >>> keras.ops.convert_to_numpy(SpaceToDepth(2)(x))[0, 0, 0].tolist()
    [0.0, 1.0, 4.0, 5.0]
    """

    def call(self, inputs):
        b = self.block_size
        _, height, width, channels = inputs.shape
        x = ops.reshape(inputs, (-1, height // b, b, width // b, b, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, height // b, width // b, b * b * channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        b = self.block_size
        return (batch, height // b, width // b, b * b * channels)


@keras.saving.register_keras_serializable(package="keras_diffusion")
class DepthToSpace(_BlockLayer):
    """The inverse of `SpaceToDepth`: (B, H, W, b·b·C) → (B, b·H, b·W, C).

    Args:
        block_size: patch side b; the channels must be divisible by b·b.

    Example:
    >>> x = keras.ops.reshape(keras.ops.arange(16.0), (1, 4, 4, 1))
    >>> bool(keras.ops.all(DepthToSpace(2)(SpaceToDepth(2)(x)) == x))
    True
    """

    def call(self, inputs):
        b = self.block_size
        _, height, width, depth = inputs.shape
        x = ops.reshape(inputs, (-1, height, width, b, b, depth // (b * b)))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, height * b, width * b, depth // (b * b)))

    def compute_output_shape(self, input_shape):
        batch, height, width, depth = input_shape
        b = self.block_size
        return (batch, height * b, width * b, depth // (b * b))


@keras.saving.register_keras_serializable(package="keras_diffusion")
class ResidualBlock(layers.Layer):
    """GroupNorm → SiLU → conv, plus the projected time embedding, twice, with a skip.

    Args:
        filters: output channels.
        dropout: dropout rate before the second convolution; the mask is
            drawn for the global batch (`GlobalBatchDropout`).
        norm_groups: groups of the GroupNormalization layers.

    Call args:
        inputs: `[x, embedding]`, x of shape (B, H, W, C), embedding (B, E).

    Example:
    >>> block = ResidualBlock(8, norm_groups=4)
    >>> tuple(block([keras.ops.ones((1, 4, 4, 4)), keras.ops.ones((1, 16))]).shape)
    (1, 4, 4, 8)
    """

    def __init__(self, filters: int, dropout: float = 0.0, norm_groups: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.dropout = dropout
        self.norm_groups = norm_groups
        self.norm1 = GroupNormalization(norm_groups, epsilon=1e-5, activation="silu", dtype=self.dtype_policy)
        self.conv1 = layers.Conv2D(filters, 3, padding="same", dtype=self.dtype_policy, **layer_initializers())
        self.embedding_projection = layers.Dense(filters, dtype=self.dtype_policy, **layer_initializers())
        self.norm2 = GroupNormalization(norm_groups, epsilon=1e-5, activation="silu", dtype=self.dtype_policy)
        self.dropout_layer = GlobalBatchDropout(dropout, dtype=self.dtype_policy)
        # Zero-initialised so that every block starts as the identity (DDPM's zero_module).
        self.conv2 = layers.Conv2D(
            filters, 3, padding="same", dtype=self.dtype_policy, **layer_initializers(zero_kernel=True)
        )
        self.shortcut = None

    def build(self, input_shape):
        x_shape, embedding_shape = input_shape
        self.norm1.build(x_shape)
        self.conv1.build(x_shape)
        self.embedding_projection.build(embedding_shape)
        hidden_shape = tuple(x_shape[:-1]) + (self.filters,)
        self.norm2.build(hidden_shape)
        self.dropout_layer.build(hidden_shape)
        self.conv2.build(hidden_shape)
        if x_shape[-1] != self.filters:
            self.shortcut = layers.Conv2D(self.filters, 1, dtype=self.dtype_policy, **layer_initializers())
            self.shortcut.build(x_shape)

    def call(self, inputs, training=None):
        x, embedding = inputs
        h = self.conv1(self.norm1(x))  # the norms apply the SiLU (in float32)
        h = h + self.embedding_projection(ops.silu(embedding))[:, None, None, :]
        h = self.dropout_layer(self.norm2(h), training=training)
        h = self.conv2(h)
        return self._skip(x) + h

    def _skip(self, x):
        """x, or its 1x1 projection to `filters` channels.

        The projection is the `shortcut` Conv2D's own kernel and bias applied
        as a matmul over the channel axis: the same function and variables,
        but a 1x1 convolution's gradient is a slow windowed convolution on
        XLA:CPU (and oneDNN is slower at it too), where a matmul's is a plain
        matmul (benchmarks/jax_cpu_profile.py, "conv1x1" rows).
        """
        if self.shortcut is None:
            return x
        kernel = ops.reshape(self.shortcut.kernel, self.shortcut.kernel.shape[-2:])  # (1, 1, in, out) -> (in, out)
        return ops.matmul(x, kernel) + self.shortcut.bias

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0][:-1]) + (self.filters,)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "dropout": self.dropout,
            "norm_groups": self.norm_groups,
        }


@keras.saving.register_keras_serializable(package="keras_diffusion")
class AttentionBlock(layers.Layer):
    """Multi-head self-attention over the H·W positions, with a residual connection.

    Args:
        num_heads: attention heads; the channel count must be divisible by it.
        norm_groups: groups of the GroupNormalization before attention.

    Example:
    >>> tuple(AttentionBlock(num_heads=2, norm_groups=4)(keras.ops.ones((1, 4, 4, 8))).shape)
    (1, 4, 4, 8)
    """

    def __init__(self, num_heads: int = 1, norm_groups: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.norm_groups = norm_groups
        self.norm = GroupNormalization(norm_groups, epsilon=1e-5, dtype=self.dtype_policy)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.num_heads:
            raise ValueError(
                f"AttentionBlock: {channels} channels are not divisible by num_heads={self.num_heads}."
            )
        self.norm.build(input_shape)
        self.qkv = layers.Dense(3 * channels, dtype=self.dtype_policy, **layer_initializers())
        self.qkv.build(input_shape)
        self.projection = layers.Dense(channels, dtype=self.dtype_policy, **layer_initializers(zero_kernel=True))
        self.projection.build(input_shape)

    def call(self, x):
        batch, height, width, channels = ops.shape(x)
        head_dim = channels // self.num_heads
        qkv = ops.reshape(self.qkv(self.norm(x)), (batch, height * width, 3 * channels))
        # `split`, not indexing: on TensorFlow the gradient of a strided slice is a zero-filled
        # full-size tensor per part, which made the block's backward pass 2x slower.
        query, key, value = (
            ops.reshape(part, (batch, height * width, self.num_heads, head_dim))
            for part in ops.split(qkv, 3, axis=-1)
        )
        attended = ops.dot_product_attention(query, key, value)
        attended = ops.reshape(attended, (batch, height, width, channels))
        return x + self.projection(attended)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "norm_groups": self.norm_groups}
