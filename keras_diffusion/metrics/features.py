"""Running a feature extractor over arrays, datasets and iterables of images.

A feature extractor is any callable `images -> features` taking an `(B, H, W,
C)` batch (uint8, or floats in [0, 1]) and returning a `(B, D)` array. The
default is the FID Inception network; tests and quick experiments may inject
something cheaper. An extractor may have `name` and `resize` attributes,
which go into the keys of cached statistics.
"""

import functools
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

from keras_diffusion.data.images import iterate_image_batches
from keras_diffusion.runtime import distributed

FeatureExtractor = Callable[[np.ndarray], np.ndarray]


@functools.lru_cache(maxsize=2)
def default_feature_extractor(batch_size: int = 50) -> FeatureExtractor:
    """The shared `InceptionFeatures` instance (built and loaded once per batch size).

    Args:
        batch_size: images per forward pass.

    Returns:
        An `InceptionFeatures`.

    Example:
    >>> extractor = default_feature_extractor()  # doctest: +SKIP
    """
    from keras_diffusion.metrics.inception import InceptionFeatures

    return InceptionFeatures(batch_size=batch_size)


def extractor_identity(extractor: FeatureExtractor) -> tuple[str, str]:
    """`(name, resize)` of an extractor, used to key cached statistics.

    Args:
        extractor: a feature extractor.

    Returns:
        Its `name` (else its type's name) and its `resize` (else `"none"`).

    Example:
    >>> extractor_identity(lambda images: images)
    ('function', 'none')
    """
    name = getattr(extractor, "name", None) or type(extractor).__name__
    return str(name), str(getattr(extractor, "resize", "none"))


def iterate_features(
    data: Any, extractor: FeatureExtractor, batch_size: int = 50, num_samples: int | None = None, verbose: bool = False
) -> Iterator[np.ndarray]:
    """Yields `(B, D)` float32 feature batches of the images in `data`.

    Args:
        data: images as accepted by `iterate_image_batches`.
        extractor: a feature extractor.
        batch_size: images per call of the extractor.
        num_samples: how many images to use; `None` for all.
        verbose: show a progress bar over the images (with an ETA when their number is known).

    Returns:
        An iterator over feature batches.

    Example:
    >>> flatten = lambda images: images.reshape(len(images), -1)
    >>> [f.shape for f in iterate_features(np.zeros((3, 2, 2, 1)), flatten, 2)]
    [(2, 4), (1, 4)]
    """
    total = min(len(data), num_samples or len(data)) if hasattr(data, "__len__") else num_samples
    progress = keras.utils.Progbar(total, unit_name="image") if verbose else None
    for images in iterate_image_batches(data, batch_size, num_samples):
        features = np.asarray(extractor(images), dtype=np.float32)
        if progress is not None:
            progress.add(len(images))
        if features.ndim != 2 or len(features) != len(images):
            raise ValueError(
                f"The feature extractor returned shape {features.shape} for {len(images)} "
                "images; expected (num_images, dim)."
            )
        yield features


def extract_features(
    data: Any, extractor: FeatureExtractor, batch_size: int = 50, num_samples: int | None = None, verbose: bool = False
) -> np.ndarray:
    """All features of the images in `data`, as one `(N, D)` float32 array.

    In a multi-process run (`keras_diffusion.runtime.distributed`) every process must
    call it with the same array: each extracts the features of its share, and
    all receive all of them.

    Args:
        data: images as accepted by `iterate_image_batches`.
        extractor: a feature extractor.
        batch_size: images per call of the extractor.
        num_samples: how many images to use; `None` for all.
        verbose: show a progress bar over the images.

    Returns:
        The stacked features.

    Example:
    >>> flatten = lambda images: images.reshape(len(images), -1)
    >>> extract_features(np.zeros((3, 2, 2, 1)), flatten).shape
    (3, 4)
    """
    processes = distributed.process_count()
    if processes > 1 and isinstance(data, np.ndarray):
        count = len(data) if num_samples is None else min(num_samples, len(data))
        if (processes - 1) * -(-count // processes) < count:  # every process has at least one image
            # Every process extracts its share of the array, and all receive all the features.
            data, num_samples = data[:count][distributed.share(count)], None
            return distributed.gather_rows(_extract_all(data, extractor, batch_size, num_samples, verbose))
    return _extract_all(data, extractor, batch_size, num_samples, verbose)


def _extract_all(data, extractor, batch_size, num_samples, verbose=False):
    batches = list(iterate_features(data, extractor, batch_size, num_samples, verbose))
    if not batches:
        raise ValueError("No images were found in the data.")
    return np.concatenate(batches)
