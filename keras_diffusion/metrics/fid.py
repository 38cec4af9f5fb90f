"""Fréchet Inception Distance with cached statistics of the real data.

FID (Heusel et al. 2017) fits a Gaussian to the Inception pool_3 features of
real and of generated images and reports the Fréchet distance between the two.
It depends on the number of samples (biased upwards for small N), on the
Inception weights and on how images are resized, so every result carries its
N and cached real statistics are keyed by dataset, split, N, extractor and
resize.
"""

import dataclasses
import os
import re
import warnings
from typing import Any

from keras_diffusion.metrics.features import (
    FeatureExtractor,
    default_feature_extractor,
    extractor_identity,
    iterate_features,
)
from keras_diffusion.metrics.frechet import frechet_distance
from keras_diffusion.metrics.statistics import FeatureStatistics, RunningFeatureStatistics
from keras_diffusion.runtime.system import CACHE_SUBDIR, keras_home

# Below the feature dimension the sample covariance is singular and FID is
# noticeably biased upwards; published numbers use 50 000 generated images.
MIN_RECOMMENDED_SAMPLES = 2048


@dataclasses.dataclass(frozen=True)
class FIDResult:
    """An FID value together with the sample sizes it was computed from.

    Args:
        value: the FID, >= 0.
        num_samples: number of generated images.
        num_real_samples: number of real images behind the reference statistics.

    Returns:
        An immutable record; `float(result)` is the value.

    Example:
    >>> str(FIDResult(3.25, 5000, 10000))
    'FID 3.250 (5000 generated vs 10000 real images)'
    """

    value: float
    num_samples: int
    num_real_samples: int

    def __float__(self) -> float:
        return float(self.value)

    def __str__(self) -> str:
        return f"FID {self.value:.3f} ({self.num_samples} generated vs {self.num_real_samples} real images)"


def warn_if_few_samples(metric: str, num_samples: int, num_real_samples: int) -> None:
    """Warns when either set has fewer than `MIN_RECOMMENDED_SAMPLES` images.

    Args:
        metric: the metric's name, for the message.
        num_samples: generated images.
        num_real_samples: real images (0 when unknown, which does not warn).

    Returns:
        None.

    Example:
    >>> warn_if_few_samples("FID", 50000, 50000)
    """
    sizes = [n for n in (num_samples, num_real_samples) if n > 0]
    if sizes and min(sizes) < MIN_RECOMMENDED_SAMPLES:
        warnings.warn(
            f"{metric} from {num_samples} generated and {num_real_samples} real images: with fewer "
            f"than {MIN_RECOMMENDED_SAMPLES} samples the covariance is rank-deficient and {metric} is "
            "biased upwards. Compare values only at equal N (published FIDs use 50 000).",
            UserWarning,
            stacklevel=3,
        )


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", str(value)).strip("-") or "none"


