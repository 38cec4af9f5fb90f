"""Writes archives in the layout `torch.jit.save` writes, without PyTorch, for the download tests.

The pickle is emitted opcode by opcode as PyTorch 2.13 emits it for a scripted
module (checked against tests/data/torchscript_module.pt, written by PyTorch
itself): each module a `__torch__` object built from a dict of its attributes,
each tensor `torch._utils._rebuild_tensor_v2` of a persistent `storage` record
whose bytes lie in `<root>/data/<key>`.
"""

import io
import struct
import zipfile

import numpy as np

STORAGES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}


class _Pickle:
    def __init__(self):
        self.out = io.BytesIO()
        self.out.write(b"\x80\x02")  # PROTO 2

    def global_(self, module: str, name: str):
        self.out.write(b"c" + f"{module}\n{name}\n".encode())

    def text(self, value: str):
        data = value.encode()
        self.out.write(b"X" + struct.pack("<I", len(data)) + data)

    def integer(self, value: int):
        self.out.write(b"J" + struct.pack("<i", value))

    def ints(self, values):
        self.out.write(b"(")
        for value in values:
            self.integer(int(value))
        self.out.write(b"t")

    def raw(self, opcodes: bytes):
        self.out.write(opcodes)


def _write_tensor(pickle: _Pickle, array: np.ndarray, storages: dict):
    key = str(len(storages))
    storages[key] = np.ascontiguousarray(array)
    pickle.global_("torch._utils", "_rebuild_tensor_v2")
    pickle.raw(b"((")  # MARK (args) MARK (persistent id)
    pickle.text("storage")
    pickle.global_("torch", STORAGES[array.dtype])
    pickle.text(key)
    pickle.text("cpu")
    pickle.integer(array.size)
    pickle.raw(b"tQ")  # TUPLE, BINPERSID
    pickle.integer(0)
    pickle.ints(array.shape)
    pickle.ints([s // array.itemsize for s in np.ascontiguousarray(array).strides])
    pickle.raw(b"\x89")  # requires_grad False
    pickle.global_("collections", "OrderedDict")
    pickle.raw(b")Rt")  # EMPTY_TUPLE REDUCE (the hooks), TUPLE (the args)
    pickle.raw(b"R")  # REDUCE


def _write_module(pickle: _Pickle, name: str, tree: dict, storages: dict):
    pickle.global_("__torch__", name)
    pickle.raw(b")\x81}(")  # EMPTY_TUPLE NEWOBJ EMPTY_DICT MARK
    pickle.text("training")
    pickle.raw(b"\x89")
    for key, value in tree.items():
        pickle.text(key)
        if isinstance(value, dict):
            _write_module(pickle, key.title().replace("_", ""), value, storages)
        else:
            _write_tensor(pickle, value, storages)
    pickle.raw(b"ub")  # SETITEMS BUILD


def tree_of(tensors: dict[str, np.ndarray]) -> dict:
    """{"a.b.c": x} -> {"a": {"b": {"c": x}}}, the module tree of dotted names."""
    root: dict = {}
    for name, array in tensors.items():
        node = root
        *parents, leaf = name.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = np.asarray(array)
    return root


def torchscript_bytes(tensors: dict[str, np.ndarray], root: str = "inception-2015-12-05", pickle_bytes: bytes | None = None) -> bytes:
    """A TorchScript-layout archive of a module tree holding `tensors` (float32 or int64) under their dotted names.

    `pickle_bytes` replaces the data.pkl record (to test what the reader refuses).
    """
    storages: dict = {}
    pickle = _Pickle()
    _write_module(pickle, "InceptionV3", tree_of(tensors), storages)
    pickle.raw(b".")  # STOP
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{root}/data.pkl", pickle_bytes if pickle_bytes is not None else pickle.out.getvalue())
        for key, array in storages.items():
            archive.writestr(f"{root}/data/{key}", array.astype(array.dtype.newbyteorder("<")).tobytes())
        archive.writestr(f"{root}/version", "3\n")
        archive.writestr(f"{root}/byteorder", "little")
    return out.getvalue()


def command_pickle(command: str) -> bytes:
    """A pickle that would run `os.system(command)` when loaded by an unrestricted unpickler."""
    body = b"\x80\x02cos\nsystem\n(X" + struct.pack("<I", len(command.encode())) + command.encode() + b"tR."
    return body
