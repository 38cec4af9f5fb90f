"""`ARDMNetwork`: the default network of `ARDM`, a time-conditioned residual conv net over masked pixels.

It reads the image with the not-yet-generated pixels masked out, plus the
mask, and the step t (sinusoidal embedding), and returns per-pixel logits of
every quantisation level; `keras_diffusion.models.ardm` trains and samples it.
"""

from collections.abc import Sequence

import keras
from keras import layers

from keras_diffusion.models.networks.layers import ResidualBlock, SinusoidalEmbedding
from keras_diffusion.models.networks.normalization import GroupNormalization


@keras.saving.register_keras_serializable(package="keras_diffusion")
class ARDMNetwork(keras.Model):
    """A small residual conv net giving `num_levels` logits per pixel, for `ARDM`.

    Called as `network([features, t])`: `features` (B, H, W, input_channels)
    holds the masked image and the mask (see `ARDM`), `t` (B,) the step as a
    float. The output (B, H, W, channels · num_levels) holds the logits of
    channel c at positions c·num_levels … (c+1)·num_levels − 1. A 3×3 input
    convolution, `num_blocks` residual blocks (two 3×3 convolutions each, with
    the sinusoidal embedding of t added) and a 1×1 output convolution that
    starts at zero, so an untrained model predicts uniform levels.

    Args:
        image_shape: (height, width, channels) of the images.
        num_levels: levels per value (the logits per pixel and channel).
        input_channels: channels of `features`.
        filters: channels of the hidden layers.
        num_blocks: residual blocks; the receptive field is 4·num_blocks + 3 pixels.
        norm_groups: GroupNormalization groups; must divide `filters`.

    Example:
    >>> net = ARDMNetwork((8, 8, 1), num_levels=2, input_channels=3, filters=8, num_blocks=1, norm_groups=4)
    >>> tuple(net([keras.ops.zeros((2, 8, 8, 3)), keras.ops.ones((2,))]).shape)
    (2, 8, 8, 2)
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_levels: int,
        input_channels: int,
        filters: int = 64,
        num_blocks: int = 4,
        norm_groups: int = 8,
        **kwargs,
    ):
        image_shape = tuple(int(d) for d in image_shape)
        if filters < 2 or filters % 2 or filters % norm_groups:
            raise ValueError(
                f"`filters` must be an even integer divisible by norm_groups={norm_groups}; received {filters}."
            )
        if num_blocks < 0:
            raise ValueError(f"`num_blocks` must be >= 0; received {num_blocks}.")
        features = keras.Input(shape=image_shape[:2] + (int(input_channels),), name="features")
        t = keras.Input(shape=(), name="t")
        embedding = SinusoidalEmbedding(filters, name="time_sinusoidal")(t)
        embedding = layers.Dense(4 * filters, activation="silu", name="time_dense_1")(embedding)
        embedding = layers.Dense(4 * filters, name="time_dense_2")(embedding)
        x = layers.Conv2D(filters, 3, padding="same", name="conv_in")(features)
        for block in range(num_blocks):
            x = ResidualBlock(filters, norm_groups=norm_groups, name=f"res_{block}")([x, embedding])
        x = GroupNormalization(norm_groups, epsilon=1e-5, name="norm_out")(x)
        x = layers.Activation("silu", name="silu_out")(x)
        logits = layers.Conv2D(
            image_shape[-1] * num_levels, 1, kernel_initializer="zeros", name="conv_out"
        )(x)  # fmt: skip
        super().__init__(inputs=[features, t], outputs=logits, **kwargs)
        self.image_shape = image_shape
        self.num_levels = int(num_levels)
        self.input_channels = int(input_channels)
        self.filters = int(filters)
        self.num_blocks = int(num_blocks)
        self.norm_groups = int(norm_groups)

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": self.image_shape,
            "num_levels": self.num_levels,
            "input_channels": self.input_channels,
            "filters": self.filters,
            "num_blocks": self.num_blocks,
            "norm_groups": self.norm_groups,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ------------------------------------------------------------------ the model
