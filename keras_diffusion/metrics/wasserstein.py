"""Wasserstein-1 distance between the pixel-intensity distributions of two image sets.

An auxiliary metric, cheap and Inception-free, but blind to structure: it only
compares how often each intensity occurs. Two sets with identical histograms
(e.g. a set and a pixel-shuffled copy of it) are at distance 0.
"""

from typing import Any

import numpy as np
import scipy.stats

INTENSITY_LEVELS = np.arange(256) / 255.0


def intensity_histogram(images: Any) -> np.ndarray:
    """Counts of each of the 256 intensity levels over all pixels and channels.

    Args:
        images: any-shaped array of uint8 values, or of floats in [0, 1]
            (quantised like FID inputs: `clip(round(x * 255), 0, 255)`).

    Returns:
        A `(256,)` int64 array of counts.

    Example:
    >>> intensity_histogram(np.array([0.0, 1.0, 1.0]))[[0, 255]].tolist()
    [1, 2]
    """
    array = np.asarray(images)
    if array.size == 0:
        raise ValueError("Cannot compute an intensity histogram of an empty image set.")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"Images must be uint8 or floats in [0, 1]; got dtype {array.dtype}.")
        if not np.all(np.isfinite(array)):
            raise ValueError("Images contain NaN or infinite values.")
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    return np.bincount(array.ravel(), minlength=256).astype(np.int64)


def wasserstein_distance(real_images: Any, generated_images: Any) -> float:
    """Earth mover's distance between the pixel intensities of two image sets.

    Compares the 1-D empirical distribution of *all* pixel values (every
    image, position and channel, on the [0, 1] intensity scale) of the real
    set with that of the generated set, with `scipy.stats.wasserstein_distance`.
    The two sets may have different sizes: each is weighted as a probability
    distribution, and neither is truncated to the other's length (truncating
    discards data and changes the result). Computed exactly from the two
    256-bin histograms, so memory does not grow with the number of images.

    Args:
        real_images: uint8 array, or floats in [0, 1], of any shape.
        generated_images: same conventions, any number of images.

    Returns:
        The distance in intensity units: 0 for identical histograms, 1 between
        all-black and all-white sets.

    Example:
    >>> wasserstein_distance(np.zeros((2, 4, 4, 1), "uint8"), np.ones((3, 4, 4, 1)))
    1.0
    """
    return float(
        scipy.stats.wasserstein_distance(
            INTENSITY_LEVELS,
            INTENSITY_LEVELS,
            u_weights=intensity_histogram(real_images),
            v_weights=intensity_histogram(generated_images),
        )
    )
