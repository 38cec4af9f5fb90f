"""The pieces of order-agnostic ARDM (Hoogeboom et al. 2021): pixel levels, random orders, masks and the weight
that makes one scored step an unbiased estimate of the likelihood. Each is a pure function of tensors, beside
its equation in docs/concepts/ardm.md.
"""

import keras
from keras import ops


def quantize(images, num_levels: int):
    """Maps images in [0, 1] (float) or [0, 255] (uint8) to integer levels 0..num_levels-1.

    Level k stands for the intensity k / (num_levels - 1); values are rounded
    to the nearest level, so `num_levels=2` binarises at 0.5.

    Args:
        images: a tensor or array, float in [0, 1] or uint8.
        num_levels: number of levels, >= 2.

    Returns:
        int32 tensor of the same shape.

    Example:
    >>> keras.ops.convert_to_numpy(quantize(np.array([0.0, 0.4, 0.6, 1.0]), 2)).tolist()
    [0, 0, 1, 1]
    """
    images = ops.convert_to_tensor(images)
    if keras.backend.standardize_dtype(images.dtype) == "uint8":
        images = ops.cast(images, "float32") / 255.0
    scaled = ops.cast(images, "float32") * (num_levels - 1)
    return ops.cast(ops.clip(ops.floor(scaled + 0.5), 0, num_levels - 1), "int32")


def random_ranks(uniform):
    """The rank of every dimension in a uniformly random order σ, one order per row.

    `ranks[b, k] = j` means that dimension k is the (j+1)-th to be generated,
    i.e. σ(j+1) = k. Ranking i.i.d. uniform numbers gives every permutation
    the same probability.

    Args:
        uniform: float tensor (B, D) of i.i.d. uniform numbers.

    Returns:
        int32 tensor (B, D), each row a permutation of 0..D-1.

    Example:
    >>> keras.ops.convert_to_numpy(random_ranks(keras.ops.array([[0.7, 0.1, 0.4]]))).tolist()
    [[2, 0, 1]]
    """
    return ops.cast(ops.argsort(ops.argsort(uniform, axis=-1), axis=-1), "int32")


def revealed_mask(ranks, revealed):
    """The mask of the pixels already generated: those whose rank is below `revealed`.

    At step t (1..D) of eq. 28, `revealed = t - 1`: the pixels σ(<t).

    Args:
        ranks: int tensor (B, ...) from `random_ranks`.
        revealed: int tensor (B,): how many pixels each image has revealed.

    Returns:
        bool tensor of `ranks`' shape.

    Example:
    >>> keras.ops.convert_to_numpy(revealed_mask(keras.ops.array([[2, 0, 1]]), keras.ops.array([2]))).tolist()
    [[False, True, True]]
    """
    revealed = ops.reshape(ops.cast(revealed, "int32"), (-1,) + (1,) * (len(ranks.shape) - 1))
    return ops.cast(ranks, "int32") < revealed


def likelihood_weight(t, num_dims: int):
    """The weight D / (D - t + 1) of step t in the ARDM estimator (eq. 28).

    `T · E_t[1/(T-t+1) Σ_{k∈σ(≥t)} -log p(x_k | x_σ(<t))]`: with t uniform on
    1..D the factor T (= D) and 1/(D-t+1) combine into this weight, which
    averages the D - t + 1 scored terms and rescales one step to the whole chain.

    Args:
        t: tensor (B,) of steps in 1..D.
        num_dims: D, the number of pixels (times channels).

    Returns:
        float32 tensor (B,).

    Example:
    >>> keras.ops.convert_to_numpy(likelihood_weight(keras.ops.array([1, 4]), 4)).tolist()
    [1.0, 4.0]
    """
    return num_dims / (num_dims - ops.cast(t, "float32") + 1.0)
