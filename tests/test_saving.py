"""`save` and `save_weights` of the library's models write atomically and refuse to overwrite when told so."""

import os

import keras
import numpy as np
import pytest

import keras_diffusion as kd


@pytest.fixture(scope="module")
def model():
    return kd.models.DenoisingAutoencoder(image_shape=(8, 8, 1), filters=(4, 4), code_channels=2, seed=7)


def test_save_and_save_weights_round_trip_and_leave_no_temporary_file(model, tmp_path):
    model.save(tmp_path / "model.keras")
    model.save_weights(tmp_path / "model.weights.h5")
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "model.weights.h5"]
    restored = keras.models.load_model(tmp_path / "model.keras")
    for saved, original in zip(restored.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(saved, original)


def test_overwrite_false_refuses_an_existing_file_and_keeps_it(model, tmp_path):
    path = tmp_path / "model.keras"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(path, overwrite=False)
    assert path.read_bytes() == b"keep me" and os.listdir(tmp_path) == ["model.keras"]


def test_an_inference_export_samples_what_the_models_ema_samples_and_keeps_no_training_state(tmp_path):
    from conftest import tiny_unet

    original = kd.DiffusionModel(tiny_unet(), timesteps=20, seed=3)
    rng = np.random.default_rng(0)
    original.set_ema_weights([w + 0.05 * rng.standard_normal(w.shape).astype(w.dtype) for w in original.ema_weights()])
    path = kd.models.export_for_inference(original, tmp_path / "small.keras")
    assert os.listdir(tmp_path) == ["small.keras"]
    exported = keras.models.load_model(path)
    assert exported.weight_averages.sets == [] and getattr(exported, "optimizer", None) is None
    arguments = dict(sampler="ddim", steps=3, labels=[0, 1], seed=5)
    np.testing.assert_array_equal(exported.generate(2, **arguments), original.generate(2, use_ema=True, **arguments))
    assert not np.array_equal(exported.generate(2, **arguments), original.generate(2, use_ema=False, **arguments))
    with pytest.raises(ValueError, match=".keras"):
        kd.models.export_for_inference(original, tmp_path / "small.h5")
