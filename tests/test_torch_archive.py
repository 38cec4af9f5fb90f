"""Reading PyTorch archives without PyTorch: the real format, the writer the download tests use, and refusals."""

import io
import os
import pathlib
import zipfile

import numpy as np
import pytest
from torch_archive_writer import command_pickle, torchscript_bytes

from keras_diffusion.data.torch_archive import CorruptArchiveError, UnsafeArchiveError, read_torch_archive

DATA = pathlib.Path(__file__).parent / "data"


def test_a_module_scripted_and_saved_by_pytorch_reads_as_its_state_dict():
    """tests/data/torchscript_module.pt was written by `torch.jit.save` (PyTorch 2.13.0, CPU) from a module tree named
    like the FID port (net.layers.conv.{weight,beta,mean,var}, a ModuleDict, an `output` Linear), with a transposed
    (non-contiguous) float32, an int64, a float16 and a bool buffer; the .npz beside it is its `state_dict()`."""
    tensors = read_torch_archive(DATA / "torchscript_module.pt")
    expected = np.load(DATA / "torchscript_module.npz")
    assert list(tensors) == list(expected.files)  # the same names, in the module's order
    for name in expected.files:
        assert tensors[name].dtype == expected[name].dtype and tensors[name].shape == expected[name].shape, name
        np.testing.assert_array_equal(tensors[name], expected[name])


def test_the_test_writer_round_trips_through_the_reader():
    rng = np.random.default_rng(0)
    tensors = {
        "net.layers.conv.weight": rng.standard_normal((4, 3, 3, 3)).astype("float32"),
        "net.layers.conv.beta": rng.standard_normal(4).astype("float32"),
        "net.layers.mixed_0.tower.conv.var": rng.random(2).astype("float32"),
        "output.counts": np.arange(3, dtype="int64"),
    }
    read = read_torch_archive(io.BytesIO(torchscript_bytes(tensors)))
    assert list(read) == list(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(read[name], array)
        assert read[name].dtype == array.dtype


def test_a_pickle_that_would_run_a_command_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    archive = torchscript_bytes({"a": np.zeros(1, "float32")}, pickle_bytes=command_pickle(f"touch {marker}"))
    with pytest.raises(UnsafeArchiveError, match="os.system"):
        read_torch_archive(io.BytesIO(archive))
    assert not marker.exists()


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.99])
def test_a_truncated_archive_is_reported_as_corrupt(cut):
    data = torchscript_bytes({"net.layers.conv.weight": np.ones((8, 8), "float32")})
    with pytest.raises(CorruptArchiveError):
        read_torch_archive(io.BytesIO(data[: int(len(data) * cut)]))


def test_a_storage_too_short_for_its_tensor_is_reported_as_corrupt():
    data = torchscript_bytes({"w": np.ones((4, 4), "float32")})
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in source.namelist():
            archive.writestr(name, source.read(name)[:8] if name.endswith("data/0") else source.read(name))
    with pytest.raises(CorruptArchiveError, match="reaches element 15 of a storage of 2"):
        read_torch_archive(io.BytesIO(out.getvalue()))


def test_a_file_of_another_format_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(os.urandom(256))
    with pytest.raises(CorruptArchiveError, match="Not a PyTorch zip archive"):
        read_torch_archive(path)


def _archive_with_pickle(body: bytes) -> io.BytesIO:
    return io.BytesIO(torchscript_bytes({"a": np.zeros(1, "float32")}, pickle_bytes=body))


@pytest.mark.parametrize(
    "body",
    [
        b"\x80\x02ctorch\nFloatStorage\n}X\x05\x00\x00\x00dtypeX\x02\x00\x00\x00i8sb.",  # BUILD on a storage type
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}X\x0c\x00\x00\x00__defaults__(K\x05tsb.",  # on a rebuild function
        b"\x80\x02ccollections\nOrderedDict\n}X\x03\x00\x00\x00getK\x01sb.",  # on the dict class
    ],
)
def test_a_pickle_cannot_change_the_readers_own_objects_for_the_next_file(body):
    with pytest.raises((UnsafeArchiveError, CorruptArchiveError)):
        read_torch_archive(_archive_with_pickle(body))
    tensors = {"net.layers.conv.weight": np.arange(6, dtype="float32").reshape(2, 3)}
    read = read_torch_archive(io.BytesIO(torchscript_bytes(tensors)))  # the next file reads as before
    np.testing.assert_array_equal(read["net.layers.conv.weight"], tensors["net.layers.conv.weight"])


def test_a_list_that_contains_itself_is_walked_once():
    assert read_torch_archive(_archive_with_pickle(b"\x80\x02]q\x00h\x00a.")) == {}


def test_a_stride_zero_tensor_far_larger_than_its_storage_is_refused():
    from keras_diffusion.data.torch_archive import _rebuild_tensor

    with pytest.raises(CorruptArchiveError, match="implausibly"):
        _rebuild_tensor(np.zeros(1, "float32"), 0, (10**12,), (0,))
    np.testing.assert_array_equal(_rebuild_tensor(np.arange(2, dtype="float32"), 0, (3, 2), (0, 1)), [[0, 1]] * 3)
