"""The Inception network that FID is defined with, ported to Keras 3.

This is the 2015-12-05 TensorFlow Inception graph up to its 2048-d `pool_3`
output, following the forward code of the public PyTorch port (TorchScript
`inception-2015-12-05.pt`, StyleGAN2-ADA / EDM metrics) layer by layer, NHWC.
It is *not* `keras.applications.InceptionV3`: the 2015 graph differs in
details (average pools that exclude padding, a max pool in the last block's
pool branch, batch norm without scale) and FID is only comparable with it.

Layer names are the port's parameter prefixes without `net.layers.`
(`mixed_4.tower_1.conv_2`), which is how `load_inception_weights` maps them.
"""

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_diffusion.data.images import as_uint8_images
from keras_diffusion.metrics.inception_weights import resolve_weights_path
from keras_diffusion.runtime.compilation import compile_function

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
BATCH_NORM_EPSILON = 1e-3
NPZ_PREFIX = "net.layers."


@keras.saving.register_keras_serializable(package="keras_diffusion")
class ConvBatchNormReLU(keras.layers.Layer):
    """Convolution without bias, batch norm with gamma = 1 (inference form), ReLU.

    Computes `relu((conv(pad(x), kernel) - mean) / sqrt(var + epsilon) + beta)`,
    the port's `Conv2dLayer`, with the norm folded into the kernel and one bias
    (`kernel · s`, `beta - mean · s` for `s = 1 / sqrt(var + epsilon)`).
    Padding is explicit zero padding so that the asymmetric `(0, 3)` /
    `(3, 0)` pairs of the 1x7 and 7x1 kernels are exact.

    Args:
        filters: output channels.
        kernel_size: `(kh, kw)` or an int.
        strides: convolution stride (same in both directions).
        padding: zero padding per side, an int or a pair `(ph, pw)`.
        epsilon: added to the variance, 0.001 in the 2015 graph.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Returns:
        A layer mapping `(N, H, W, C_in)` to `(N, H', W', filters)`.

    Example:
    >>> layer = ConvBatchNormReLU(8, (1, 7), padding=(0, 3))
    >>> tuple(layer(np.zeros((1, 5, 5, 4), "float32")).shape)
    (1, 5, 5, 8)
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int = 1,
        padding: int | Sequence[int] = 0,
        epsilon: float = BATCH_NORM_EPSILON,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = int(strides)
        self.padding = _pair(padding, "padding")
        self.epsilon = float(epsilon)
        if self.filters < 1 or min(self.kernel_size) < 1 or self.strides < 1 or min(self.padding) < 0:
            raise ValueError(
                f"Invalid ConvBatchNormReLU arguments: filters={filters}, "
                f"kernel_size={kernel_size}, strides={strides}, padding={padding}."
            )

    def build(self, input_shape: tuple) -> None:
        channels = int(input_shape[-1])
        # Zeros, not random: the layer is meaningless until weights are loaded,
        # and random initialisation of 22 M numbers costs ~20 s on JAX/CPU.
        self.kernel = self.add_weight(
            name="kernel", shape=(*self.kernel_size, channels, self.filters), initializer="zeros"
        )
        self.beta = self.add_weight(name="beta", shape=(self.filters,), initializer="zeros")
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=(self.filters,), initializer="zeros", trainable=False
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=(self.filters,), initializer="ones", trainable=False
        )

    def call(self, inputs: Any) -> Any:
        pad_height, pad_width = self.padding
        if pad_height or pad_width:
            inputs = ops.pad(inputs, [[0, 0], [pad_height, pad_height], [pad_width, pad_width], [0, 0]])
        # The batch norm folded into the kernel and a bias: two passes over the activations (bias, ReLU), not four.
        scale = ops.rsqrt(self.moving_variance + self.epsilon)
        outputs = ops.conv(inputs, self.kernel * scale, strides=self.strides, padding="valid")
        return ops.relu(outputs + (self.beta - self.moving_mean * scale))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="keras_diffusion")
class AveragePoolingExcludePadding(keras.layers.Layer):
    """Stride-1 "same" average pooling whose divisor excludes the zero padding.

    PyTorch's `avg_pool2d(count_include_pad=False)`: each output is the sum of
    the in-image values of its window divided by their count (4 in a corner,
    6 on an edge, 9 inside for a 3x3 window), computed here explicitly as a
    padded sum pool divided by the padded pool of ones.

    Args:
        pool_size: odd window size.
        **kwargs: `keras.layers.Layer` arguments.

    Returns:
        A layer mapping `(N, H, W, C)` to `(N, H, W, C)`.

    Example:
    >>> x = np.ones((1, 4, 4, 1), "float32")
    >>> float(AveragePoolingExcludePadding(3)(x)[0, 0, 0, 0])
    1.0
    """

    def __init__(self, pool_size: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(pool_size) < 1 or int(pool_size) % 2 == 0:
            raise ValueError(f"pool_size must be a positive odd int; got {pool_size}.")
        self.pool_size = int(pool_size)

    def call(self, inputs: Any) -> Any:
        radius = self.pool_size // 2
        padding = [[0, 0], [radius, radius], [radius, radius], [0, 0]]
        window = self.pool_size * self.pool_size
        sums = ops.average_pool(ops.pad(inputs, padding), self.pool_size, 1, "valid") * window
        ones = ops.ones((1, ops.shape(inputs)[1], ops.shape(inputs)[2], 1), dtype=inputs.dtype)
        counts = ops.average_pool(ops.pad(ones, padding), self.pool_size, 1, "valid") * window
        return sums / counts

    def get_config(self) -> dict:
        return {**super().get_config(), "pool_size": self.pool_size}


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f"{name} must be an int or a pair; got {value}.")
    return pair


class _Builder:
    """Creates the port's layers with its names, all float32 and frozen."""

    def conv(self, x: Any, name: str, filters: int, kernel_size: Any, strides: int = 1, padding: Any = 0) -> Any:
        return ConvBatchNormReLU(
            filters, kernel_size, strides, padding, name=name, dtype="float32", trainable=False
        )(x)

    def max_pool(self, x: Any, name: str, strides: int = 2, padding: str = "valid") -> Any:
        return keras.layers.MaxPooling2D(3, strides, padding=padding, name=name, dtype="float32")(x)

    def avg_pool(self, x: Any, name: str) -> Any:
        return AveragePoolingExcludePadding(3, name=name, dtype="float32")(x)

    def concat(self, pieces: list, name: str) -> Any:
        return keras.layers.Concatenate(axis=-1, name=name, dtype="float32")(pieces)

    def inception_a(self, x: Any, name: str, pool_filters: int) -> Any:
        branch_1x1 = self.conv(x, f"{name}.conv", 64, 1)
        tower = self.conv(x, f"{name}.tower.conv", 48, 1)
        tower = self.conv(tower, f"{name}.tower.conv_1", 64, 5, padding=2)
        tower_1 = self.conv(x, f"{name}.tower_1.conv", 64, 1)
        tower_1 = self.conv(tower_1, f"{name}.tower_1.conv_1", 96, 3, padding=1)
        tower_1 = self.conv(tower_1, f"{name}.tower_1.conv_2", 96, 3, padding=1)
        tower_2 = self.avg_pool(x, f"{name}.tower_2.pool")
        tower_2 = self.conv(tower_2, f"{name}.tower_2.conv", pool_filters, 1)
        return self.concat([branch_1x1, tower, tower_1, tower_2], name)

    def inception_b(self, x: Any, name: str) -> Any:
        branch_3x3 = self.conv(x, f"{name}.conv", 384, 3, strides=2)
        tower = self.conv(x, f"{name}.tower.conv", 64, 1)
        tower = self.conv(tower, f"{name}.tower.conv_1", 96, 3, padding=1)
        tower = self.conv(tower, f"{name}.tower.conv_2", 96, 3, strides=2)
        pool = self.max_pool(x, f"{name}.pool")
        return self.concat([branch_3x3, tower, pool], name)

    def inception_c(self, x: Any, name: str, channels_7x7: int) -> Any:
        c7 = channels_7x7
        branch_1x1 = self.conv(x, f"{name}.conv", 192, 1)
        tower = self.conv(x, f"{name}.tower.conv", c7, 1)
        tower = self.conv(tower, f"{name}.tower.conv_1", c7, (1, 7), padding=(0, 3))
        tower = self.conv(tower, f"{name}.tower.conv_2", 192, (7, 1), padding=(3, 0))
        tower_1 = self.conv(x, f"{name}.tower_1.conv", c7, 1)
        tower_1 = self.conv(tower_1, f"{name}.tower_1.conv_1", c7, (7, 1), padding=(3, 0))
        tower_1 = self.conv(tower_1, f"{name}.tower_1.conv_2", c7, (1, 7), padding=(0, 3))
        tower_1 = self.conv(tower_1, f"{name}.tower_1.conv_3", c7, (7, 1), padding=(3, 0))
        tower_1 = self.conv(tower_1, f"{name}.tower_1.conv_4", 192, (1, 7), padding=(0, 3))
        tower_2 = self.avg_pool(x, f"{name}.tower_2.pool")
        tower_2 = self.conv(tower_2, f"{name}.tower_2.conv", 192, 1)
        return self.concat([branch_1x1, tower, tower_1, tower_2], name)

    def inception_d(self, x: Any, name: str) -> Any:
        tower = self.conv(x, f"{name}.tower.conv", 192, 1)
        tower = self.conv(tower, f"{name}.tower.conv_1", 320, 3, strides=2)
        tower_1 = self.conv(x, f"{name}.tower_1.conv", 192, 1)
        tower_1 = self.conv(tower_1, f"{name}.tower_1.conv_1", 192, (1, 7), padding=(0, 3))
        tower_1 = self.conv(tower_1, f"{name}.tower_1.conv_2", 192, (7, 1), padding=(3, 0))
        tower_1 = self.conv(tower_1, f"{name}.tower_1.conv_3", 192, 3, strides=2)
        pool = self.max_pool(x, f"{name}.pool")
        return self.concat([tower, tower_1, pool], name)

    def inception_e(self, x: Any, name: str, max_pool_branch: bool) -> Any:
        branch_1x1 = self.conv(x, f"{name}.conv", 320, 1)
        a = self.conv(x, f"{name}.tower_conv", 384, 1)
        a_1x3 = self.conv(a, f"{name}.tower_mixed_conv", 384, (1, 3), padding=(0, 1))
        a_3x1 = self.conv(a, f"{name}.tower_mixed_conv_1", 384, (3, 1), padding=(1, 0))
        b = self.conv(x, f"{name}.tower_1_conv", 448, 1)
        b = self.conv(b, f"{name}.tower_1_conv_1", 384, 3, padding=1)
        b_1x3 = self.conv(b, f"{name}.tower_1_mixed_conv", 384, (1, 3), padding=(0, 1))
        b_3x1 = self.conv(b, f"{name}.tower_1_mixed_conv_1", 384, (3, 1), padding=(1, 0))
        if max_pool_branch:
            # The 2015 graph's last block pools with a max, not an average.
            pool = self.max_pool(x, f"{name}.tower_2_pool", strides=1, padding="same")
        else:
            pool = self.avg_pool(x, f"{name}.tower_2_pool")
        pool = self.conv(pool, f"{name}.tower_2_conv", 192, 1)
        return self.concat([branch_1x1, a_1x3, a_3x1, b_1x3, b_3x1, pool], name)


