"""`TrainingCheckpoint`: resumable, atomic training checkpoints that survive a SIGKILL.

A checkpoint is one Keras `.weights.h5` file plus a small JSON pointer,
`checkpoint.json`, naming that file and the training position (epoch, batch).
The weights file holds everything `fit` changes: the denoiser's weights, the
EMA and its step counter, every `SeedGenerator` state (saved by
`DiffusionModel.save_own_variables`) and the optimizer's variables (its
iteration count included). Each file is written under a temporary name in the
same folder and renamed into place (`os.replace`, atomic on POSIX and
Windows), and the pointer is replaced only after the new weights file is
complete, so a process killed at any moment leaves the previous checkpoint
readable.

Why not `keras.callbacks.BackupAndRestore` (Keras 3.15): it writes
`latest.weights.h5` and `training_metadata.json` in place (a kill mid-write
corrupts the only copy), as two files that a kill can leave out of step, and
with an integer `save_freq` it records the batch but restores only the epoch,
so a mid-epoch resume trains the batches before the checkpoint a second time.
"""

import glob
import json
import os
import warnings

import keras
import numpy as np

from keras_diffusion.data.files import replaced_atomically, save_model_atomically, write_bytes_atomically
from keras_diffusion.runtime import keras_internals
from keras_diffusion.runtime.distributed import is_chief

