"""Finding, downloading and converting the weights of the FID Inception network.

The weights are those of the 2015-12-05 TensorFlow Inception graph that FID is
defined with, in the layout of the public PyTorch port (TorchScript
`inception-2015-12-05.pt`, used by StyleGAN2-ADA and EDM): an `.npz` keyed by
the port's parameter names, e.g. `net.layers.conv.weight` with shape OIHW.

Where they come from, first match wins:

1. an explicit path to such an `.npz`;
2. the environment variable `KERAS_DIFFUSION_FID_WEIGHTS` (a path);
3. a converted copy cached at `~/.keras/keras_diffusion/` (`$KERAS_HOME`);
4. a download of the published TorchScript file, checked against its pinned
   SHA-256, read without PyTorch (`keras_diffusion.data.torch_archive`) and
   converted once into that cache. `KERAS_DIFFUSION_FID_WEIGHTS_URL` and
   `KERAS_DIFFUSION_FID_WEIGHTS_SHA256` point it at a mirror.

There is no fallback to other weights: FID numbers computed with any other
network are not comparable with published ones.
"""

import contextlib
import hashlib
import http.client
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

import keras
import numpy as np

from keras_diffusion.data.files import save_npz_atomically
from keras_diffusion.data.torch_archive import CorruptArchiveError, read_torch_archive
from keras_diffusion.runtime.system import CACHE_SUBDIR, keras_home

WEIGHTS_ENV_VAR = "KERAS_DIFFUSION_FID_WEIGHTS"
URL_ENV_VAR = "KERAS_DIFFUSION_FID_WEIGHTS_URL"
SHA256_ENV_VAR = "KERAS_DIFFUSION_FID_WEIGHTS_SHA256"
TORCHSCRIPT_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
)
#: SHA-256 of the published file (95,607,719 bytes), as k-diffusion pins it too.
TORCHSCRIPT_SHA256 = "f58cb9b6ec323ed63459aa4fb441fe750cfe39fafad6da5cb504a16f19e958f4"
CONVERTED_FILENAME = "inception-2015-12-05-fid.npz"
_PARAMETER_SUFFIXES = (".weight", ".beta", ".mean", ".var")
_CHUNK = 1 << 20


def cached_weights_path() -> str:
    """Where the converted `.npz` is cached.

    Returns:
        `<keras_home>/keras_diffusion/inception-2015-12-05-fid.npz`.

    Example:
    >>> os.path.basename(cached_weights_path())
    'inception-2015-12-05-fid.npz'
    """
    return os.path.join(keras_home(), CACHE_SUBDIR, CONVERTED_FILENAME)


def resolve_weights_path(weights: str | os.PathLike | None = None) -> str:
    """Returns the path of the FID Inception `.npz`, fetching it if needed.

    Args:
        weights: a path to the `.npz`, or `None` for the environment variable
            `KERAS_DIFFUSION_FID_WEIGHTS`, then the cache, then a download.

    Returns:
        The path of an existing `.npz` file.

    Raises:
        FileNotFoundError: when an explicitly given path does not exist.
        RuntimeError: when the weights must be downloaded and cannot be (the message names the offline remedy).
        ValueError: when the downloaded file is not the published one (checksum) or not a readable archive.

    Example:
    >>> path = resolve_weights_path()  # doctest: +SKIP
    """
    if weights is not None:
        return _existing(os.fspath(weights), "the `weights` argument")
    from_env = os.environ.get(WEIGHTS_ENV_VAR)
    if from_env:
        return _existing(from_env, f"${WEIGHTS_ENV_VAR}")
    cached = cached_weights_path()
    if os.path.exists(cached):
        return cached
    return download_and_convert_weights(cached)


def _existing(path: str, source: str) -> str:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FID Inception weights not found at {path!r} (from {source}).")
    return path


