"""Validation, quantisation and batching of the images that metrics consume.

Real images usually arrive as `uint8` and generated ones as floats in [0, 1].
Both go through `as_uint8_images`, so a generated image is quantised exactly
like a saved PNG would be before it reaches any feature extractor.
"""

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

# Generated floats a little outside [0, 1] are clipped; anything beyond this
# margin is almost surely a [-1, 1] or [0, 255] image passed by mistake.
FLOAT_RANGE_TOLERANCE = 0.1


def as_uint8_images(images: Any) -> np.ndarray:
    """Validates a batch of images and returns it as `uint8` NHWC.

    Args:
        images: array-like of shape `(N, H, W, C)` with `C` in {1, 3}, either
            `uint8` (or another integer type with values in 0..255) or floats
            in [0, 1]. Floats are quantised as `clip(round(x * 255), 0, 255)`;
            values up to 0.1 outside [0, 1] are clipped, larger excursions
            raise.

    Returns:
        A `uint8` numpy array of shape `(N, H, W, C)`.

    Raises:
        ValueError: on a wrong rank, channel count, dtype or value range.

    Example:
    >>> as_uint8_images(np.full((2, 4, 4, 1), 0.5, "float32"))[0, 0, 0, 0]
    np.uint8(128)
    """
    array = np.asarray(images)
    if array.ndim != 4:
        raise ValueError(
            "Expected images of shape (N, H, W, C) with C in {1, 3}; "
            f"got an array of shape {array.shape}."
        )
    if array.shape[-1] not in (1, 3):
        raise ValueError(
            "Expected 1 (grayscale) or 3 (RGB) channels in the last axis; "
            f"got shape {array.shape}."
        )
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        if array.size and (array.min() < 0 or array.max() > 255):
            raise ValueError(
                "Integer images must have values in 0..255; got range "
                f"[{array.min()}, {array.max()}]."
            )
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if array.size == 0:
            return array.astype(np.uint8)
        if not np.all(np.isfinite(array)):
            raise ValueError("Float images contain NaN or infinite values.")
        low, high = float(array.min()), float(array.max())
        if low < -FLOAT_RANGE_TOLERANCE or high > 1.0 + FLOAT_RANGE_TOLERANCE:
            raise ValueError(
                f"Float images must be in [0, 1]; got range [{low:.4g}, {high:.4g}]. "
                "Pass [0, 255] data as uint8 and map [-1, 1] data with (x + 1) / 2."
            )
        return np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    raise ValueError(f"Images must be uint8, integer or float; got dtype {array.dtype}.")


def _images_of_element(element: Any) -> np.ndarray:
    """The image part of one element of a dataset or iterable."""
    if isinstance(element, dict):
        for key in ("images", "image"):
            if key in element:
                return np.asarray(element[key])
        raise ValueError(
            f"Dataset elements that are dicts need an 'images' or 'image' key; got {sorted(element)}."
        )
    if isinstance(element, (tuple, list)):
        # (images, labels) pairs as yielded by supervised tf.data pipelines.
        return np.asarray(element[0])
    return np.asarray(element)


def iterate_image_batches(
    data: Any, batch_size: int, num_samples: int | None = None
) -> Iterator[np.ndarray]:
    """Yields batches of exactly `batch_size` images (the last may be shorter).

    Args:
        data: an array `(N, H, W, C)`, a `tf.data.Dataset` or any iterable
            whose elements are image batches `(B, H, W, C)`, single images
            `(H, W, C)`, `(images, labels)` tuples or dicts with an `"images"`
            or `"image"` key.
        batch_size: images per yielded batch.
        num_samples: stop after this many images. `None` takes all of them
            (so an endless, repeated dataset needs a number).

    Returns:
        An iterator over numpy arrays in the dtype of the data.

    Raises:
        ValueError: when `data` holds fewer than `num_samples` images.

    Example:
    >>> [len(b) for b in iterate_image_batches(np.zeros((5, 2, 2, 1)), 2)]
    [2, 2, 1]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
    if num_samples is not None and num_samples < 0:
        raise ValueError(f"num_samples must be >= 0 or None; got {num_samples}.")
    if hasattr(data, "shape") and hasattr(data, "__getitem__"):
        yield from _iterate_array(data, batch_size, num_samples)
        return
    if hasattr(data, "as_numpy_iterator"):
        data = data.as_numpy_iterator()
    if not isinstance(data, Iterable):
        raise ValueError(f"Cannot read images from an object of type {type(data).__name__}.")

    pending: list[np.ndarray] = []
    pending_count = 0
    seen = 0
    for element in data:
        images = _images_of_element(element)
        if images.ndim == 3:
            images = images[None]
        if num_samples is not None:
            images = images[: num_samples - seen]
        seen += len(images)
        pending.append(images)
        pending_count += len(images)
        while pending_count >= batch_size:
            merged = np.concatenate(pending)
            yield merged[:batch_size]
            pending = [merged[batch_size:]]
            pending_count -= batch_size
        if num_samples is not None and seen >= num_samples:
            break
    if num_samples is not None and seen < num_samples:
        raise ValueError(f"The data holds only {seen} images; num_samples={num_samples} were requested.")
    if pending_count:
        yield np.concatenate(pending)


def _iterate_array(array: Any, batch_size: int, num_samples: int | None) -> Iterator[np.ndarray]:
    total = int(array.shape[0])
    if num_samples is not None:
        if num_samples > total:
            raise ValueError(f"The data holds only {total} images; num_samples={num_samples} were requested.")
        total = num_samples
    for start in range(0, total, batch_size):
        yield np.asarray(array[start : min(start + batch_size, total)])
