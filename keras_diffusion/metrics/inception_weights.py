"""Finding, downloading and converting the weights of the FID Inception network.

The weights are those of the 2015-12-05 TensorFlow Inception graph that FID is
defined with, in the layout of the public PyTorch port (TorchScript
`inception-2015-12-05.pt`, used by StyleGAN2-ADA and EDM): an `.npz` keyed by
the port's parameter names, e.g. `net.layers.conv.weight` with shape OIHW.

Where they come from, first match wins:

1. an explicit path to such an `.npz`;
2. the environment variable `KERAS_DIFFUSION_FID_WEIGHTS` (a path);
3. a converted copy cached at `~/.keras/keras_diffusion/` (`$KERAS_HOME`);
4. a download of the TorchScript file, converted once into that cache. This
   step needs PyTorch for reading TorchScript.

There is no fallback to other weights: FID numbers computed with any other
network are not comparable with published ones.
"""

import os
from collections.abc import Mapping

import keras
import numpy as np

from keras_diffusion.data.files import save_npz_atomically
from keras_diffusion.runtime.system import CACHE_SUBDIR, keras_home

WEIGHTS_ENV_VAR = "KERAS_DIFFUSION_FID_WEIGHTS"
TORCHSCRIPT_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
)
TORCHSCRIPT_FILENAME = "inception-2015-12-05.pt"
CONVERTED_FILENAME = "inception-2015-12-05-fid.npz"
_PARAMETER_SUFFIXES = (".weight", ".beta", ".mean", ".var")


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
        ImportError: when the weights must be converted but PyTorch is missing.

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


def download_and_convert_weights(destination: str | None = None) -> str:
    """Downloads the TorchScript port and converts it to the `.npz` layout once.

    Args:
        destination: where to write the `.npz`; defaults to
            `cached_weights_path()`.

    Returns:
        `destination`.

    Raises:
        ImportError: when PyTorch, which reads TorchScript, is not installed.
            Checked before anything is downloaded.
        RuntimeError: when the download fails (no network); the message
            names the offline remedy.

    Example:
    >>> download_and_convert_weights()  # doctest: +SKIP
    """
    destination = destination or cached_weights_path()
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            "The FID Inception weights are not available locally and converting the "
            "public TorchScript file needs PyTorch. Either `pip install torch` (once; "
            f"the converted weights are cached at {destination}), or set "
            f"{WEIGHTS_ENV_VAR} to the path of an already converted "
            f"'{CONVERTED_FILENAME}'."
        ) from error
    try:
        torchscript_path = keras.utils.get_file(
            fname=TORCHSCRIPT_FILENAME,
            origin=TORCHSCRIPT_URL,
            cache_dir=keras_home(),
            cache_subdir=CACHE_SUBDIR,
        )
    except Exception as error:  # keras.utils.get_file raises a bare Exception for network errors
        raise RuntimeError(
            f"Could not download the FID Inception weights from {TORCHSCRIPT_URL} ({error}). "
            f"Without a network, set {WEIGHTS_ENV_VAR} to the path of a converted '{CONVERTED_FILENAME}' "
            f"(or place it at {destination})."
        ) from error
    module = torch.jit.load(torchscript_path, map_location="cpu").eval()
    state = {name: tensor.detach().cpu().numpy() for name, tensor in module.state_dict().items()}
    save_npz_atomically(destination, torchscript_state_to_npz_layout(state))
    return destination


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
