"""Training curves (loss, FID, ...) against updates and training seconds, drawn to a PNG."""

import io
import os
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import keras
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from keras_diffusion.callbacks.clock import TrainingClock
from keras_diffusion.data.files import write_bytes_atomically


class CurvePoint(NamedTuple):
    """One value of a metric and when it was taken: epoch, optimizer updates and training seconds."""

    epoch: float
    updates: int | None
    seconds: float | None
    value: float


#: The x-axes `plot_training_curves` can draw a metric against.
X_AXES = ("epoch", "updates", "seconds")
_AXIS_LABELS = {"epoch": "epoch", "updates": "optimizer updates", "seconds": "training seconds"}


def plot_training_curves(
    history: Mapping[str, Sequence[Sequence[float]]],
    path: str | os.PathLike,
    title: str | None = None,
    x_axes: Sequence[str] = ("updates", "seconds"),
) -> None:
    """Draws each metric (with its `val_` twin) against each x-axis and saves a PNG atomically.

    One row of panels per metric, one column per x-axis, so FID can be read
    against optimizer updates and against training seconds side by side.
    Uses a standalone Agg `Figure`, never `pyplot`, so it works headless and
    does not touch the global matplotlib state.

    Args:
        history: metric name -> list of `CurvePoint`s (or of `(epoch, value)`
            pairs: a history of pairs only is drawn against the epoch); metrics
            evaluated only now and then (FID) simply have fewer points.
        path: the destination `.png`.
        title: optional figure title.
        x_axes: some of `"epoch"`, `"updates"`, `"seconds"`.

    Returns:
        None.

    Example:
    >>> import tempfile
    >>> plot_training_curves({"loss": [CurvePoint(1, 100, 30.0, 0.5), CurvePoint(2, 200, 60.0, 0.3)],
    ...                       "fid": [CurvePoint(2, 200, 60.0, 40.0)]},
    ...                      os.path.join(tempfile.mkdtemp(), "curves.png"))
    """
    unknown = [axis for axis in x_axes if axis not in X_AXES]
    if unknown or not x_axes:
        raise ValueError(f"x_axes must be a non-empty selection of {X_AXES}; received {tuple(x_axes)}.")
    points = {name: [_as_point(point) for point in values] for name, values in history.items()}
    if all(point.updates is None and point.seconds is None for values in points.values() for point in values):
        x_axes = ("epoch",)  # only (epoch, value) pairs, as before curves knew updates and seconds
    panels = sorted({name[4:] if name.startswith("val_") else name for name in points}, key=lambda n: (n != "loss", n))
    rows, columns = max(len(panels), 1), len(x_axes)
    figure = Figure(figsize=(4.5 * columns, 3.0 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for row, panel in enumerate(panels):
        for column, axis_name in enumerate(x_axes):
            axes = figure.add_subplot(rows, columns, row * columns + column + 1)
            for name in (panel, f"val_{panel}"):
                drawn = [p for p in points.get(name, ()) if getattr(p, axis_name) is not None]
                if drawn:
                    xs = [getattr(p, axis_name) for p in drawn]
                    axes.plot(xs, [p.value for p in drawn], marker="o" if len(drawn) < 30 else None, label=name)
            axes.set_title(panel)
            axes.set_xlabel(_AXIS_LABELS[axis_name])
            if axis_name != "seconds":
                axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.3)
            if f"val_{panel}" in points:
                axes.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomically(os.fspath(path), buffer.getvalue())


def _as_point(point: Sequence[float]) -> CurvePoint:
    if isinstance(point, CurvePoint):
        return point
    if len(point) == 2:
        return CurvePoint(point[0], None, None, point[1])
    return CurvePoint(*point)


class TrainingCurvesCallback(keras.callbacks.Callback):
    """Redraws the loss / FID / ... curves, against updates and training seconds, to one PNG.

    Records every finite numeric value of the epoch `logs` at the end of
    each epoch, and values that other callbacks put into a batch's `logs`
    within an epoch (`FIDCallback(every_n_updates=...)` or `every_seconds`),
    each with the epoch, the optimizer updates and the training seconds
    (a `TrainingClock`: time inside training batches) at which it was
    taken. Put it after the callbacks whose values it should draw. The PNG
    is overwritten atomically after every epoch and new evaluation, so it
    can be watched while training runs.

    Args:
        path: the `.png` to write.
        metrics: names to plot (with their `val_` twins); `None` for all.
        x_axes: what to draw each metric against: some of `"epoch"`,
            `"updates"`, `"seconds"`.

    Returns:
        A Keras callback; its `history` maps names to lists of `CurvePoint`.

    Example:
    >>> curves = TrainingCurvesCallback("runs/curves.png")  # doctest: +SKIP
    >>> model.fit(images, epochs=20, callbacks=[fid_callback, curves])  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike,
        metrics: Sequence[str] | None = None,
        x_axes: Sequence[str] = ("updates", "seconds"),
    ) -> None:
        super().__init__()
        if not x_axes or any(axis not in X_AXES for axis in x_axes):
            raise ValueError(f"x_axes must be a non-empty selection of {X_AXES}; received {tuple(x_axes)}.")
        self.path = os.fspath(path)
        self.metrics = None if metrics is None else list(metrics)
        self.x_axes = tuple(x_axes)
        self.history: dict[str, list[CurvePoint]] = {}
        self.clock = TrainingClock()
        self._epoch = 0
        self._batches_in_epoch = 0
        self._step_metrics = {"loss"}

    def _wanted(self, name: str) -> bool:
        if self.metrics is None:
            return True
        return name in self.metrics or (name.startswith("val_") and name[4:] in self.metrics)

    def _record(self, logs: Mapping | None, names: Callable[[str], bool], epoch: float) -> bool:
        recorded = False
        for name, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            points = self.history.get(name)
            if not names(name) or not self._wanted(name) or not np.isfinite(value):
                continue
            if points and points[-1].updates == self.clock.updates:
                continue  # already taken at this update (an evaluation at an epoch's last batch)
            self.history.setdefault(name, []).append(CurvePoint(epoch, self.clock.updates, self.clock.seconds, value))
            recorded = True
        return recorded

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.history = {}
        # Read once: on JAX every access to `self.model` inside an epoch syncs the training state.
        self._step_metrics = set(getattr(self.model, "metrics_names", None) or ["loss"])

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch, self._batches_in_epoch = epoch, 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.clock.batch_begin()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.clock.batch_end()
        self._batches_in_epoch += 1
        steps = (self.params or {}).get("steps") or 0
        fraction = min(self._batches_in_epoch / steps, 1.0) if steps else 1.0
        if self._record(logs, lambda name: name not in self._step_metrics, self._epoch + fraction):
            plot_training_curves(self.history, self.path, x_axes=self.x_axes)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._record(logs, lambda name: True, epoch + 1)
        if self.history:
            plot_training_curves(self.history, self.path, x_axes=self.x_axes)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._record(logs, lambda name: name not in self._step_metrics, self._epoch + 1):
            plot_training_curves(self.history, self.path, x_axes=self.x_axes)
