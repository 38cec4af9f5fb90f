"""Trained models shipped inside the package, to try the library without training, and the export that makes them.

`load_pretrained("mnist")` gives the main job's class-conditional MNIST model
(`examples/train_mnist.py`, the `micro` U-Net): guided digits in seconds, with
no training and no network. `keras-diffusion sample mnist --labels 3` uses it
too. `export_for_inference` writes such a file from any trained
`DiffusionModel`: its EMA weights as the network's weights, no optimizer and no
EMA copies, compressed.
"""

import os
import pathlib
import tempfile
import zipfile

import keras
import numpy as np

from keras_diffusion.data.files import replaced_atomically
from keras_diffusion.models.diffusion_model import DiffusionModel

FOLDER = pathlib.Path(__file__).parent

#: name -> (file beside this module, what it is and how it was made).
PRETRAINED: dict[str, tuple[str, str]] = {
    "mnist": (
        "mnist.keras",
        "the main job's class-conditional MNIST model (`python examples/train_mnist.py`, seed 0: the 0.30 M-"
        "parameter `micro` U-Net, v-prediction, 3,000 updates), exported with `export_for_inference`",
    ),
}


def available_pretrained() -> list[str]:
    """The names `load_pretrained` and `keras-diffusion sample NAME` accept.

    Example:
    >>> available_pretrained()
    ['mnist']
    """
    return sorted(PRETRAINED)


def pretrained_path(name: str) -> pathlib.Path:
    """The file of a shipped model.

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    if name not in PRETRAINED:
        raise ValueError(f"No shipped model named {name!r}; the package ships {available_pretrained()}.")
    return FOLDER / PRETRAINED[name][0]


def load_pretrained(name: str = "mnist") -> DiffusionModel:
    """A trained model shipped with the package, ready to `generate`.

    Args:
        name: one of `available_pretrained()`.

    Returns:
        The `DiffusionModel` (inference only: it keeps no optimizer and no EMA copy; its weights are the EMA's).

    Example:
    >>> model = load_pretrained("mnist")
    >>> model.generate(2, labels=[3, 7], guidance_scale=2.0, steps=4, seed=0).shape
    (2, 28, 28, 1)
    """
    return keras.models.load_model(pretrained_path(name), compile=False)


def export_for_inference(model: DiffusionModel, path: str | os.PathLike) -> str:
    """Writes `model` as a small inference-only `.keras` file: the EMA weights (or, without an EMA, the trained
    weights) as the network's own, no optimizer state, no EMA copies, deflate-compressed.

    The file loads with `keras.models.load_model` and samples what `model.generate(..., use_ema=True)` samples.

    Args:
        model: a trained `DiffusionModel`.
        path: the `.keras` file to write (atomically).

    Returns:
        `path` as a string.

    Example:
    >>> export_for_inference(keras.models.load_model("runs/mnist/model.keras"), "mnist.keras")  # doctest: +SKIP
    """
    if type(model) is not DiffusionModel:
        raise TypeError(f"export_for_inference takes a DiffusionModel; received {type(model).__name__}.")
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise ValueError(f"The exported file must end in .keras; received {path!r}.")
    config = {**model.get_config(), "ema_decay": None, "ema_std": None}
    copy = DiffusionModel.from_config(config)
    averaged = model.weight_averages.sets[0] if model.weight_averages.sets else model.denoiser.trainable_variables
    pairs = list(zip(copy.denoiser.trainable_variables, averaged, strict=True))
    pairs += list(zip(copy.denoiser.non_trainable_variables, model.denoiser.non_trainable_variables, strict=True))
    for target, source in pairs:
        target.assign(np.asarray(keras.ops.convert_to_numpy(source)))
    with tempfile.TemporaryDirectory() as folder:
        stored = os.path.join(folder, "stored.keras")
        keras.Model.save(copy, stored)  # Keras' own writer (the model's `save` writes atomically, by the chief)
        with zipfile.ZipFile(stored) as source, replaced_atomically(path, ".keras") as compressed:
            with zipfile.ZipFile(compressed, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as target:
                for member in source.infolist():
                    target.writestr(member.filename, source.read(member.filename))
    return path
