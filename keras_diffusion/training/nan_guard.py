"""`NaNGuard`: stops `fit` at the first NaN/inf loss and says where and why it probably happened."""

import keras
import numpy as np


class NonFiniteLossError(FloatingPointError):
    """Raised by `NaNGuard` when the training loss becomes NaN or infinite."""


class NaNGuard(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or inf, naming the step and likely causes.

    Keras' `TerminateOnNaN` only prints a line; this raises
    `NonFiniteLossError` (a `FloatingPointError`) from the batch where the
    loss first turned non-finite, with the epoch, the batch, the optimizer
    step, the learning rate and the dtype policy in the message. Because the
    error leaves `fit` at once, callbacks later in the list do not see that
    batch, and `TrainingCheckpoint` (which also refuses non-finite states)
    keeps its last good checkpoint.

    Keras reports the running mean of the loss over the epoch, so one
    non-finite batch loss makes the logged loss non-finite at that batch.

    Args:
        raise_error: True (default) raises `NonFiniteLossError`; False sets
            `model.stop_training` and prints the message instead (as
            `TerminateOnNaN` does), so `fit` returns normally.

    Example:
    >>> model.fit(images, labels, callbacks=[NaNGuard()])  # doctest: +SKIP
    """

    def __init__(self, raise_error: bool = True) -> None:
        super().__init__()
        self.raise_error = bool(raise_error)
        self._epoch = 0
        self.message = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is None or np.isfinite(float(loss)):
            return
        self.message = non_finite_loss_message(self.model, float(loss), self._epoch, batch)
        if self.raise_error:
            raise NonFiniteLossError(self.message)
        self.model.stop_training = True
        print(self.message)


def non_finite_loss_message(model: keras.Model, loss: float, epoch: int, batch: int) -> str:
    """The explanation `NaNGuard` gives for a non-finite loss.

    Args:
        model: the model being trained.
        loss: the non-finite loss value.
        epoch: 0-based epoch index (as Keras passes it to callbacks).
        batch: 0-based batch index within the epoch.

    Returns:
        A message naming the epoch and batch (1-based, as the progress bar
        counts), the optimizer step, and the likely causes with their fixes.
    """
    optimizer = model.optimizer
    step = int(keras.ops.convert_to_numpy(optimizer.iterations)) if optimizer is not None else None
    learning_rate = _learning_rate(optimizer)
    policy = model.dtype_policy.name
    causes = []
    if "float16" in policy and "bfloat16" not in policy:
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            causes.append(f"float16 overflow despite loss scaling (dtype policy {policy!r}): use 'mixed_bfloat16' or 'float32'")
        else:
            causes.append(
                f"float16 without loss scaling (dtype policy {policy!r}): wrap the optimizer in "
                "keras.optimizers.LossScaleOptimizer, or use 'mixed_bfloat16'"
            )
    rate = f"it is {learning_rate:g}; " if learning_rate is not None else ""
    causes.append(
        f"the learning rate is too high ({rate}try 10x smaller, or clip the gradients, e.g. "
        "Adam(learning_rate, clipnorm=1.0))"
    )
    causes.append(
        "NaN or inf in the training data (check np.isfinite(images).all(); `fit` checks arrays, "
        "but not every batch of a generator or tf.data pipeline)"
    )
    if "float16" not in policy:
        causes.append(f"(not float16 overflow: the dtype policy is {policy!r})")
    where = f"epoch {epoch + 1}, batch {batch + 1}" + (f" (optimizer step {step})" if step is not None else "")
    return (
        f"The training loss became {loss} at {where}; training was stopped. The last good checkpoint "
        "(if a TrainingCheckpoint is used) was not overwritten. Likely causes: "
        + "; ".join(cause if cause.startswith("(") else f"({index}) {cause}" for index, cause in enumerate(causes, 1))
        + "."
    )


def _learning_rate(optimizer) -> float | None:
    if optimizer is None:
        return None
    try:
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    except (TypeError, ValueError, AttributeError):
        return None