def download_and_convert_weights(
    destination: str | None = None, url: str | None = None, sha256: str | None = None, verbose: bool = True
) -> str:
    """Downloads the published TorchScript file, checks its SHA-256 and converts it to the `.npz` layout once.

    PyTorch is not needed: the file is read by `keras_diffusion.data.torch_archive`,
    which admits only the pickle records that rebuild tensors. The download goes
    to a temporary file beside `destination` and is deleted afterwards; the
    `.npz` appears there whole or not at all.

    Args:
        destination: where to write the `.npz`; defaults to `cached_weights_path()`.
        url: where to download from; default `$KERAS_DIFFUSION_FID_WEIGHTS_URL`, else `TORCHSCRIPT_URL`.
        sha256: the file's expected SHA-256; default `$KERAS_DIFFUSION_FID_WEIGHTS_SHA256`, else the
            published file's (`TORCHSCRIPT_SHA256`).
        verbose: show a progress bar while downloading.

    Returns:
        `destination`.

    Raises:
        RuntimeError: the download failed (no network); the message names the offline remedy.
        ValueError: the file's checksum differs from the expected one, or it is not a readable archive of
            the Inception parameters (`CorruptArchiveError`, `UnsafeArchiveError`). Nothing is cached then.

    Example:
    >>> download_and_convert_weights()  # doctest: +SKIP
    """
    destination = destination or cached_weights_path()
    url = url or os.environ.get(URL_ENV_VAR) or TORCHSCRIPT_URL
    expected = (sha256 or os.environ.get(SHA256_ENV_VAR) or TORCHSCRIPT_SHA256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", expected):
        raise ValueError(
            f"The expected SHA-256 must be 64 hexadecimal digits (${SHA256_ENV_VAR}); received {expected!r}."
        )
    folder = os.path.dirname(os.path.abspath(destination))
    os.makedirs(folder, exist_ok=True)
    _remove_stale_downloads(folder)
    handle, temporary = tempfile.mkstemp(prefix=".inception-download-", suffix=".pt", dir=folder)
    os.close(handle)
    try:
        digest = _download(url, temporary, verbose)
        if digest != expected:
            raise ValueError(
                f"The file downloaded from {url} has SHA-256 {digest}, not the expected {expected}: it is "
                "truncated, damaged or another file. Nothing was cached; try again, or for a mirror of another "
                f"build set {SHA256_ENV_VAR} to its checksum."
            )
        converted = torchscript_state_to_npz_layout(read_torch_archive(temporary))
        if "net.layers.conv.weight" not in converted:
            raise CorruptArchiveError(f"The archive from {url} holds no FID Inception parameters (net.layers.*).")
        save_npz_atomically(destination, converted, every_process=True)  # each process's own cache
    finally:
        os.remove(temporary)
    return destination


def _remove_stale_downloads(folder: str, older_than_seconds: float = 3600.0) -> None:
    """Deletes partial downloads left by a killed process (a running one's are younger)."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(".inception-download-") and time.time() - os.path.getmtime(path) > older_than_seconds:
            with contextlib.suppress(OSError):
                os.remove(path)


def _download(url: str, path: str, verbose: bool) -> str:
    """Streams `url` into `path`; returns the SHA-256 of what arrived."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(path, "wb") as file:
            total = int(response.headers.get("Content-Length") or 0) or None
            if verbose:
                print(f"Downloading the FID Inception weights from {url} (once; cached as {CONVERTED_FILENAME}).")
            progress = keras.utils.Progbar(total, unit_name="byte") if verbose else None
            while chunk := response.read(_CHUNK):
                file.write(chunk)
                digest.update(chunk)
                if progress is not None:
                    progress.add(len(chunk))
    except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
        raise RuntimeError(
            f"Could not download the FID Inception weights from {url} ({error}). Without a network, set "
            f"{WEIGHTS_ENV_VAR} to the path of a converted '{CONVERTED_FILENAME}', or {URL_ENV_VAR} to a mirror."
        ) from error
    return digest.hexdigest()


def torchscript_state_to_npz_layout(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames a TorchScript state dict to the `net.layers.*` npz layout.

    The feature network's parameters live under `layers.` (with or without a
    wrapping `net.` prefix); anything else, such as the 1008-way classifier
    `output.*`, is not part of the pool_3 features and is dropped. Arrays stay
    in PyTorch's OIHW order; `load_inception_weights` transposes them.

    Args:
        state: parameter name -> array, as from `module.state_dict()`.

    Returns:
        A dict keyed like `net.layers.mixed_4.tower.conv_1.weight`, float32.

    Example:
    >>> sorted(torchscript_state_to_npz_layout(
    ...     {"layers.conv.beta": np.zeros(2), "output.bias": np.zeros(3)}))
    ['net.layers.conv.beta']
    """
    converted = {}
    for name, array in state.items():
        start = name.find("layers.")
        if start < 0 or not name.endswith(_PARAMETER_SUFFIXES):
            continue
        converted["net." + name[start:]] = np.asarray(array, dtype=np.float32)
    return converted
