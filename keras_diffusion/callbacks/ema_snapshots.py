"""`EMASnapshots`: saves a model's power-function EMAs now and then, for post-hoc EMA reconstruction."""

import glob
import os

import keras
import numpy as np

from keras_diffusion.data.files import save_npz_atomically

_PATTERN = "ema_snapshot_{:09d}.npz"


class EMASnapshots(keras.callbacks.Callback):
    """Writes the EMAs of a `DiffusionModel(ema_std=(0.05, 0.10))` to a folder every n updates.

    Each snapshot `ema_snapshot_<updates>.npz` holds, for every EMA of the
    model, its σ_rel and weights, and the profile time t (`model.ema_updates`).
    After training, `read_ema_snapshots(directory)` and
    `keras_diffusion.ema.reconstruct(snapshots, target_std)` give the EMA of
    any σ_rel (EDM2's post-hoc EMA); load it with `model.set_ema_weights`.
    Files are written atomically; one snapshot of a 1 M-parameter model with
    two EMAs takes 8 MB.

    Args:
        directory: the folder to write to (created if missing).
        every_n_updates: updates between snapshots (a last one is written at
            the end of `fit`). EDM2 keeps one per 8 M images; a few dozen
            per run are plenty.

    Returns:
        A Keras callback.

    Example:
    >>> model = DiffusionModel(unet, ema_std=(0.05, 0.10))  # doctest: +SKIP
    >>> model.fit(images, labels, epochs=10, callbacks=[EMASnapshots("runs/ema", 500)])  # doctest: +SKIP
    >>> weights = keras_diffusion.ema.reconstruct(read_ema_snapshots("runs/ema"), target_std=0.08)  # doctest: +SKIP
    >>> model.set_ema_weights(weights)  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike, every_n_updates: int) -> None:
        super().__init__()
        if int(every_n_updates) < 1:
            raise ValueError(f"every_n_updates must be >= 1; received {every_n_updates}.")
        self.directory = os.fspath(directory)
        self.every_n_updates = int(every_n_updates)
        self._updates = 0
        self._last_written: int | None = None

    def set_model(self, model) -> None:
        if not getattr(model, "ema_stds", ()):
            raise ValueError(
                "EMASnapshots needs a model with power-function EMAs, e.g. DiffusionModel(..., ema_std=(0.05, 0.10))."
            )
        super().set_model(model)

    def write(self) -> str:
        """Writes one snapshot of the model's EMAs now and returns its path."""
        updates = self.model.ema_updates
        arrays = {"updates": np.int64(updates), "stds": np.asarray(self.model.ema_stds, "float64")}
        for index in range(len(self.model.ema_stds)):
            for position, weight in enumerate(self.model.ema_weights(index)):
                arrays[f"ema{index}_{position}"] = weight
        path = os.path.join(self.directory, _PATTERN.format(updates))
        save_npz_atomically(path, arrays)
        self._last_written = updates
        return path

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._updates += 1
        if self._updates % self.every_n_updates == 0:
            self.write()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._last_written != self.model.ema_updates:
            self.write()


def read_ema_snapshots(directory: str | os.PathLike) -> list[tuple[int, float, list[np.ndarray]]]:
    """The snapshots `EMASnapshots` wrote, as `(updates, std, weights)` per EMA per snapshot.

    Args:
        directory: the folder given to `EMASnapshots`.

    Returns:
        A list sorted by updates, ready for `keras_diffusion.ema.reconstruct`.
    """
    paths = sorted(glob.glob(os.path.join(os.fspath(directory), "ema_snapshot_*.npz")))
    if not paths:
        raise FileNotFoundError(f"No ema_snapshot_*.npz in {directory}; train with callbacks.EMASnapshots first.")
    snapshots = []
    for path in paths:
        with np.load(path) as stored:
            updates, stds = int(stored["updates"]), stored["stds"].tolist()
            for index, std in enumerate(stds):
                count = sum(1 for key in stored.files if key.startswith(f"ema{index}_"))
                snapshots.append((updates, float(std), [stored[f"ema{index}_{i}"] for i in range(count)]))
    return [s for s in snapshots if s[0] > 0]
