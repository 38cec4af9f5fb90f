"""The trainable models moved beside DiffusionModel; their old module paths and saved configs still work."""

import importlib
import sys

import keras
import pytest

import keras_diffusion as kd

MOVED = [
    ("keras_diffusion.models.ardm", "keras_diffusion.ardm", "ARDM"),
    ("keras_diffusion.models.autoencoder", "keras_diffusion.autoencoder", "AutoencoderKL"),
    ("keras_diffusion.models.denoising_autoencoder", "keras_diffusion.denoising_autoencoder", "DenoisingAutoencoder"),
]


@pytest.mark.parametrize("old, new, name", MOVED)
def test_an_old_module_path_imports_the_same_class_with_a_deprecation_warning(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=new):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name) is getattr(kd.models, name)


def test_a_config_saved_under_the_old_module_path_loads():
    model = kd.models.DenoisingAutoencoder(image_shape=(8, 8, 1), filters=(4, 4), code_channels=2, seed=7)
    config = keras.saving.serialize_keras_object(model)
    config["module"] = "keras_diffusion.models.denoising_autoencoder"  # what files saved before the move hold
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is kd.models.DenoisingAutoencoder and restored.get_config() == model.get_config()
