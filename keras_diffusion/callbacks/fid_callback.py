"""`FIDCallback`: sample-quality metrics of a `DiffusionModel` during `fit`."""

import os
import warnings
from typing import Any

import keras
import numpy as np

from keras_diffusion.callbacks.clock import TrainingClock
from keras_diffusion.data.datasets import DATASETS, name_for_shape
from keras_diffusion.data.datasets import load as load_dataset
from keras_diffusion.metrics.classifier import Classifier, balanced_labels
from keras_diffusion.metrics.features import FeatureExtractor, default_feature_extractor, extract_features
from keras_diffusion.metrics.fid import FID, MIN_RECOMMENDED_SAMPLES
from keras_diffusion.metrics.scores import score_images
from keras_diffusion.metrics.statistics import FeatureStatistics
from keras_diffusion.samplers import Sampling


class FIDCallback(keras.callbacks.Callback):
    """Generates images every few epochs, updates or training seconds and logs their FID (and KID).

    At each evaluation it calls `model.generate(num_samples, labels=...,
    seed=..., **sampling.arguments())` (EMA weights by default) and
    computes `"fid"` (and `"kid"`, and `"class_accuracy"` with a
    `classifier`). The same seed and labels are used every time, so the
    values of different evaluations differ by the model only. Real-data
    statistics (or features, for KID) are computed once.

    When: after every `every_n_epochs`-th epoch and the last one (the
    default); or, to compare training recipes by compute, after every
    `every_n_updates` optimizer updates or every `every_seconds` seconds of
    training (a `TrainingClock`: time inside the training batches, not the
    evaluations), and once more at the end of `fit` unless the last update
    was just evaluated. Every evaluation is appended to `history` (a list
    of dicts with `"epoch"`, `"updates"`, `"seconds"` and the metric
    values). Epoch evaluations also write the values into the epoch's
    `logs`, so `History`, `ModelCheckpoint(monitor="fid", mode="min")` and
    `EarlyStopping` see them (put this callback *before* those);
    evaluations within an epoch write them into that batch's logs, where
    `TrainingCurvesCallback` (placed after this one) picks them up.

    Args:
        real_data_or_stats: real images (array `(N, H, W, C)`, `tf.data`
            dataset or iterable; uint8 or floats in [0, 1]), a
            `FeatureStatistics`, or the path of a saved statistics `.npz`
            (statistics do not suffice for `kid=True`). `None`: the `split`
            of `dataset` from `keras_diffusion.data.datasets.load`, its statistics
            cached on disk by `keras_diffusion.metrics.FID`.
        dataset: the known dataset used when `real_data_or_stats` is None;
            default: the one whose image shape the model has (`"mnist"` for
            28x28x1, `"cifar10"` for 32x32x3). Pass `"fashion_mnist"` for it.
        split: the split of `dataset` (default the test split).
        num_samples: images generated per evaluation. FID is biased upwards
            below 2048 (a warning is given once); compare only equal N.
        every_n_epochs: evaluate after every n-th epoch (and the last one).
            Ignored when `every_n_updates` or `every_seconds` is given.
        every_n_updates: evaluate after every n-th optimizer update.
        every_seconds: evaluate whenever this many more seconds of training
            have passed (checked after each update).
        sampling: how to generate (`keras_diffusion.samplers.Sampling`: the
            sampler, its steps, the guidance weight, the batch size); None
            for `generate`'s defaults.
        labels: class labels for `generate`; `None` gives a conditional
            model balanced classes (`0, 1, ..., num_classes - 1, 0, ...`).
        classifier: optional images -> class scores (e.g.
            `keras_diffusion.metrics.mnist_classifier()`); logs
            `"class_accuracy"`, the share of generated images it assigns to
            their requested label.
        feature_extractor: callable `images -> (B, D)`; `None` for the FID
            Inception network.
        kid: also log `"kid"` (the mean over subsets).
        num_real_samples: real images to use; `None` for all (an endless,
            repeated dataset needs a number).
        seed: sampling seed, the same at every evaluation.
        batch_size: images per extractor call.
        verbose: 1 prints the values after each evaluation; 2 also says what each
            evaluation does (and caches), with progress bars while it generates and extracts features.

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
        every_n_updates: int | None = None,
        every_seconds: float | None = None,
        sampling: Sampling | None = None,
        feature_extractor: FeatureExtractor | None = None,
        kid: bool = False,
        labels: Any = None,
        classifier: Classifier | None = None,
        num_real_samples: int | None = None,
        seed: int = 0,
        batch_size: int = 50,
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
        if every_n_updates is not None and every_seconds is not None:
            raise ValueError("Pass at most one of every_n_updates and every_seconds.")
        if (every_n_updates is not None and int(every_n_updates) < 1) or (
            every_seconds is not None and not float(every_seconds) > 0
        ):
            raise ValueError(
                f"every_n_updates must be >= 1 and every_seconds > 0; got {every_n_updates} and {every_seconds}."
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
        self.every_n_updates = None if every_n_updates is None else int(every_n_updates)
        self.every_seconds = None if every_seconds is None else float(every_seconds)
        if sampling is not None and not isinstance(sampling, Sampling):
            raise TypeError(f"`sampling` must be a kd.samplers.Sampling or None; received {type(sampling).__name__}.")
        self.sampling = sampling or Sampling()
        self.kid = bool(kid)
        self.labels = labels
        self.classifier = classifier
        self.num_real_samples = num_real_samples
        self.seed = seed
        self.batch_size = int(batch_size)
        self.verbose = verbose
        self._feature_extractor = feature_extractor
        self._real_statistics: FeatureStatistics | None = None
        self._real_features: np.ndarray | None = None
        self.clock = TrainingClock()
        self._epoch = 0
        self.history: list[dict[str, float]] = []
        self._next_evaluation_seconds = self.every_seconds
        self._evaluated_at_updates: int | None = None

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
            self._real_statistics = fid.real_statistics(
                images, dataset_name=name, split=self.split, verbose=self.verbose >= 2
            )
            return
        if self.real_data_or_stats is None:
            name = self.dataset or _dataset_for_shape(tuple(self.model.image_shape))
            self.real_data_or_stats, _ = load_dataset(name, split=self.split, limit=self.num_real_samples)
        if self.verbose >= 2:
            print("Extracting the features of the real images ...", flush=True)
        self._real_features = extract_features(
            self.real_data_or_stats, self.feature_extractor, self.batch_size, self.num_real_samples, self.verbose >= 2
        )
        self._real_statistics = FeatureStatistics.from_features(self._real_features)
        if not self.kid:
            self._real_features = None  # Only KID needs them; FID keeps the statistics.

    def _generation_labels(self) -> np.ndarray | None:
        if self.labels is not None:
            return self.labels
        num_classes = getattr(self.model, "num_classes", None)
        return None if num_classes is None else balanced_labels(self.num_samples, num_classes)

    def evaluate(self) -> dict[str, float]:
        """Generates `num_samples` images and returns `{"fid": ..., ["kid": ..., "class_accuracy": ...]}`."""
        self._prepare_real()
        labels = self._generation_labels()
        if self.classifier is not None and labels is None:
            raise ValueError("FIDCallback(classifier=...) needs a class-conditional model.")
        talk = self.verbose >= 2
        if talk:
            print(f"Generating {self.num_samples} images ({self.sampling.describe()}) ...", flush=True)
        images = self.model.generate(
            self.num_samples, labels=labels, seed=self.seed, verbose=talk, **self.sampling.arguments()
        )
        if talk:
            print(f"Extracting their features{' and classifying them' if self.classifier else ''} ...", flush=True)
        results = score_images(
            images, self._real_statistics, self.feature_extractor, self.batch_size,
            real_features=self._real_features if self.kid else None, classifier=self.classifier, labels=labels,
            verbose=talk,
        )  # fmt: skip
        results.pop("kid_std", None)
        return results

    @property
    def _per_update(self) -> bool:
        return self.every_n_updates is not None or self.every_seconds is not None

    def _is_evaluation_epoch(self, epoch: int) -> bool:
        last_epoch = self.params.get("epochs") if self.params else None
        return (epoch + 1) % self.every_n_epochs == 0 or epoch + 1 == last_epoch

    def _is_evaluation_update(self) -> bool:
        if self.every_n_updates is not None:
            return self.clock.updates % self.every_n_updates == 0
        if self.clock.seconds >= self._next_evaluation_seconds:
            while self._next_evaluation_seconds <= self.clock.seconds:
                self._next_evaluation_seconds += self.every_seconds
            return True
        return False

    def _record(self, logs: dict | None) -> None:
        with TrainingClock.paused():  # not training time, for this clock and every other callback's
            results = self.evaluate()
        self._evaluated_at_updates = self.clock.updates
        self.history.append(
            {"epoch": self._epoch + 1, "updates": self.clock.updates, "seconds": self.clock.seconds, **results}
        )
        if logs is not None:
            logs.update(results)
        if self.verbose:
            summary = ", ".join(f"{name} {value:.4f}" for name, value in results.items())
            print(
                f"\nEpoch {self._epoch + 1}, {self.clock.updates} updates, {self.clock.seconds:.0f} s of training: "
                f"{summary} ({self.num_samples} samples)"
            )

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._epoch = 0
        if self._per_update and getattr(self.model, "steps_per_execution", 1) != 1:
            raise ValueError(
                "FIDCallback(every_n_updates=... or every_seconds=...) counts single updates and needs "
                "compile(steps_per_execution=1); use every_n_epochs with a larger steps_per_execution."
            )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.clock.batch_begin()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.clock.batch_end()
        if self._per_update and self._is_evaluation_update():
            self._record(logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self._per_update and self._is_evaluation_epoch(epoch):
            self._record(logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._per_update and self._evaluated_at_updates != self.clock.updates:
            self._record(logs)


def _dataset_for_shape(image_shape: tuple[int, ...]) -> str:
    try:
        return name_for_shape(image_shape)
    except ValueError as error:
        raise ValueError(f"FIDCallback() without real data: {error} Pass real images or statistics.") from None
