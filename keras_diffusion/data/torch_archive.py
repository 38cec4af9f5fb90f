"""Reading the tensors of a PyTorch archive (`torch.save` or TorchScript `torch.jit.save`) without PyTorch.

Such a file is a zip: `<root>/data.pkl` pickles the saved object (a module tree
for TorchScript, whose classes are named `__torch__.*`), and every tensor's
bytes lie raw in `<root>/data/<key>`. `read_torch_archive` parses it with
NumPy and the standard library. Unpickling can run code, so the reader admits
only the records that rebuild tensors, lists and attribute holders (what
PyTorch's own `weights_only` loading admits, plus the `__torch__` classes of a
TorchScript module tree, which become plain attribute holders) and refuses
anything else, whatever the file's checksum.
"""

import collections
import io
import pickle
import zipfile

import numpy as np

#: PyTorch's storage classes and the NumPy dtypes of their bytes (little-endian, as torch writes them).
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class UnsafeArchiveError(ValueError):
    """The archive's pickle asks for something other than tensors and plain containers; nothing of it was run."""


class CorruptArchiveError(ValueError):
    """The file is not a readable PyTorch archive (truncated, damaged, or another format)."""


#: Elements one tensor may have per element of its storage (a stride-0 view repeats them; more is an attack).
MAX_EXPANSION = 64


class ScriptObject:
    """What a `__torch__.*` object of a TorchScript archive becomes: its attributes, nothing else."""

    def __init__(self, *args):
        pass

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise UnsafeArchiveError(
                f"A TorchScript object's state must be a dict of attributes; found {type(state).__name__}."
            )
        self.__dict__.update(state)


class _Admitted:
    """An admitted callable as the unpickler sees it: callable, and refusing to have its state set (BUILD), so
    that one file cannot change what the reader does with the next."""

    __slots__ = ("_function",)

    def __init__(self, function):
        object.__setattr__(self, "_function", function)

    def __call__(self, *args):
        return self._function(*args)

    def __setstate__(self, state):
        raise UnsafeArchiveError("The archive's pickle tries to change one of the reader's own callables.")

    def __setattr__(self, name, value):
        raise UnsafeArchiveError("The archive's pickle tries to change one of the reader's own callables.")


class _StorageType:
    """Stands for `torch.FloatStorage` & co. in a persistent id: the dtype of a storage's bytes (made per read)."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", np.dtype(STORAGE_DTYPES[name]))

    def __setstate__(self, state):
        raise UnsafeArchiveError("The archive's pickle tries to change a storage type.")

    def __setattr__(self, name, value):
        raise UnsafeArchiveError("The archive's pickle tries to change a storage type.")


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    """`torch._utils._rebuild_tensor_v2`: a strided view of a storage, copied into its own array."""
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if any(s < 0 for s in size + stride) or offset < 0:
        raise CorruptArchiveError(f"A tensor has a negative size, stride or offset ({size}, {stride}, {offset}).")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset - 1
    if last >= len(storage):
        raise CorruptArchiveError(f"A tensor of shape {size} reaches element {last} of a storage of {len(storage)}.")
    if int(np.prod(size, dtype=np.float64)) > MAX_EXPANSION * max(len(storage), 1):
        raise CorruptArchiveError(f"A tensor of shape {size} repeats a storage of {len(storage)} elements implausibly.")
    if not all(size):
        return np.zeros(size, storage.dtype)
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=[s * storage.itemsize for s in stride])
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *state):
    """`torch._utils._rebuild_parameter`: a parameter is its tensor."""
    return data


def _list(values):
    return list(values)


def _restore_type_tag(value, type_string):
    return value


#: (module, name) -> what it becomes. Everything not here, and not a `__torch__.*` class, is refused.
_ADMITTED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch.jit._pickle", "build_intlist"): _list,
    ("torch.jit._pickle", "build_doublelist"): _list,
    ("torch.jit._pickle", "build_boollist"): _list,
    ("torch.jit._pickle", "build_tensorlist"): _list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self._archive, self._prefix, self._storages = archive, prefix, {}

    def find_class(self, module: str, name: str):
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        admitted = _ADMITTED.get((module, name))
        if admitted is not None:
            return _Admitted(admitted)
        if module == "__torch__" or module.startswith("__torch__."):
            return type(name, (ScriptObject,), {"__module__": module})
        raise UnsafeArchiveError(
            f"The archive's pickle asks for {module}.{name}, which does not rebuild a tensor; it was not loaded "
            "(a pickle can run code). Use the published file, or an archive of tensors only."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafeArchiveError(f"Unknown persistent record {pid!r} in the archive's pickle.")
        storage_type, key = pid[1], str(pid[2])
        if key not in self._storages:
            try:
                data = self._archive.read(f"{self._prefix}data/{key}")
            except KeyError:
                raise CorruptArchiveError(f"The archive lacks the storage data/{key} its pickle refers to.") from None
            if len(data) % storage_type.dtype.itemsize:
                raise CorruptArchiveError(
                    f"Storage data/{key} has {len(data)} bytes, not whole {storage_type.name} items."
                )
            self._storages[key] = np.frombuffer(data, storage_type.dtype)
        return self._storages[key]


def read_torch_archive(path_or_file) -> dict[str, np.ndarray]:
    """Every tensor of a PyTorch archive, keyed by its dotted path in the saved object (`net.layers.conv.weight`).

    Args:
        path_or_file: the archive's path, or a binary file object.

    Returns:
        name -> NumPy array, in the pickle's order. For a TorchScript module the
        names are its attribute paths, as `module.state_dict()` gives them.

    Raises:
        CorruptArchiveError: the file is not a complete PyTorch zip archive.
        UnsafeArchiveError: its pickle asks for anything but tensors and plain containers.

    Example:
    >>> read_torch_archive(io.BytesIO(b"not a zip"))
    Traceback (most recent call last):
    ...
    keras_diffusion.data.torch_archive.CorruptArchiveError: Not a PyTorch zip archive (File is not a zip file).
    """
    try:
        archive = zipfile.ZipFile(path_or_file)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise CorruptArchiveError(f"Not a PyTorch zip archive ({error}).") from None
    with archive:
        pickles = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
        if len(pickles) != 1:
            raise CorruptArchiveError(f"Expected one <root>/data.pkl in the archive; found {pickles or 'none'}.")
        prefix = pickles[0][: -len("data.pkl")]
        try:
            record = archive.read(pickles[0])
            saved = _RestrictedUnpickler(io.BytesIO(record), archive, prefix).load()
            tensors: dict[str, np.ndarray] = {}
            _collect(saved, "", tensors, set())
        except (UnsafeArchiveError, CorruptArchiveError):
            raise
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, OverflowError, RecursionError, MemoryError) as error:  # fmt: skip
            message = f"The archive's pickle cannot be read ({type(error).__name__}: {error})."
            raise CorruptArchiveError(message) from None
    return tensors


def _collect(value, name: str, tensors: dict, seen: set) -> None:
    """Every array under `value`: attributes of script objects, dict items and list entries, by dotted path.

    A container met twice (a module shared by two parents, or a cycle) is walked once, under its first path.
    """
    if isinstance(value, np.ndarray):
        tensors[name] = value
        return
    if not isinstance(value, (ScriptObject, dict, list, tuple)) or id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, ScriptObject):
        items = vars(value).items()
    else:
        items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in items:
        _collect(item, f"{name}.{key}" if name else str(key), tensors, seen)