def build_inception_network(name: str = "inception_2015_12_05") -> keras.Model:
    """Builds the FID Inception network (random weights) as a functional model.

    Args:
        name: the model's name.

    Returns:
        A frozen float32 `keras.Model` mapping `(N, 299, 299, 3)` images with
        values `uint8 / 128 - 1` to `(N, 2048)` pool_3 features. Load weights
        with `load_inception_weights`.

    Example:
    >>> network = build_inception_network()
    >>> network.output_shape
    (None, 2048)
    """
    build = _Builder()
    inputs = keras.Input((INCEPTION_SIZE, INCEPTION_SIZE, 3), dtype="float32", name="images")
    x = build.conv(inputs, "conv", 32, 3, strides=2)
    x = build.conv(x, "conv_1", 32, 3)
    x = build.conv(x, "conv_2", 64, 3, padding=1)
    x = build.max_pool(x, "pool0")
    x = build.conv(x, "conv_3", 80, 1)
    x = build.conv(x, "conv_4", 192, 3)
    x = build.max_pool(x, "pool1")
    x = build.inception_a(x, "mixed", pool_filters=32)
    x = build.inception_a(x, "mixed_1", pool_filters=64)
    x = build.inception_a(x, "mixed_2", pool_filters=64)
    x = build.inception_b(x, "mixed_3")
    x = build.inception_c(x, "mixed_4", channels_7x7=128)
    x = build.inception_c(x, "mixed_5", channels_7x7=160)
    x = build.inception_c(x, "mixed_6", channels_7x7=160)
    x = build.inception_c(x, "mixed_7", channels_7x7=192)
    x = build.inception_d(x, "mixed_8")
    x = build.inception_e(x, "mixed_9", max_pool_branch=False)
    x = build.inception_e(x, "mixed_10", max_pool_branch=True)
    # pool2: an 8x8 average pool with stride 8 over the 8x8 map, i.e. global.
    x = keras.layers.AveragePooling2D(8, 8, name="pool2", dtype="float32")(x)
    outputs = keras.layers.Flatten(name="pool_3", dtype="float32")(x)
    network = keras.Model(inputs, outputs, name=name)
    network.trainable = False
    return network


