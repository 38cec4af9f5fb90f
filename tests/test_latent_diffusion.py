"""LatentDiffusionModel: scaling, freezing, training, sampling, callbacks and save/load."""

import warnings

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf
from latent_fixtures import as_numpy, latent_denoiser, trained_autoencoder

import keras_diffusion as kd
from keras_diffusion import DiffusionModel
from keras_diffusion.callbacks import FIDCallback, ImageGridCallback
from keras_diffusion.models.latent_diffusion_model import LatentDiffusionModel, _first_images


@pytest.fixture(scope="module")
def trained_latent():
    """(model, autoencoder weights before fit, denoiser weights before fit, History, digits)."""
    autoencoder, images, *_ = trained_autoencoder()
    model = LatentDiffusionModel(autoencoder, latent_denoiser(autoencoder.latent_shape), timesteps=100, seed=0)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    autoencoder_before = [as_numpy(v) for v in autoencoder.weights]
    denoiser_before = [as_numpy(v) for v in model.denoiser.weights]
    history = model.fit(images, batch_size=32, epochs=2, verbose=0)
    return model, autoencoder_before, denoiser_before, history, images


def test_fit_estimates_a_scale_factor_that_makes_the_latents_unit_variance(trained_latent):
    model, _, _, _, images = trained_latent
    latents = as_numpy(model(images))  # s·E(x), what the denoiser is trained on
    assert latents.shape == (len(images), 7, 7, 2)
    assert latents.std() == pytest.approx(1.0, abs=1e-4)  # fit estimated s on these images
    assert model.scale_factor == pytest.approx(1.0 / as_numpy(model.autoencoder.encode(images)).std(), rel=1e-5)


def test_adapt_sets_the_inverse_standard_deviation_of_the_encoder_means(trained_latent):
    autoencoder, images = trained_latent[0].autoencoder, trained_latent[4]
    model = LatentDiffusionModel(autoencoder, trained_latent[0].denoiser, timesteps=100, ema_decay=None)
    assert model.scale_factor is None
    scale = model.adapt(images[::-1], batch_size=128)  # the same shapes as fit's: no new compilation
    assert scale == model.scale_factor == pytest.approx(1.0 / np.std(as_numpy(autoencoder.encode(images))), rel=1e-5)
    assert model.get_config()["scale_factor"] == scale


def test_the_autoencoder_is_frozen(trained_latent):
    model, autoencoder_before, _, _, _ = trained_latent
    autoencoder = model.autoencoder
    assert not autoencoder.trainable
    for before, variable in zip(autoencoder_before, autoencoder.weights):
        np.testing.assert_array_equal(as_numpy(variable), before)
    frozen = {id(v) for v in autoencoder.weights}
    assert not any(id(v) in frozen for v in model.trainable_variables)
    reference = keras.optimizers.Adam()
    reference.build(model.denoiser.trainable_variables)
    assert len(model.optimizer.variables) == len(reference.variables)  # moments of the denoiser only


def test_the_latent_model_trains_its_denoiser(trained_latent):
    model, _, denoiser_before, history, _ = trained_latent
    assert all(np.isfinite(history.history["loss"]))
    changed = [not np.array_equal(before, as_numpy(v)) for before, v in zip(denoiser_before, model.denoiser.weights)]
    assert all(changed)


def test_generate_decodes_reproducible_images_in_the_unit_range(trained_latent):
    model = trained_latent[0]
    assert model.default_clip_denoised is False and model.sample_shape == (7, 7, 2) and model.image_shape == (28, 28, 1)
    first = model.generate(3, steps=3, seed=1)
    assert first.shape == (3, 28, 28, 1) and first.dtype == np.float32
    assert first.min() >= 0.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, model.generate(3, steps=3, seed=1))
    assert not np.array_equal(first, model.generate(3, steps=3, seed=2))


