"""Initializers that draw their values with NumPy on the host.

Keras' built-in initializers run backend ops eagerly. On JAX each new variable
shape is a new XLA program, compiled before it runs, which made building a
U-Net with its EMA and Adam's slots take seconds. These subclasses keep the
built-ins' distributions, arguments and configs and draw the values with NumPy,
so that no program is compiled per variable shape ("First-call latency" in
docs/lab_notes.md).

Seeds work as in Keras: an integer seed gives the same values at every call; with
`seed=None` each instance draws its own integer seed from Python's `random` when
it is created (so `keras.utils.set_random_seed` makes building reproducible); a
`keras.random.SeedGenerator` advances at each call. The values differ from the
built-ins' for the same seed (another generator), not their distribution.
"""

import math

import keras
import numpy as np
from keras import ops


def _host_values(values: np.ndarray, dtype) -> "keras.KerasTensor":
    """`values` as a backend tensor of `dtype` (default `keras.config.floatx()`)."""
    return ops.convert_to_tensor(values, dtype=keras.backend.standardize_dtype(dtype))


def _generator(seed) -> np.random.Generator:
    """A NumPy generator from an integer seed or a `keras.random.SeedGenerator` (which it advances)."""
    if isinstance(seed, keras.random.SeedGenerator):
        seed = int(keras.ops.convert_to_numpy(keras.random.randint((), 0, 2**31 - 1, seed=seed)))
    return np.random.default_rng(seed)


def _fans(shape: tuple, input_axes=None, output_axes=None) -> tuple[int, int]:
    """Fan-in and fan-out of a kernel: dense (in, out), convolution (*window, in, out), or the given axes'."""
    if input_axes is not None and output_axes is not None:
        return math.prod(shape[axis] for axis in input_axes), math.prod(shape[axis] for axis in output_axes)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


@keras.saving.register_keras_serializable(package="keras_diffusion")
class Zeros(keras.initializers.Zeros):
    """`keras.initializers.Zeros`, filled on the host.

    Example:
    >>> float(keras.ops.sum(Zeros()((2, 3))))
    0.0
    """

    def __call__(self, shape, dtype=None):
        return _host_values(np.zeros(shape, "float32"), dtype)


@keras.saving.register_keras_serializable(package="keras_diffusion")
class Ones(keras.initializers.Ones):
    """`keras.initializers.Ones`, filled on the host.

    Example:
    >>> float(keras.ops.sum(Ones()((2, 3))))
    6.0
    """

    def __call__(self, shape, dtype=None):
        return _host_values(np.ones(shape, "float32"), dtype)


@keras.saving.register_keras_serializable(package="keras_diffusion")
class GlorotUniform(keras.initializers.GlorotUniform):
    """`keras.initializers.GlorotUniform` drawn with NumPy: uniform on ±√(6 / (fan_in + fan_out)).

    Args:
        seed: an integer, a `keras.random.SeedGenerator`, or None (see the module's docstring).
            One instance per variable: an instance with an integer seed repeats its values.
        **kwargs: Keras' other arguments (`input_axes` and `output_axes`, the axes whose sizes
            are the fans, in the Keras releases that have them).

    Example:
    >>> values = keras.ops.convert_to_numpy(GlorotUniform(seed=0)((3, 3, 4, 8)))
    >>> bool(abs(values).max() <= (6 / (9 * 4 + 9 * 8)) ** 0.5)
    True
    """

    def __init__(self, seed: int | keras.random.SeedGenerator | None = None, **kwargs):
        super().__init__(seed=seed, **kwargs)

    def __call__(self, shape, dtype=None):
        axes = getattr(self, "input_axes", None), getattr(self, "output_axes", None)
        fan_in, fan_out = _fans(tuple(shape), *axes)
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return _host_values(_generator(self.seed).uniform(-limit, limit, shape).astype("float32"), dtype)


@keras.saving.register_keras_serializable(package="keras_diffusion")
class RandomNormal(keras.initializers.RandomNormal):
    """`keras.initializers.RandomNormal` drawn with NumPy.

    Args:
        mean: mean of the values.
        stddev: their standard deviation.
        seed: as for `GlorotUniform`.
        **kwargs: any other argument of the installed Keras' `RandomNormal`.

    Example:
    >>> values = keras.ops.convert_to_numpy(RandomNormal(stddev=2.0, seed=0)((100_000,)))
    >>> round(float(values.std()), 1)
    2.0
    """

    def __init__(
        self, mean: float = 0.0, stddev: float = 0.05, seed: int | keras.random.SeedGenerator | None = None, **kwargs
    ):
        super().__init__(mean=mean, stddev=stddev, seed=seed, **kwargs)

    def __call__(self, shape, dtype=None):
        values = _generator(self.seed).normal(float(self.mean), float(self.stddev), shape)
        return _host_values(values.astype("float32"), dtype)


def layer_initializers(zero_kernel: bool = False) -> dict:
    """Initializer arguments for a new `Dense` or `Conv2D`: Keras' defaults, or a zero kernel, drawn on the host.

    Args:
        zero_kernel: a zero kernel (a block that starts as the identity) instead of Glorot-uniform.

    Returns:
        `kernel_initializer` and `bias_initializer` (zeros): new instances at every call, so that
        each layer draws its own values.

    Example:
    >>> layer = keras.layers.Dense(4, **layer_initializers())
    """
    return dict(kernel_initializer=Zeros() if zero_kernel else GlorotUniform(), bias_initializer=Zeros())
