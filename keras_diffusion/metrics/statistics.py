"""Mean and covariance of feature sets, in one pass or streamed over batches."""

import dataclasses
import os

import numpy as np

from keras_diffusion.data.files import save_npz_atomically


def _as_feature_matrix(features: np.ndarray) -> np.ndarray:
    matrix = np.asarray(features, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"Features must be a 2-D array (num_samples, dim); got shape {matrix.shape}.")
    if not np.all(np.isfinite(matrix)):
        raise ValueError("Features contain NaN or infinite values.")
    return matrix


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set, in float64.

    Args:
        features: `(N, D)` array, `N >= 2`.

    Returns:
        `(mu, sigma)`: `(D,)` mean and `(D, D)` covariance with the `N - 1`
        denominator (as `np.cov`, and as the reference FID code).

    Raises:
        ValueError: for a non-2-D array, fewer than 2 rows or non-finite values.

    Example:
    >>> mu, sigma = feature_statistics(np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> mu.tolist(), sigma.tolist()
    ([1.0, 2.0], [[2.0, 2.0], [2.0, 2.0]])
    """
    matrix = _as_feature_matrix(features)
    if len(matrix) < 2:
        raise ValueError(f"A covariance needs at least 2 samples; got {len(matrix)}.")
    return matrix.mean(axis=0), np.cov(matrix, rowvar=False)


@dataclasses.dataclass(frozen=True)
class FeatureStatistics:
    """Mean, covariance and sample count of a feature set; savable as `.npz`.

    Args:
        mean: `(D,)` float64.
        covariance: `(D, D)` float64.
        num_samples: how many images the statistics were computed from.

    Returns:
        An immutable record.

    Example:
    >>> stats = FeatureStatistics(np.zeros(2), np.eye(2), num_samples=10)
    >>> stats.dim
    2
    """

    mean: np.ndarray
    covariance: np.ndarray
    num_samples: int

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_features(cls, features: np.ndarray) -> "FeatureStatistics":
        """Statistics of an `(N, D)` feature array."""
        mean, covariance = feature_statistics(features)
        return cls(mean, covariance, int(np.shape(features)[0]))

    def save(self, path: str | os.PathLike, **metadata: str) -> None:
        """Writes `mu`, `sigma`, `num_samples` and string metadata atomically."""
        arrays = {"mu": self.mean, "sigma": self.covariance, "num_samples": np.int64(self.num_samples)}
        arrays.update({key: np.str_(value) for key, value in metadata.items()})
        save_npz_atomically(os.fspath(path), arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FeatureStatistics":
        """Reads a file written by `save` (or any `.npz` with `mu` and `sigma`)."""
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            num_samples = int(archive["num_samples"]) if "num_samples" in archive.files else 0
            return cls(archive["mu"].astype(np.float64), archive["sigma"].astype(np.float64), num_samples)


class RunningFeatureStatistics:
    """Accumulates mean and covariance over batches without keeping features.

    Batches are merged with Chan et al.'s parallel update of the mean and the
    centred sum of outer products, which stays accurate where the naive
    `E[xx^T] - mu mu^T` loses digits.

    Args:
        None.

    Returns:
        An accumulator with `update(features)` and `result()`.

    Example:
    >>> running = RunningFeatureStatistics()
    >>> running.update(np.array([[0.0], [2.0]])); running.update(np.array([[4.0]]))
    >>> stats = running.result()
    >>> float(stats.mean[0]), float(stats.covariance[0, 0]), stats.num_samples
    (2.0, 4.0, 3)
    """

    def __init__(self) -> None:
        self.count = 0
        self._mean: np.ndarray | None = None
        self._centred_products: np.ndarray | None = None

    def update(self, features: np.ndarray) -> None:
        """Adds an `(B, D)` batch of features."""
        batch = _as_feature_matrix(features)
        if len(batch) == 0:
            return
        batch_mean = batch.mean(axis=0)
        centred = batch - batch_mean
        batch_products = centred.T @ centred
        if self._mean is None:
            self.count, self._mean, self._centred_products = len(batch), batch_mean, batch_products
            return
        if batch.shape[1] != self._mean.shape[0]:
            raise ValueError(f"Feature dimension changed from {self._mean.shape[0]} to {batch.shape[1]}.")
        total = self.count + len(batch)
        delta = batch_mean - self._mean
        self._mean = self._mean + delta * (len(batch) / total)
        self._centred_products = (
            self._centred_products + batch_products + np.outer(delta, delta) * (self.count * len(batch) / total)
        )
        self.count = total

    def result(self) -> FeatureStatistics:
        """The statistics so far; needs at least 2 samples."""
        if self.count < 2:
            raise ValueError(f"A covariance needs at least 2 samples; got {self.count}.")
        return FeatureStatistics(self._mean.copy(), self._centred_products / (self.count - 1), self.count)
