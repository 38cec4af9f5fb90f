"""`FIDCallback`: sample-quality metrics of a `DiffusionModel` during `fit`."""

import os
import warnings
from typing import Any

import keras
import numpy as np

from keras_diffusion.metrics.features import FeatureExtractor, default_feature_extractor, extract_features
from keras_diffusion.datasets import DATASETS
from keras_diffusion.datasets import load as load_dataset
from keras_diffusion.metrics.fid import FID, MIN_RECOMMENDED_SAMPLES
from keras_diffusion.metrics.frechet import frechet_distance
from keras_diffusion.metrics.kid import kernel_inception_distance
from keras_diffusion.metrics.statistics import FeatureStatistics


class FIDCallback(keras.callbacks.Callback):
    """Generates images every few epochs and logs their FID (and KID).

    At the end of each evaluated epoch it calls `model.generate(num_samples,
    sampler=..., steps=..., labels=..., guidance_scale=..., seed=...)` (EMA
    weights), and writes `logs["fid"]` (and `logs["kid"]`), so `History`,
    `ModelCheckpoint(monitor="fid", mode="min")` and `EarlyStopping` see it.
    Put this callback *before* those in the `callbacks` list. The same seed
    is used every time, so the values of different epochs differ by the
    model only. Real-data statistics (or features, for KID) are computed once.

    Args:
        real_data_or_stats: real images (array `(N, H, W, C)`, `tf.data`
            dataset or iterable; uint8 or floats in [0, 1]), a
            `FeatureStatistics`, or the path of a saved statistics `.npz`
            (statistics do not suffice for `kid=True`). `None`: the `split`
            of `dataset` from `keras_diffusion.datasets.load`, its statistics
            cached on disk by `keras_diffusion.metrics.FID`.
        dataset: the known dataset used when `real_data_or_stats` is None;
            default: the one whose image shape the model has (`"mnist"` for
            28x28x1, `"cifar10"` for 32x32x3). Pass `"fashion_mnist"` for it.
        split: the split of `dataset` (default the test split).
        num_samples: images generated per evaluation. FID is biased upwards
            below 2048 (a warning is given once); compare only equal N.
        every_n_epochs: evaluate after every n-th epoch (and the last one).
        sampler: `"ddim"` or `"ddpm"`.
        steps: sampler steps.
        guidance_scale: classifier-free guidance weight (conditional models).
        labels: class labels for `generate`; `None` draws them uniformly.
        feature_extractor: callable `images -> (B, D)`; `None` for the FID
            Inception network.
        kid: also log `"kid"` (the mean over subsets).
        num_real_samples: real images to use; `None` for all (an endless,
            repeated dataset needs a number).
        seed: sampling seed, the same at every evaluation.
        batch_size: images per extractor call.
        generate_batch_size: images per `generate` network call; `None` for
            the model's default.
        verbose: 1 prints the values after each evaluation.

    Returns:
        A Keras callback.

    Example:
    >>> fid = FIDCallback(real_images, num_samples=2048, every_n_epochs=5)  # doctest: +SKIP
    >>> model.fit(data, epochs=50, callbacks=[fid, keras.callbacks.ModelCheckpoint(
    ...     "best.keras", monitor="fid", mode="min", save_best_only=True)])  # doctest: +SKIP
    """

    def __init__(
        self,
        real_data_or_stats: Any = None,
        num_samples: int = MIN_RECOMMENDED_SAMPLES,
        dataset: str | None = None,
        split: str = "test",
        every_n_epochs: int = 1,
        sampler: str = "ddim",
        steps: int = 50,
        guidance_scale: float = 0.0,
        feature_extractor: FeatureExtractor | None = None,
        kid: bool = False,
        labels: Any = None,
        num_real_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 50,
        generate_batch_size: int | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__()
        if dataset is not None and dataset not in DATASETS:
            raise ValueError(f"Unknown dataset {dataset!r}; use one of {sorted(DATASETS)} or pass real images.")
        if isinstance(real_data_or_stats, (str, os.PathLike)):
            real_data_or_stats = FeatureStatistics.load(real_data_or_stats)
        if kid and isinstance(real_data_or_stats, FeatureStatistics):
            raise ValueError("kid=True needs real images (KID uses features, not their statistics).")
        if int(num_samples) < 2 or int(every_n_epochs) < 1 or int(batch_size) < 1:
            raise ValueError(
                "Need num_samples >= 2, every_n_epochs >= 1 and batch_size >= 1; got "
                f"num_samples={num_samples}, every_n_epochs={every_n_epochs}, batch_size={batch_size}."
            )
        if num_samples < MIN_RECOMMENDED_SAMPLES:
            warnings.warn(
                f"FIDCallback with num_samples={num_samples} < {MIN_RECOMMENDED_SAMPLES}: FID is biased "
                "upwards; compare values only at the same num_samples.",
                UserWarning,
                stacklevel=2,
            )
        self.real_data_or_stats = real_data_or_stats
        self.dataset = dataset
        self.split = split
        self.num_samples = int(num_samples)
        self.every_n_epochs = int(every_n_epochs)
        self.sampler = sampler
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.kid = bool(kid)
        self.labels = labels
        self.num_real_samples = num_real_samples
        self.seed = seed
        self.batch_size = int(batch_size)
        self.generate_batch_size = generate_batch_size
        self.verbose = verbose
        self._feature_extractor = feature_extractor
        self._real_statistics: FeatureStatistics | None = None
        self._real_features: np.ndarray | None = None

    @property
    def feature_extractor(self) -> FeatureExtractor:
        if self._feature_extractor is None:
            self._feature_extractor = default_feature_extractor(self.batch_size)
        return self._feature_extractor

    def _prepare_real(self) -> None:
        if self._real_statistics is not None:
            return
        if isinstance(self.real_data_or_stats, FeatureStatistics):
            self._real_statistics = self.real_data_or_stats
            return
        if self.real_data_or_stats is None and not self.kid:
            name = self.dataset or _dataset_for_shape(tuple(self.model.image_shape))
            images, _ = load_dataset(name, split=self.split, limit=self.num_real_samples)
            fid = FID(self.feature_extractor, batch_size=self.batch_size)
            self._real_statistics = fid.real_statistics(images, dataset_name=name, split=self.split)
            return
        if self.real_data_or_stats is None:
            name = self.dataset or _dataset_for_shape(tuple(self.model.image_shape))
            self.real_data_or_stats, _ = load_dataset(name, split=self.split, limit=self.num_real_samples)
        self._real_features = extract_features(
            self.real_data_or_stats, self.feature_extractor, self.batch_size, self.num_real_samples
        )
        self._real_statistics = FeatureStatistics.from_features(self._real_features)
        if not self.kid:
            self._real_features = None  # Only KID needs them; FID keeps the statistics.

    def evaluate(self) -> dict[str, float]:
        """Generates `num_samples` images and returns `{"fid": ..., ["kid": ...]}`."""
        self._prepare_real()
        images = self.model.generate(
            self.num_samples,
            sampler=self.sampler,
            steps=self.steps,
            labels=self.labels,
            guidance_scale=self.guidance_scale,
            seed=self.seed,
            batch_size=self.generate_batch_size,
        )
        features = extract_features(images, self.feature_extractor, self.batch_size)
        generated = FeatureStatistics.from_features(features)
        real = self._real_statistics
        results = {"fid": frechet_distance(real.mean, real.covariance, generated.mean, generated.covariance)}
        if self.kid:
            results["kid"] = kernel_inception_distance(self._real_features, features)[0]
        return results

    def _is_evaluation_epoch(self, epoch: int) -> bool:
        last_epoch = self.params.get("epochs") if self.params else None
        return (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 == last_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self._is_evaluation_epoch(epoch):
            return
        results = self.evaluate()
        if logs is not None:
            logs.update(results)
        if self.verbose:
            summary = ", ".join(f"{name} {value:.4f}" for name, value in results.items())
            print(f"\nEpoch {epoch + 1}: {summary} ({self.num_samples} samples)")


def _dataset_for_shape(image_shape: tuple[int, ...]) -> str:
    """The first known dataset with this image shape ("mnist" before "fashion_mnist")."""
    for name, (shape, _) in DATASETS.items():
        if shape == image_shape:
            return name
    raise ValueError(
        f"FIDCallback() without real data needs a model of a known dataset's shape "
        f"({', '.join(f'{n}: {s}' for n, (s, _) in DATASETS.items())}); this model makes {image_shape} "
        "images. Pass real images or statistics."
    )
