"""Training curves (loss, FID, ...) drawn to a PNG after every epoch."""

import io
import math
import os
from collections.abc import Mapping, Sequence

import keras
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from keras_diffusion.metrics.atomic_files import write_bytes_atomically


def plot_training_curves(
    history: Mapping[str, Sequence[tuple[int, float]]], path: str | os.PathLike, title: str | None = None
) -> None:
    """Draws one panel per metric (with its `val_` twin) and saves a PNG atomically.

    Uses a standalone Agg `Figure`, never `pyplot`, so it works headless and
    does not touch the global matplotlib state.

    Args:
        history: metric name -> list of `(epoch, value)`; metrics evaluated
            only on some epochs (FID) simply have fewer points.
        path: the destination `.png`.
        title: optional figure title.

    Returns:
        None.

    Example:
    >>> import tempfile
    >>> plot_training_curves({"loss": [(1, 0.5), (2, 0.3)], "fid": [(2, 40.0)]},
    ...                      os.path.join(tempfile.mkdtemp(), "curves.png"))
    """
    panels = sorted({name[4:] if name.startswith("val_") else name for name in history}, key=lambda n: (n != "loss", n))
    figure = Figure(figsize=(4.5 * min(len(panels), 3), 3.2 * math.ceil(max(len(panels), 1) / 3)), dpi=100)
    FigureCanvasAgg(figure)
    columns = min(max(len(panels), 1), 3)
    rows = math.ceil(max(len(panels), 1) / columns)
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        for name in (panel, f"val_{panel}"):
            points = history.get(name)
            if points:
                epochs, values = zip(*points)
                axes.plot(epochs, values, marker="o" if len(points) < 30 else None, label=name)
        axes.set_title(panel)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        if f"val_{panel}" in history:
            axes.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomically(os.fspath(path), buffer.getvalue())


class TrainingCurvesCallback(keras.callbacks.Callback):
    """Redraws the loss / FID / ... curves to one PNG at the end of every epoch.

    Records every finite numeric value of `logs` (so put it after
    `FIDCallback` to see `"fid"`), and overwrites `path` atomically each
    epoch, so the file can be watched while training runs.

    Args:
        path: the `.png` to write.
        metrics: names to plot (with their `val_` twins); `None` for all.

    Returns:
        A Keras callback.

    Example:
    >>> curves = TrainingCurvesCallback("runs/curves.png")  # doctest: +SKIP
    >>> model.fit(images, epochs=20, callbacks=[fid_callback, curves])  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, metrics: Sequence[str] | None = None) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.metrics = None if metrics is None else list(metrics)
        self.history: dict[str, list[tuple[int, float]]] = {}

    def _wanted(self, name: str) -> bool:
        if self.metrics is None:
            return True
        return name in self.metrics or (name.startswith("val_") and name[4:] in self.metrics)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.history = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for name, value in (logs or {}).items():
            try:
                value = float(value)
            except (TypeError, ValueError):
                continue
            if self._wanted(name) and np.isfinite(value):
                self.history.setdefault(name, []).append((epoch + 1, value))
        if self.history:
            plot_training_curves(self.history, self.path)