POINTER_FILE = "checkpoint.json"
FORMAT_VERSION = 1
_TEMPORARY_PREFIX = ".tmp-"


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the whole training state atomically and resumes `fit` from it.

    On `on_train_begin` the latest checkpoint in `directory` (if any) is
    loaded and `fit` continues from the saved epoch; a checkpoint taken
    mid-epoch also skips the batches of that epoch that were already trained
    (they are read from the data but not trained on), so a run killed at any
    moment and started again with the same call ends with the same weights as
    an uninterrupted run. What a kill loses is the work since the last
    checkpoint.

    Exact resumption needs the data to arrive in the same order in the
    resumed run: pass `shuffle=False` (shuffle the arrays once, with a fixed
    seed, beforehand) or a `tf.data`/`PyDataset` pipeline whose order does
    not depend on how often it was iterated. Keras' own per-epoch shuffling
    is not restorable. `epochs` counts from the start of the first run, as
    with `initial_epoch`: a finished run restores its final state and trains
    nothing more unless `epochs` is raised.

    A checkpoint is never written while the loss or any weight is NaN/inf:
    the previous good one stays in place (see also `NaNGuard`, which stops
    such a run).

    Args:
        directory: folder for the checkpoint files; created if missing. Use
            one folder per training run.
        save_freq: `"epoch"` to save at the end of every epoch, or an int N
            to save every N training batches (counted across epochs; a save
            that falls on an epoch's last batch is made at the epoch's end).
        keep: how many checkpoints to keep on disk (>= 1); older weights
            files are deleted after a newer checkpoint is complete.
        check_finite: refuse to save when the loss or a weight is not
            finite. Reading every weight costs one host copy per save.

    Example:
    >>> checkpoint = TrainingCheckpoint("runs/mnist/checkpoint", save_freq=200)  # doctest: +SKIP
    >>> model.fit(images, labels, epochs=10, shuffle=False, callbacks=[checkpoint])  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        save_freq: str | int = "epoch",
        keep: int = 1,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
            raise ValueError(f"`directory` must be a non-empty path; received {directory!r}.")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq < 1):
            raise ValueError(f"`save_freq` must be 'epoch' or a positive int (batches); received {save_freq!r}.")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"`keep` must be an int >= 1; received {keep!r}.")
        self.directory = os.fspath(directory)
        self.save_freq = save_freq
        self.keep = keep
        self.check_finite = bool(check_finite)
        self._epoch = 0
        self._global_step = 0
        self._batches_to_skip = 0
        self._original_train_function = None
        self._save_at_epoch_end = False
        self._set_initial_epoch = False
        self.last_saved = None

    # ------------------------------------------------------------ public API

    @property
    def pointer_path(self) -> str:
        """Path of `checkpoint.json`, the file that names the latest checkpoint."""
        return os.path.join(self.directory, POINTER_FILE)

    def latest(self) -> dict | None:
        """The latest checkpoint's metadata, or None if there is none.

        Returns:
            A dict with `weights` (file name), `epoch` (the epoch to resume
            in), `batch` (batches of that epoch already trained),
            `global_step` (batches trained in all) and `steps_per_epoch`.
        """
        if not os.path.exists(self.pointer_path):
            return None
        with open(self.pointer_path, encoding="utf-8") as file:
            try:
                metadata = json.load(file)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{self.pointer_path} is not valid JSON ({error}); it was not written by "
                    "TrainingCheckpoint (which replaces it atomically). Delete the folder to start afresh."
                ) from None
        missing = {"weights", "epoch", "batch", "global_step"} - set(metadata)
        if missing or metadata.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{self.pointer_path} is not a TrainingCheckpoint pointer of format {FORMAT_VERSION} "
                f"(missing {sorted(missing)} or format {metadata.get('format')!r}). Use a fresh directory."
            )
        return metadata

    def save(self, epoch: int, batch: int, logs: dict | None = None) -> bool:
        """Writes a checkpoint for "epoch `epoch`, `batch` batches done" now.

        Args:
            epoch: the epoch a resumed run starts in (0-based).
            batch: batches of that epoch already trained (0 at an epoch boundary).
            logs: the Keras logs of the last batch; a non-finite `loss` prevents the save.

        Returns:
            True if a checkpoint was written, False if it was refused because
            the loss or weights were not finite (the previous one is kept).
        """
        model = self.model  # on JAX this property copies the training state back into the variables
        if self.check_finite and not _is_finite_state(model, logs):
            warnings.warn(
                f"TrainingCheckpoint: not saving at epoch {epoch + 1}, batch {batch} (global step "
                f"{self._global_step}): the loss or the weights are NaN/inf. The last good checkpoint "
                f"({(self.last_saved or {}).get('weights', 'none')}) is kept.",
                RuntimeWarning,
                stacklevel=2,
            )
            return False
        weights_name = f"step-{self._global_step:09d}.weights.h5"
        _save_weights_atomically(model, os.path.join(self.directory, weights_name))
        metadata = {
            "format": FORMAT_VERSION,
            "weights": weights_name,
            "epoch": int(epoch),
            "batch": int(batch),
            "global_step": int(self._global_step),
            "steps_per_epoch": (self.params or {}).get("steps"),
        }
        # The pointer moves only now that the weights file is complete.
        write_bytes_atomically(self.pointer_path, json.dumps(metadata, indent=1).encode("utf-8"))
        self.last_saved = metadata
        self._delete_old_weights(keep_name=weights_name)
        return True

    # ------------------------------------------------------- Keras callbacks

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.save_freq != "epoch" and getattr(self.model, "steps_per_execution", 1) != 1:
            raise ValueError(
                "TrainingCheckpoint(save_freq=<int>) needs compile(steps_per_execution=1), because it "
                "counts single batches; use save_freq='epoch' with a larger steps_per_execution."
            )
        _remove_temporary_files(self.directory)  # left behind by a process killed mid-write
        self._epoch, self._global_step, self._batches_to_skip = 0, 0, 0
        metadata = self.latest()
        self.last_saved = metadata
        if metadata is None:
            return
        self._restore(metadata)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        if self._set_initial_epoch:
            # fit has read it by now; Keras never resets it, and a later fit (even one that
            # fails before on_train_end) must start at the epoch it asks for.
            keras_internals.set_initial_epoch(self._model, None)
            self._set_initial_epoch = False

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self._batches_to_skip > 0:  # a batch trained before the checkpoint: skipped, not counted
            self._batches_to_skip -= 1
            return
        self._global_step += 1
        if self.save_freq == "epoch" or self._global_step % self.save_freq:
            return
        if batch + 1 == (self.params or {}).get("steps"):
            self._save_at_epoch_end = True  # saved as "next epoch, batch 0" in on_epoch_end
            return
        self.save(self._epoch, batch + 1, logs)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.save_freq == "epoch" or self._save_at_epoch_end:
            self._save_at_epoch_end = False
            self.save(epoch + 1, 0, logs)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._stop_skipping()
        if self._set_initial_epoch:  # no epoch ran: the checkpoint was already at `epochs`
            keras_internals.set_initial_epoch(self._model, None)
            self._set_initial_epoch = False

    # -------------------------------------------------------------- helpers

    def _restore(self, metadata: dict) -> None:
        model = self.model
        path = os.path.join(self.directory, metadata["weights"])
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # its variables must exist to be loaded
        try:
            model.load_weights(path)
        except (ValueError, KeyError) as error:
            raise ValueError(
                f"The checkpoint {path} does not fit this model ({error}). Resume with the model and "
                "optimizer that wrote it, or point TrainingCheckpoint at a fresh directory."
            ) from None
        steps = (self.params or {}).get("steps")
        if metadata["batch"] and metadata.get("steps_per_epoch") != steps:
            raise ValueError(
                f"The checkpoint in {self.directory} was taken mid-epoch with {metadata.get('steps_per_epoch')} "
                f"batches per epoch; this fit has {steps}. Resume with the same data and batch_size."
            )
        self._epoch = metadata["epoch"]
        self._global_step = metadata["global_step"]
        keras_internals.set_initial_epoch(model, metadata["epoch"])  # fit starts at this epoch
        self._set_initial_epoch = True
        if metadata["batch"]:
            self._start_skipping(metadata["batch"])

    def _start_skipping(self, num_batches: int) -> None:
        """Makes the next `num_batches` calls of the train function consume a batch without training."""
        model = self.model
        self._batches_to_skip = num_batches
        self._original_train_function = original = keras_internals.train_function(model)
        remaining = [num_batches]

        def train_function(*args):
            remaining[0] -= 1
            if remaining[0] == 0:
                keras_internals.set_train_function(model, original)
            return _skip_batch(args)

        keras_internals.set_train_function(model, train_function)

    def _stop_skipping(self) -> None:
        if self._original_train_function is not None:
            keras_internals.set_train_function(self.model, self._original_train_function)
            self._original_train_function = None
        self._batches_to_skip = 0

    def _delete_old_weights(self, keep_name: str) -> None:
        if not is_chief():
            return
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.directory, "step-*.weights.h5")))
        older = [name for name in names if name != keep_name]
        for name in older[: max(0, len(older) - (self.keep - 1))]:
            os.remove(os.path.join(self.directory, name))