class FID:
    """Fréchet Inception Distance of generated images against real data.

    Works on arrays `(N, H, W, C)`, `tf.data` datasets and numpy iterables
    (see `iterate_image_batches`). When `dataset_name` is given, real-data
    statistics are computed once: kept in memory and saved to
    `<cache_dir>/<dataset>_<split>_n<N>_<extractor>_<resize>.npz` (written
    atomically) and reused by later runs.

    Args:
        feature_extractor: callable `images -> (B, D) features`; `None` for the
            FID Inception network (`InceptionFeatures`), built on first use.
        batch_size: images per extractor call.
        cache_dir: where real statistics are cached; defaults to
            `~/.keras/keras_diffusion/fid_stats` (`$KERAS_HOME`).

    Returns:
        A callable `fid(real, generated) -> FIDResult`.

    Example:
    >>> import warnings; import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> flatten = lambda images: images.reshape(len(images), -1).astype("float32")
    >>> real = rng.random((64, 2, 2, 1))
    >>> with warnings.catch_warnings():  # N = 64 < 2048 warns
    ...     warnings.simplefilter("ignore")
    ...     round(FID(flatten)(real, real).value, 6)
    0.0
    """

    def __init__(
        self,
        feature_extractor: FeatureExtractor | None = None,
        batch_size: int = 50,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}.")
        self.batch_size = int(batch_size)
        self.cache_dir = (
            os.fspath(cache_dir) if cache_dir is not None else os.path.join(keras_home(), CACHE_SUBDIR, "fid_stats")
        )
        self._feature_extractor = feature_extractor
        self._memory_cache: dict[str, FeatureStatistics] = {}

    @property
    def feature_extractor(self) -> FeatureExtractor:
        if self._feature_extractor is None:
            self._feature_extractor = default_feature_extractor(self.batch_size)
        return self._feature_extractor

    def _identity(self) -> tuple[str, str]:
        if self._feature_extractor is None:
            from keras_diffusion.metrics.inception import InceptionFeatures

            return InceptionFeatures.name, InceptionFeatures.resize
        return extractor_identity(self._feature_extractor)

    def statistics(self, data: Any, num_samples: int | None = None, verbose: bool = False) -> FeatureStatistics:
        """Feature statistics of the images in `data` (nothing cached).

        Args:
            data: images as accepted by `iterate_image_batches`.
            num_samples: how many images to use; `None` for all.
            verbose: show a progress bar over the images.

        Returns:
            A `FeatureStatistics`.
        """
        running = RunningFeatureStatistics()
        for features in iterate_features(data, self.feature_extractor, self.batch_size, num_samples, verbose):
            running.update(features)
        return running.result()

    def cache_path(self, dataset_name: str, split: str, num_samples: int | None) -> str:
        """The file that caches real statistics for this key.

        Args:
            dataset_name: e.g. `"mnist"`.
            split: e.g. `"train"`.
            num_samples: N, or `None` for "all images of the split".

        Returns:
            A path inside `cache_dir`.
        """
        extractor_name, resize = self._identity()
        count = "all" if num_samples is None else str(int(num_samples))
        parts = [dataset_name, split, f"n{count}", extractor_name, resize]
        return os.path.join(self.cache_dir, "_".join(_slug(part) for part in parts) + ".npz")

    def real_statistics(
        self,
        data: Any,
        dataset_name: str | None = None,
        split: str = "train",
        num_samples: int | None = None,
        verbose: bool = False,
    ) -> FeatureStatistics:
        """Statistics of real images, computed once per key.

        Args:
            data: real images as accepted by `iterate_image_batches`.
            dataset_name: names the data for the cache (in memory and on
                disk); `None` computes the statistics without caching them.
            split: the split's name, part of the key.
            num_samples: how many images to use; `None` for all (an array's
                length is then part of the key, an iterable's is `"all"`).
            verbose: say what is computed and cached, with a progress bar.

        Returns:
            A `FeatureStatistics`.
        """
        if num_samples is None and hasattr(data, "shape"):
            num_samples = int(data.shape[0])
        if dataset_name is None:
            return self.statistics(data, num_samples, verbose)
        path = self.cache_path(dataset_name, split, num_samples)
        if path in self._memory_cache:
            return self._memory_cache[path]
        if os.path.exists(path):
            statistics = FeatureStatistics.load(path)
        else:
            if verbose:
                print(f"Computing the feature statistics of {num_samples or 'all'} {dataset_name} {split} images once "
                      f"(cached at {path}).", flush=True)  # fmt: skip
            statistics = self.statistics(data, num_samples, verbose)
            extractor_name, resize = self._identity()
            statistics.save(
                path, dataset=str(dataset_name), split=str(split), extractor=extractor_name, resize=resize
            )
        self._memory_cache[path] = statistics
        return statistics

    def __call__(
        self,
        real: Any,
        generated: Any,
        *,
        dataset_name: str | None = None,
        split: str = "train",
        num_real_samples: int | None = None,
        num_samples: int | None = None,
    ) -> FIDResult:
        """FID between real data (or its statistics) and generated images.

        Args:
            real: real images, a `FeatureStatistics`, or the path of an `.npz`
                written by `FeatureStatistics.save`.
            generated: generated images (or a `FeatureStatistics`).
            dataset_name: enables the on-disk cache of real statistics.
            split: split name for the cache key.
            num_real_samples: real images to use; `None` for all.
            num_samples: generated images to use; `None` for all.

        Returns:
            A `FIDResult`. Warns when either N is below 2048.
        """
        if isinstance(real, (str, os.PathLike)):
            real = FeatureStatistics.load(real)
        if not isinstance(real, FeatureStatistics):
            real = self.real_statistics(real, dataset_name, split, num_real_samples)
        if not isinstance(generated, FeatureStatistics):
            generated = self.statistics(generated, num_samples)
        warn_if_few_samples("FID", generated.num_samples, real.num_samples)
        value = frechet_distance(real.mean, real.covariance, generated.mean, generated.covariance)
        return FIDResult(value, generated.num_samples, real.num_samples)


def compute_fid(
    real_images: Any,
    fake_images: Any,
    batch_size: int = 50,
    feature_extractor: FeatureExtractor | None = None,
) -> float:
    """FID between two sets of images, in one call and without caching.

    Args:
        real_images: real images (array, dataset or iterable).
        fake_images: generated images, uint8 or floats in [0, 1].
        batch_size: images per extractor call.
        feature_extractor: `None` for the FID Inception network.

    Returns:
        The FID as a non-negative float. Warns when either N is below 2048.

    Example:
    >>> compute_fid(real_images, generated_images)  # doctest: +SKIP
    """
    return FID(feature_extractor, batch_size)(real_images, fake_images).value
