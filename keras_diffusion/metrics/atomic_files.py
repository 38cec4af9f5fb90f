"""Atomic file writes: readers see the old file or the new one, never half of one."""

import io
import os
import tempfile
from collections.abc import Mapping

import numpy as np


def write_bytes_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it over `path`.

    Args:
        path: destination; its directory is created if missing.
        data: the file's contents.

    Returns:
        None.

    Example:
    >>> path = os.path.join(tempfile.mkdtemp(), "example.txt")
    >>> write_bytes_atomically(path, b"done")
    >>> open(path, "rb").read()
    b'done'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def save_npz_atomically(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes arrays as an uncompressed `.npz` with `write_bytes_atomically`.

    Args:
        path: destination.
        arrays: name -> array.

    Returns:
        None.

    Example:
    >>> path = os.path.join(tempfile.mkdtemp(), "example.npz")
    >>> save_npz_atomically(path, {"x": np.zeros(2)})
    >>> np.load(path)["x"].tolist()
    [0.0, 0.0]
    """
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomically(path, buffer.getvalue())


def save_model_atomically(model, path: str | os.PathLike) -> None:
    """`model.save(path)` through a temporary `.keras` file beside `path`, renamed over it when complete.

    Args:
        model: a Keras model.
        path: the destination `.keras` file; its directory is created if missing.

    Returns:
        None.

    Example:
    >>> import keras
    >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> save_model_atomically(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), path)
    >>> os.path.exists(path)
    True
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".keras")
    os.close(descriptor)
    try:
        model.save(temporary)
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
