"""The FID weights' real download code, end to end, through an HTTP server on 127.0.0.1.

The server serves the Inception weights of ../shared/data in the published
file's format (a TorchScript archive; tests/torch_archive_writer.py), a
truncated copy, a corrupted copy and an archive whose pickle would run a
command. The library downloads without PyTorch, checks the SHA-256, converts,
caches atomically, and the network built from the download gives the
reference features.
"""

import contextlib
import hashlib
import http.server
import os
import pathlib
import socket
import sys
import threading

import numpy as np
import pytest
from torch_archive_writer import command_pickle, torchscript_bytes

from keras_diffusion.data.torch_archive import CorruptArchiveError, UnsafeArchiveError
from keras_diffusion.metrics import inception_weights

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
WEIGHTS = pathlib.Path(os.environ.get(inception_weights.WEIGHTS_ENV_VAR) or SHARED / "inception-2015-12-05-fid.npz")
REFERENCE = WEIGHTS.with_name("inception-2015-12-05-fid.reference.npz")


@pytest.fixture(scope="module")
def published():
    """The Inception weights as the published TorchScript file lays them out (the port's `net.layers.*` names)."""
    if not WEIGHTS.is_file():
        pytest.skip(f"FID Inception weights not found at {WEIGHTS}")
    with np.load(WEIGHTS) as weights:
        tensors = {name: weights[name] for name in weights.files}
    tensors["output.weight"] = np.zeros((4, 2048), "float32")  # the classifier the features stop before
    return torchscript_bytes(tensors)


@pytest.fixture(scope="module")
def server(published):
    data = published
    files = {
        "/inception-2015-12-05.pt": data,
        "/truncated.pt": data[: len(data) // 2],
        "/corrupted.pt": data[:1000] + bytes(b ^ 0xFF for b in data[1000:1100]) + data[1100:],
        "/command.pt": torchscript_bytes({"a": np.zeros(1, "float32")}, pickle_bytes=command_pickle("touch RAN")),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    httpd.shutdown()
    thread.join()


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A user with a network and nothing cached: no weights path set, an empty KERAS_HOME."""
    monkeypatch.delenv(inception_weights.WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.delenv(inception_weights.SHA256_ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # the test server is on this machine
    return tmp_path


def serve(monkeypatch, server, name, sha256=None):
    url, files = server
    monkeypatch.setenv(inception_weights.URL_ENV_VAR, f"{url}/{name}")
    monkeypatch.setenv(inception_weights.SHA256_ENV_VAR, sha256 or hashlib.sha256(files[f"/{name}"]).hexdigest())


def cached_files(folder: pathlib.Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_the_download_is_converted_without_pytorch_and_cached_once(server, fresh_cache, monkeypatch):
    serve(monkeypatch, server, "inception-2015-12-05.pt")
    monkeypatch.setitem(sys.modules, "torch", None)  # no PyTorch: `import torch` fails
    path = inception_weights.resolve_weights_path()
    assert cached_files(fresh_cache) == ["keras_diffusion/inception-2015-12-05-fid.npz"]  # the download is gone
    with np.load(path) as converted, np.load(WEIGHTS) as original:
        assert sorted(converted.files) == sorted(original.files)
        for name in original.files:
            np.testing.assert_array_equal(converted[name], original[name])
    monkeypatch.setenv(inception_weights.URL_ENV_VAR, f"{server[0]}/missing.pt")  # a second call downloads nothing
    assert inception_weights.resolve_weights_path() == path


def test_the_network_built_from_the_download_gives_the_reference_features(server, fresh_cache, monkeypatch):
    if not REFERENCE.is_file():
        pytest.skip(f"reference features not found at {REFERENCE}")
    from keras_diffusion.metrics.inception import InceptionFeatures

    serve(monkeypatch, server, "inception-2015-12-05.pt")
    with np.load(REFERENCE) as reference:
        images, expected = reference["images_uint8_nchw"].transpose(0, 2, 3, 1), reference["features"]
    features = InceptionFeatures(batch_size=len(images))(images)  # weights=None: the cache, else the download
    np.testing.assert_allclose(features, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["truncated.pt", "corrupted.pt"])
def test_a_damaged_download_fails_its_checksum_and_caches_nothing(server, fresh_cache, monkeypatch, name):
    serve(monkeypatch, server, name, sha256=hashlib.sha256(server[1]["/inception-2015-12-05.pt"]).hexdigest())
    with pytest.raises(ValueError, match="SHA-256 .* not the expected"):
        inception_weights.resolve_weights_path()
    assert cached_files(fresh_cache) == []


def test_a_truncated_file_passed_by_an_overridden_checksum_is_still_refused(server, fresh_cache, monkeypatch):
    serve(monkeypatch, server, "truncated.pt")  # its own checksum, as a careless mirror setting would give
    with pytest.raises(CorruptArchiveError):
        inception_weights.resolve_weights_path()
    assert cached_files(fresh_cache) == []


def test_a_pickle_that_would_run_a_command_is_refused_even_with_its_checksum(server, fresh_cache, monkeypatch):
    monkeypatch.chdir(fresh_cache)
    serve(monkeypatch, server, "command.pt")
    with pytest.raises(UnsafeArchiveError, match="os.system"):
        inception_weights.resolve_weights_path()
    assert cached_files(fresh_cache) == []  # no RAN file, nothing cached


def test_without_a_network_the_error_names_the_offline_variable(fresh_cache, monkeypatch):
    with contextlib.closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv(inception_weights.URL_ENV_VAR, f"http://127.0.0.1:{closed_port}/inception-2015-12-05.pt")
    with pytest.raises(RuntimeError, match=inception_weights.WEIGHTS_ENV_VAR):
        inception_weights.resolve_weights_path()
    assert cached_files(fresh_cache) == []


def test_a_malformed_checksum_setting_is_named():
    with pytest.raises(ValueError, match=inception_weights.SHA256_ENV_VAR):
        inception_weights.download_and_convert_weights("unused.npz", url="http://127.0.0.1:9/x", sha256="abc")
