"""Kernel Inception Distance: an unbiased MMD between feature sets.

KID (Bińkowski et al. 2018) is the squared maximum mean discrepancy with the
polynomial kernel `k(x, y) = (x . y / d + 1)^3`, estimated without bias and
averaged over random subsets. Unlike FID its expectation does not depend on
the number of samples, so small-N values are comparable; a value can be
slightly negative when the distributions match.
"""

import dataclasses
from typing import Any

import numpy as np

from keras_diffusion.metrics.features import FeatureExtractor, default_feature_extractor, extract_features


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """`k(x, y) = (x . y / d + 1)^3` for all pairs of rows.

    Args:
        x: `(n, d)` features.
        y: `(m, d)` features.

    Returns:
        The `(n, m)` kernel matrix.

    Example:
    >>> polynomial_kernel(np.ones((1, 2)), np.ones((1, 2))).tolist()
    [[8.0]]
    """
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of MMD^2 between the samples `x` and `y` (equal sizes).

    `1/(n(n-1)) sum_{i!=j} [k(x_i, x_j) + k(y_i, y_j)] - 2/n^2 sum_{i,j} k(x_i, y_j)`,
    Gretton et al. 2012, eq. 3 (the diagonal terms are what the biased
    estimator adds).

    Args:
        x: `(n, d)` features, `n >= 2`.
        y: `(n, d)` features.

    Returns:
        The estimate (may be negative).

    Example:
    >>> unbiased_mmd2(np.zeros((2, 1)), np.ones((2, 1)))
    7.0
    """
    n = len(x)
    within = polynomial_kernel(x, x) + polynomial_kernel(y, y)
    within_sum = within.sum() - np.trace(within)
    return float(within_sum / (n * (n - 1)) - 2.0 * polynomial_kernel(x, y).sum() / (n * n))


def kernel_inception_distance(
    real_features: np.ndarray,
    generated_features: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int | None = 0,
) -> tuple[float, float]:
    """KID from two feature sets: mean and std of unbiased MMD^2 over subsets.

    Args:
        real_features: `(n, d)`.
        generated_features: `(m, d)`.
        num_subsets: how many random subset pairs to average.
        subset_size: samples per subset, drawn without replacement; reduced to
            `min(n, m)` when either set is smaller.
        seed: seed of the subset sampling.

    Returns:
        `(mean, std)` of the per-subset estimates.

    Raises:
        ValueError: on mismatched dimensions or fewer than 2 samples.

    Example:
    >>> rng = np.random.default_rng(0)
    >>> mean, std = kernel_inception_distance(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + 1)
    >>> mean > 3 * std / 10
    True
    """
    real = np.asarray(real_features, dtype=np.float64)
    generated = np.asarray(generated_features, dtype=np.float64)
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(
            f"Features must be (n, d) and (m, d) with equal d; got {real.shape} and {generated.shape}."
        )
    size = min(int(subset_size), len(real), len(generated))
    if size < 2:
        raise ValueError(f"KID needs at least 2 samples per set; got {len(real)} and {len(generated)}.")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1; got {num_subsets}.")
    rng = np.random.default_rng(seed)
    estimates = [
        unbiased_mmd2(
            real[rng.choice(len(real), size, replace=False)],
            generated[rng.choice(len(generated), size, replace=False)],
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(estimates)), float(np.std(estimates))


@dataclasses.dataclass(frozen=True)
class KIDResult:
    """A KID estimate with its spread over subsets and the sample sizes.

    Args:
        mean: mean of the per-subset unbiased MMD^2 estimates.
        std: their standard deviation.
        num_samples: generated images.
        num_real_samples: real images.

    Returns:
        An immutable record; `float(result)` is the mean.

    Example:
    >>> float(KIDResult(0.01, 0.002, 1000, 1000))
    0.01
    """

    mean: float
    std: float
    num_samples: int
    num_real_samples: int

    def __float__(self) -> float:
        return float(self.mean)


class KID:
    """Kernel Inception Distance of generated images against real data.

    Args:
        feature_extractor: callable `images -> (B, D) features`; `None` for the
            FID Inception network.
        batch_size: images per extractor call.
        num_subsets: random subset pairs to average.
        subset_size: samples per subset (capped by the smaller set).
        seed: seed of the subset sampling.

    Returns:
        A callable `kid(real, generated) -> KIDResult`.

    Example:
    >>> import numpy as np
    >>> flatten = lambda images: images.reshape(len(images), -1).astype("float32")
    >>> rng = np.random.default_rng(0)
    >>> result = KID(flatten, subset_size=50)(rng.random((100, 2, 2, 1)), rng.random((100, 2, 2, 1)))
    >>> abs(result.mean) < 3 * result.std
    True
    """

    def __init__(
        self,
        feature_extractor: FeatureExtractor | None = None,
        batch_size: int = 50,
        num_subsets: int = 100,
        subset_size: int = 1000,
        seed: int | None = 0,
    ) -> None:
        if int(batch_size) < 1 or int(num_subsets) < 1 or int(subset_size) < 2:
            raise ValueError(
                f"Need batch_size >= 1, num_subsets >= 1, subset_size >= 2; got {batch_size}, "
                f"{num_subsets}, {subset_size}."
            )
        self.batch_size = int(batch_size)
        self.num_subsets = int(num_subsets)
        self.subset_size = int(subset_size)
        self.seed = seed
        self._feature_extractor = feature_extractor

    @property
    def feature_extractor(self) -> FeatureExtractor:
        if self._feature_extractor is None:
            self._feature_extractor = default_feature_extractor(self.batch_size)
        return self._feature_extractor

    def features(self, data: Any, num_samples: int | None = None) -> np.ndarray:
        """`(N, D)` features of the images in `data`."""
        return extract_features(data, self.feature_extractor, self.batch_size, num_samples)

    def __call__(
        self,
        real: Any,
        generated: Any,
        *,
        num_real_samples: int | None = None,
        num_samples: int | None = None,
    ) -> KIDResult:
        """KID between real and generated images.

        Args:
            real: real images, or their precomputed `(N, D)` features (any
                2-D array is taken as features).
            generated: generated images, or their `(N, D)` features.
            num_real_samples: real images to use; `None` for all.
            num_samples: generated images to use; `None` for all.

        Returns:
            A `KIDResult`.
        """
        real_features = self._features_of(real, num_real_samples)
        generated_features = self._features_of(generated, num_samples)
        mean, std = kernel_inception_distance(
            real_features, generated_features, self.num_subsets, self.subset_size, self.seed
        )
        return KIDResult(mean, std, len(generated_features), len(real_features))

    def _features_of(self, data: Any, num_samples: int | None) -> np.ndarray:
        if isinstance(data, np.ndarray) and data.ndim == 2:
            return data if num_samples is None else data[:num_samples]
        return self.features(data, num_samples)