def _skip_batch(args):
    """Consumes one batch the way Keras' train function would, without a training step.

    Keras 3's fit loops call `train_function(iterator)` on TensorFlow (the
    step pulls its batch with `iterator.get_next()`), `train_function(state,
    iterator)` on JAX (the step calls `next(iterator)` and returns `(logs,
    state)`) and `train_function([batch])` on torch (the batch is already
    read). Which of these applies is read from the arguments.
    """
    state, source = (args[0], args[1]) if len(args) == 2 else (None, args[0])
    if hasattr(source, "get_next"):
        source.get_next()
    elif hasattr(source, "__next__"):
        next(source)
    return ({}, state) if len(args) == 2 else {}


def _save_weights_atomically(model: keras.Model, path: str) -> None:
    """`model.save_weights` to a temporary file beside `path`, renamed over `path` when complete (chief only)."""
    with replaced_atomically(path, ".weights.h5") as temporary:
        model.save_weights(temporary, overwrite=True)


def _remove_temporary_files(directory: str) -> None:
    if not is_chief():
        return
    for path in glob.glob(os.path.join(directory, _TEMPORARY_PREFIX + "*")):
        os.remove(path)


def _is_finite_state(model: keras.Model, logs: dict | None) -> bool:
    loss = (logs or {}).get("loss")
    if loss is not None and not np.isfinite(float(loss)):
        return False
    variables = list(model.weights)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    for variable in variables:
        value = keras.ops.convert_to_numpy(variable)
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            return False
    return True


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model to `<directory>/epoch_NNNN.keras` after every epoch, atomically.

    A plain `model.save` (weights, EMA, optimizer, seed states) of each
    epoch; only the newest `keep` files are kept.

    Args:
        directory: folder of the checkpoints (created if missing).
        keep: how many of the newest checkpoints to keep.

    Returns:
        A Keras callback.

    Example:
    >>> model.fit(images, labels, callbacks=[EpochCheckpoint("runs/checkpoints")])  # doctest: +SKIP
    """

    def __init__(self, directory: str, keep: int = 2) -> None:
        super().__init__()
        self.directory = os.fspath(directory)
        self.keep = int(keep)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        save_model_atomically(self.model, os.path.join(self.directory, f"epoch_{epoch + 1:04d}.keras"))
        if not is_chief():
            return
        names = os.listdir(self.directory)
        saved = sorted(name for name in names if name.startswith("epoch_") and name.endswith(".keras"))
        for name in saved[: -self.keep]:
            os.remove(os.path.join(self.directory, name))
