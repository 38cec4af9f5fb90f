"""Writing and reading files: atomic writes (readers see the old file or the new one, never half of
one), PNG images and `.safetensors` tensors. Every module that writes a file goes through here.

In a multi-process run (`keras_diffusion.runtime.distributed`) only the chief writes: the other processes
run the same code, so that any collective operation in it stays in step, and drop the result."""

import contextlib
import io
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Mapping

import matplotlib.image
import numpy as np

from keras_diffusion.runtime.distributed import is_chief


def write_bytes_atomically(path: str | os.PathLike, data: bytes, every_process: bool = False) -> None:
    """Writes `data` to a temporary file beside `path`, then renames it over `path`.

    Args:
        path: destination; its directory is created if missing.
        data: the file's contents.
        every_process: write on every process of a multi-process run (see `replaced_atomically`).

    Returns:
        None.

    Example:
    >>> path = os.path.join(tempfile.mkdtemp(), "example.txt")
    >>> write_bytes_atomically(path, b"done")
    >>> open(path, "rb").read()
    b'done'
    """
    with replaced_atomically(path, os.path.splitext(os.fspath(path))[1], every_process) as temporary:
        with open(temporary, "wb") as file:
            file.write(data)


@contextlib.contextmanager
def replaced_atomically(path: str | os.PathLike, suffix: str, every_process: bool = False):
    """Yields a temporary path beside `path`, renamed over `path` when the block ends; removed if it raises.

    On a process other than the chief of a multi-process run the temporary
    file lies in a private folder and is deleted instead: `path` is the chief's.

    Args:
        path: the destination; its directory is created if missing.
        suffix: the temporary file's ending (some writers choose the format by it).
        every_process: write on every process, not only the chief (a cache each
            process needs on its own machine; equal contents replace each other).

    Returns:
        A context manager yielding the temporary path to write.

    Example:
    >>> path = os.path.join(tempfile.mkdtemp(), "example.txt")
    >>> with replaced_atomically(path, ".txt") as temporary:
    ...     _ = open(temporary, "w").write("done")
    >>> open(path).read()
    'done'
    """
    if not every_process and not is_chief():
        private = tempfile.mkdtemp(prefix="keras-diffusion-not-chief-")
        try:
            yield os.path.join(private, "discarded" + suffix)
        finally:
            shutil.rmtree(private, ignore_errors=True)
        return
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    os.makedirs(directory, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(descriptor)
    try:
        yield temporary
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


def save_npz_atomically(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], every_process: bool = False) -> None:
    """Writes arrays as an uncompressed `.npz` with `write_bytes_atomically`.

    Args:
        path: destination.
        arrays: name -> array.
        every_process: write on every process of a multi-process run (see `replaced_atomically`).

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
    write_bytes_atomically(path, buffer.getvalue(), every_process)


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
    with replaced_atomically(path, ".keras") as temporary:
        model.save(temporary)


def save_image_atomically(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes an `(H, W, C)` image in [0, 1] as PNG via a temporary file.

    Args:
        path: the destination `.png`.
        image: float array with 1 or 3 channels.

    Returns:
        None.

    Example:
    >>> import tempfile
    >>> save_image_atomically(os.path.join(tempfile.mkdtemp(), "x.png"), np.zeros((4, 4, 1)))
    """
    image = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    buffer = io.BytesIO()
    if image.shape[-1] == 1:
        matplotlib.image.imsave(buffer, image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, format="png")
    else:
        matplotlib.image.imsave(buffer, image, format="png")
    write_bytes_atomically(path, buffer.getvalue())


_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "BF16": np.uint16}


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a `.safetensors` file into float32 NumPy arrays (F32, F16, BF16, F64 tensors).

    The format: an 8-byte little-endian header length, a JSON header
    `{name: {"dtype", "shape", "data_offsets": [begin, end]}}`, then the raw data.

    Example:
    >>> read_safetensors("diffusion_pytorch_model.safetensors")  # doctest: +SKIP
    """
    with open(path, "rb") as file:
        data = file.read()
    if len(data) < 8:
        raise ValueError(f"{os.fspath(path)!r} is not a safetensors file (too short).")
    (header_size,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8 : 8 + header_size])
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{os.fspath(path)!r} is not a safetensors file ({error}).") from None
    body = memoryview(data)[8 + header_size :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"Tensor {name!r} has dtype {info['dtype']}; expected one of {sorted(_SAFETENSORS_DTYPES)}.")
        begin, end = info["data_offsets"]
        array = np.frombuffer(body[begin:end], dtype=np.dtype(_SAFETENSORS_DTYPES[info["dtype"]]).newbyteorder("<"))
        if info["dtype"] == "BF16":  # bfloat16 is the upper half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = array.astype(np.float32).reshape(info["shape"])
    return tensors


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray]) -> None:
    """Writes float32 arrays as a `.safetensors` file (atomically)."""
    header, chunks, offset = {}, [], 0
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)  # the format pads the header to 8 bytes
    write_bytes_atomically(path, struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