def load_inception_weights(network: keras.Model, path: str | os.PathLike) -> None:
    """Loads an `.npz` in the PyTorch port's layout into `build_inception_network()`.

    Convolution kernels are transposed from PyTorch OIHW to Keras HWIO. Every
    array of the file must be used and every layer must be found, with
    matching shapes.

    Args:
        network: the model returned by `build_inception_network`.
        path: the `.npz` file.

    Returns:
        None.

    Raises:
        ValueError: on missing, unused or mis-shaped arrays.

    Example:
    >>> load_inception_weights(build_inception_network(), resolve_weights_path())  # doctest: +SKIP
    """
    with np.load(os.fspath(path), allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    unused = set(arrays)
    for layer in network.layers:
        if not isinstance(layer, ConvBatchNormReLU):
            continue
        prefix = NPZ_PREFIX + layer.name
        values = []
        for variable, suffix, transpose in (
            (layer.kernel, "weight", (2, 3, 1, 0)),
            (layer.beta, "beta", None),
            (layer.moving_mean, "mean", None),
            (layer.moving_variance, "var", None),
        ):
            key = f"{prefix}.{suffix}"
            if key not in arrays:
                raise ValueError(f"{path}: missing array {key!r}.")
            value = arrays[key] if transpose is None else np.transpose(arrays[key], transpose)
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{path}: {key} has shape {arrays[key].shape}; the layer expects "
                    f"{tuple(variable.shape)} (after OIHW -> HWIO for kernels)."
                )
            values.append(value.astype(np.float32))
            unused.discard(key)
        for variable, value in zip((layer.kernel, layer.beta, layer.moving_mean, layer.moving_variance), values):
            variable.assign(value)
    if unused:
        raise ValueError(f"{path}: {len(unused)} arrays match no layer, e.g. {sorted(unused)[:3]}.")


