"""`score_images`: FID, and optionally KID and class accuracy, of generated images in one pass.

The one evaluation that `FIDCallback` and `keras-diffusion evaluate` share:
the generated images go through the feature extractor once, their statistics
are compared with the real ones (Fréchet distance), their features with the
real features (KID, when given) and their classes with the requested labels
(when a classifier is given).
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from keras_diffusion.metrics.classifier import Classifier, classification_accuracy
from keras_diffusion.metrics.features import FeatureExtractor, extract_features
from keras_diffusion.metrics.frechet import frechet_distance
from keras_diffusion.metrics.kid import kernel_inception_distance
from keras_diffusion.metrics.statistics import FeatureStatistics


def score_images(
    images: Any,
    real_statistics: FeatureStatistics,
    feature_extractor: FeatureExtractor,
    batch_size: int = 50,
    real_features: np.ndarray | None = None,
    classifier: Classifier | None = None,
    labels: Sequence[int] | None = None,
    verbose: bool = False,
) -> dict[str, float]:
    """Scores generated images against real data.

    Args:
        images: generated images (N, H, W, C), uint8 or floats in [0, 1].
        real_statistics: the real images' feature statistics (same extractor).
        feature_extractor: callable `images -> (B, D) features`.
        batch_size: images per extractor and classifier call.
        real_features: the real images' features; when given, KID is computed too.
        classifier: when given, the share of images it assigns to `labels`.
        labels: the N requested classes; required with `classifier`.
        verbose: show a progress bar while extracting the features.

    Returns:
        `{"fid": ...}`, plus `"kid"` and `"kid_std"` with `real_features`
        and `"class_accuracy"` with `classifier`.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> flatten = lambda images: np.asarray(images, "float32").reshape(len(images), -1)
    >>> real = rng.random((200, 2, 2, 1))
    >>> statistics = FeatureStatistics.from_features(flatten(real))
    >>> scores = score_images(real, statistics, flatten, real_features=flatten(real))
    >>> round(scores["fid"], 6), sorted(scores)
    (0.0, ['fid', 'kid', 'kid_std'])
    """
    if classifier is not None and labels is None:
        raise ValueError("Class accuracy needs the requested `labels`, one per image.")
    features = extract_features(images, feature_extractor, batch_size, verbose=verbose)
    generated = FeatureStatistics.from_features(features)
    results = {
        "fid": frechet_distance(
            real_statistics.mean, real_statistics.covariance, generated.mean, generated.covariance
        )
    }
    if real_features is not None:
        results["kid"], results["kid_std"] = kernel_inception_distance(real_features, features)
    if classifier is not None:
        labels = np.broadcast_to(np.asarray(labels), (len(features),))
        results["class_accuracy"] = classification_accuracy(classifier, images, labels, batch_size)
    return results
