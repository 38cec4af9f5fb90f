"""Operations whose fastest form differs between backends (one each, with the reason in its docstring)."""

import keras


def max_pool_2x2(x):
    """2×2 max pooling with stride 2 of a channels-last batch, the same values as `keras.ops.max_pool(x, 2, 2)`.

    On JAX the windows do not overlap, so the pooling is a reshape and a
    maximum over two axes, whose gradient XLA:CPU computes far faster than
    the select-and-scatter of a pooling window's gradient (the digit
    classifier's training step 1.7× faster). On TensorFlow that form is twice
    as slow as its pooling kernel, which is used there. The gradients differ only between exactly tied maxima (the
    reshape shares the gradient among them, the pooling kernel gives it to
    one).

    Args:
        x: tensor (batch, height, width, channels) with even height and width.

    Returns:
        The pooled tensor (batch, height / 2, width / 2, channels).

    Example:
    >>> x = keras.ops.reshape(keras.ops.arange(16, dtype="float32"), (1, 4, 4, 1))
    >>> keras.ops.convert_to_numpy(max_pool_2x2(x))[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    if keras.backend.backend() != "jax":
        return keras.ops.max_pool(x, 2, 2)
    _, height, width, channels = x.shape
    windows = keras.ops.reshape(x, (-1, height // 2, 2, width // 2, 2, channels))
    return keras.ops.max(windows, axis=(2, 4))