class InceptionFeatures:
    """2048-d pool_3 features of the FID Inception network, from any images.

    A callable `images -> features`, the feature extractor that `FID` and
    `KID` use by default. Each batch goes through exactly one path:

    1. validate `(N, H, W, C)`, `C` in {1, 3}; quantise floats in [0, 1] to
       `uint8` with `clip(round(x * 255), 0, 255)` so generated images are
       treated like real ones saved as PNG;
    2. cast to float32 and, unless already 299x299, resize with
       `keras.ops.image.resize(..., (299, 299), interpolation="bilinear",
       antialias=False)`: half-pixel centres, no antialiasing, on the float
       values, not re-quantised. This is the resize of the StyleGAN2-ADA/EDM
       TorchScript detector (`F.interpolate(mode="bilinear",
       align_corners=False)`); it is not clean-fid's PIL bicubic resize, and
       FIDs computed with different resizes are not comparable;
    3. repeat grayscale to 3 channels (after the resize, which acts per channel);
    4. scale to `uint8 / 128 - 1` and run the network.

    Batches are padded to `batch_size` so that one compiled function serves
    every batch of a given image size.

    Args:
        weights: path to the `.npz` weights, or `None` to use
            `$KERAS_DIFFUSION_FID_WEIGHTS`, then the cached conversion in
            `~/.keras/keras_diffusion/`, then a download + conversion (needs
            PyTorch). Never replaced by other weights.
        batch_size: images per forward pass.

    Returns:
        A callable `features(images, batch_size=None) -> np.ndarray` of shape
        `(N, 2048)`, float32.

    Example:
    >>> extractor = InceptionFeatures()  # doctest: +SKIP
    >>> extractor(np.zeros((2, 28, 28, 1), "uint8")).shape  # doctest: +SKIP
    (2, 2048)
    """

    name = "inception-2015-12-05"
    resize = "bilinear299"
    feature_dim = FEATURE_DIM

    def __init__(self, weights: str | os.PathLike | None = None, batch_size: int = 50) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        self.weights = None if weights is None else os.fspath(weights)
        self.batch_size = int(batch_size)
        self.weights_path = resolve_weights_path(self.weights)
        self.network = build_inception_network()
        load_inception_weights(self.network, self.weights_path)
        self._compiled_forward: dict[tuple[int, ...], Any] = {}

    def _forward_for(self, image_shape: tuple[int, ...]) -> Any:
        """One compiled function per input `(H, W, C)`: the resize and channel
        repeat are decided from these static sizes, never from traced shapes
        (which `tf.function` may relax to `None`)."""
        if image_shape not in self._compiled_forward:
            height, width, channels = image_shape

            def forward(trainable: list, non_trainable: list, images_uint8: Any) -> Any:
                images = ops.cast(images_uint8, "float32")
                if (height, width) != (INCEPTION_SIZE, INCEPTION_SIZE):
                    images = ops.image.resize(
                        images, (INCEPTION_SIZE, INCEPTION_SIZE), interpolation="bilinear", antialias=False
                    )
                if channels == 1:
                    images = ops.repeat(images, 3, axis=-1)
                features, _ = self.network.stateless_call(
                    trainable, non_trainable, images / 128.0 - 1.0, training=False
                )
                return features

            self._compiled_forward[image_shape] = compile_function(forward)
        return self._compiled_forward[image_shape]

    def __call__(self, images: Any, batch_size: int | None = None) -> np.ndarray:
        """Features of `images`, `(N, H, W, C)` uint8 or floats in [0, 1]."""
        return self.features(images, batch_size=batch_size)

    def features(self, images: Any, batch_size: int | None = None) -> np.ndarray:
        """Returns the `(N, 2048)` float32 pool_3 features of `images`.

        Args:
            images: `(N, H, W, C)`, `C` in {1, 3}, uint8 or floats in [0, 1].
            batch_size: images per forward pass; defaults to the constructor's.

        Returns:
            A float32 numpy array of shape `(N, 2048)`.

        Example:
        >>> InceptionFeatures().features(np.zeros((1, 8, 8, 3), "uint8")).shape  # doctest: +SKIP
        (1, 2048)
        """
        batch_size = self.batch_size if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        images = np.asarray(images)
        as_uint8_images(images[:0] if images.ndim else images)  # Rank and channels, before any work.
        trainable = [variable.value for variable in self.network.trainable_variables]
        non_trainable = [variable.value for variable in self.network.non_trainable_variables]
        features = np.empty((len(images), FEATURE_DIM), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            batch = as_uint8_images(images[start : start + batch_size])
            count = len(batch)
            if count < batch_size:
                padding = np.zeros((batch_size - count, *batch.shape[1:]), dtype=np.uint8)
                batch = np.concatenate([batch, padding])
            output = self._forward_for(batch.shape[1:])(trainable, non_trainable, batch)
            features[start : start + count] = ops.convert_to_numpy(output)[:count]
        return features

    def get_config(self) -> dict:
        return {"weights": self.weights, "batch_size": self.batch_size}

    @classmethod
    def from_config(cls, config: dict) -> "InceptionFeatures":
        return cls(**config)