def test_generate_is_the_decoded_base_model_sample(trained_latent):
    """The sampler runs unchanged in latent space; only decode_samples differs."""
    model = trained_latent[0]
    latents = []
    model.generate(2, steps=3, seed=4, callback=lambda index, x: latents.append(x))
    decoded = as_numpy(model.autoencoder.decode(latents[-1] / model.scale_factor))
    np.testing.assert_allclose(model.generate(2, steps=3, seed=4), decoded, atol=1e-5)
    assert DiffusionModel.decode_samples is not LatentDiffusionModel.decode_samples
    assert LatentDiffusionModel.compute_loss is DiffusionModel.compute_loss
    assert LatentDiffusionModel.generate is DiffusionModel.generate


def test_latent_model_round_trips_through_save_and_load(trained_latent, tmp_path):
    model, _, _, _, images = trained_latent
    path = tmp_path / "latent.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, LatentDiffusionModel) and restored.scale_factor == model.scale_factor
    assert not restored.autoencoder.trainable
    assert {id(v) for v in restored.autoencoder.weights}.isdisjoint(id(v) for v in restored.trainable_variables)
    np.testing.assert_array_equal(as_numpy(restored(images[:4])), as_numpy(model(images[:4])))
    np.testing.assert_allclose(restored.generate(3, steps=3, seed=1), model.generate(3, steps=3, seed=1), atol=1e-6)


def test_image_grid_and_fid_callbacks_work_on_a_latent_model(trained_latent, tmp_path):
    model, _, _, _, images = trained_latent
    grids = ImageGridCallback(tmp_path, rows=2, columns=2, sampling=kd.samplers.Sampling(steps=3), real_images=images[:4])
    grids.set_model(model)
    grids.on_epoch_end(0)
    grid = matplotlib.image.imread(tmp_path / "epoch_0001.png")
    assert grid.shape[:2] == (2 * 30 + 2 + 4 + 2 * 30 + 2, 2 * 30 + 2)  # generated rows, a separator, real rows

    def pooled_features(batch):  # a cheap stand-in for Inception: 7x7 average pooling
        batch = np.asarray(batch, "float32")
        return batch.reshape(len(batch), 4, 7, 4, 7).mean(axis=(2, 4)).reshape(len(batch), 16)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # num_samples < 2048
        fid = FIDCallback(images[:64], num_samples=16, sampling=kd.samplers.Sampling(steps=3), feature_extractor=pooled_features, batch_size=16)
        fid.set_model(model)
        logs = {}
        fid.on_epoch_end(0, logs)
    assert np.isfinite(logs["fid"]) and logs["fid"] > 0


def test_latent_shape_must_match_the_denoiser():
    autoencoder = trained_autoencoder()[0]
    with pytest.raises(ValueError, match=r"image_shape=\(7, 7, 2\)"):
        LatentDiffusionModel(autoencoder, latent_denoiser((7, 7, 4)))


def test_the_autoencoder_must_encode_and_decode():
    with pytest.raises(TypeError, match="encode"):
        LatentDiffusionModel(keras.layers.Dense(2), latent_denoiser((7, 7, 2)))


def test_sampling_before_the_scale_is_known_says_to_adapt():
    autoencoder = trained_autoencoder()[0]
    model = LatentDiffusionModel(autoencoder, latent_denoiser(autoencoder.latent_shape), timesteps=10)
    with pytest.raises(ValueError, match="adapt"):
        model.decode_samples(np.zeros((1, 7, 7, 2), "float32"))
    with pytest.raises(ValueError, match="scale_factor"):
        LatentDiffusionModel(autoencoder, latent_denoiser(autoencoder.latent_shape), scale_factor=0.0)
    with pytest.raises(ValueError, match="autoencoder's image_shape"):
        model.adapt(np.zeros((4, 32, 32, 1), "float32"))


def test_the_scale_is_estimated_from_the_first_images_of_a_dataset():
    images = np.random.default_rng(0).uniform(size=(10, 4, 4, 1)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(10))).batch(4)
    np.testing.assert_array_equal(_first_images(dataset, 6), images[:6])
    np.testing.assert_array_equal(_first_images(images, 6), images[:6])
    with pytest.raises(ValueError, match="adapt"):
        _first_images(iter([images]), 6)
