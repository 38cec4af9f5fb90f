"""Image grids of samples, as arrays and as a per-epoch PNG callback."""

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from keras_diffusion.data.files import save_image_atomically
from keras_diffusion.data.images import as_uint8_images
from keras_diffusion.samplers import Sampling


def make_image_grid(images: Any, columns: int, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tiles images row by row into one image, `padding` pixels apart.

    Args:
        images: `(N, H, W, C)`, uint8 or floats in [0, 1], `N` a multiple of
            `columns`.
        columns: images per row.
        padding: pixels between (and around) tiles.
        pad_value: intensity of the padding in [0, 1].

    Returns:
        A float32 array `(rows * (H + p) + p, columns * (W + p) + p, C)` in [0, 1].

    Example:
    >>> make_image_grid(np.zeros((6, 4, 4, 1)), columns=3, padding=1).shape
    (11, 16, 1)
    """
    tiles = as_uint8_images(images).astype(np.float32) / 255.0
    count, height, width, channels = tiles.shape
    if columns < 1 or count % columns:
        raise ValueError(f"{count} images do not fill rows of {columns} columns; pass a multiple of {columns} images.")
    rows = count // columns
    grid = np.full(
        (rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
        pad_value,
        dtype=np.float32,
    )
    for index, tile in enumerate(tiles):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top : top + height, left : left + width] = tile
    return grid


class ImageGridCallback(keras.callbacks.Callback):
    """Saves a grid of generated images (optionally over real ones) as a PNG per epoch.

    A class-conditional model (`model.num_classes` not None) gets one row per
    class, or per entry of `labels`; an unconditional one `rows` rows. With
    `real_images`, as many rows of real images follow under a separating
    band, e.g. 4 generated rows over 4 real rows. The seed is fixed, so the
    grids of successive epochs show the same noise through a changing model.
    Files are `<directory>/epoch_0001.png`, ... written atomically.

    Args:
        directory: where the PNGs go (created if missing).
        every_n_epochs: save after every n-th epoch (and the last one).
        rows: rows of an unconditional model's grid.
        columns: images per row.
        labels: classes, one per row, for a conditional model; `None` for
            all classes `0..num_classes-1`.
        real_images: real images (uint8 or floats in [0, 1]) shown under the
            generated ones; the first `rows * columns` are used.
        sampling: how to generate (`keras_diffusion.samplers.Sampling`: the
            sampler, its steps, the guidance weight, ...); None for
            `generate`'s defaults.
        seed: sampling seed, the same at every epoch.

    Returns:
        A Keras callback.

    Example:
    >>> grids = ImageGridCallback("runs/grids", every_n_epochs=5, sampling=Sampling("ddim", steps=50))  # doctest: +SKIP
    >>> model.fit(images, labels, epochs=50, callbacks=[grids])  # doctest: +SKIP
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        every_n_epochs: int = 1,
        rows: int = 4,
        columns: int = 8,
        labels: Sequence[int] | None = None,
        real_images: Any = None,
        sampling: Sampling | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if int(every_n_epochs) < 1 or int(rows) < 1 or int(columns) < 1:
            raise ValueError(
                f"every_n_epochs, rows and columns must be >= 1; got {every_n_epochs}, {rows}, {columns}."
            )
        self.directory = os.fspath(directory)
        self.every_n_epochs = int(every_n_epochs)
        self.rows = int(rows)
        self.columns = int(columns)
        self.labels = None if labels is None else [int(label) for label in labels]
        self.real_images = None if real_images is None else as_uint8_images(real_images)
        if sampling is not None and not isinstance(sampling, Sampling):
            raise TypeError(f"`sampling` must be a kd.samplers.Sampling or None; received {type(sampling).__name__}.")
        self.sampling = sampling or Sampling()
        self.seed = seed

    def _row_labels(self) -> list[int] | None:
        num_classes = getattr(self.model, "num_classes", None)
        if num_classes is None:
            if self.labels is not None:
                raise ValueError("`labels` were given but the model is unconditional (num_classes is None).")
            return None
        return self.labels if self.labels is not None else list(range(num_classes))

    def grid(self) -> np.ndarray:
        """The current grid as a float32 `(H, W, C)` array in [0, 1]."""
        row_labels = self._row_labels()
        rows = self.rows if row_labels is None else len(row_labels)
        labels = None if row_labels is None else np.repeat(row_labels, self.columns)
        generated = self.model.generate(rows * self.columns, labels=labels, seed=self.seed, **self.sampling.arguments())
        grid = make_image_grid(generated, self.columns)
        if self.real_images is None:
            return grid
        real_rows = min(rows, len(self.real_images) // self.columns)
        if real_rows == 0:
            return grid
        real = self.real_images[: real_rows * self.columns]
        if real.shape[1:] != generated.shape[1:]:
            raise ValueError(f"real_images have shape {real.shape[1:]}; generated ones {generated.shape[1:]}.")
        separator = np.full((4, grid.shape[1], grid.shape[2]), 0.5, dtype=np.float32)
        return np.concatenate([grid, separator, make_image_grid(real, self.columns)], axis=0)

    def path_for_epoch(self, epoch: int) -> str:
        """The PNG of the 0-based `epoch`."""
        return os.path.join(self.directory, f"epoch_{epoch + 1:04d}.png")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        last_epoch = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every_n_epochs and epoch + 1 != last_epoch:
            return
        save_image_atomically(self.path_for_epoch(epoch), self.grid())
