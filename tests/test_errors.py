"""Bad input gets a clear error that names the fix, before any backend stack trace."""

import keras
import numpy as np
import pytest
from conftest import tiny_unet

import keras_diffusion as kd


@pytest.fixture(scope="module")
def unconditional():
    return kd.DiffusionModel(tiny_unet(num_classes=None), timesteps=100)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_images=0), "num_images"),
        (dict(num_images=-3), "num_images"),
        (dict(num_images=2.5), "num_images"),
        (dict(num_images=2, sampler="plms"), "Unknown sampler"),
        (dict(num_images=2, steps=101), "steps"),
        (dict(num_images=2, steps=0), "steps"),
        (dict(num_images=2, eta=-0.1), "eta"),
        (dict(num_images=2, sampler="ddpm", eta=0.5), "ddim"),
        (dict(num_images=2, labels=[0, 1, 2]), "one per image"),
        (dict(num_images=2, labels=[0, 4]), r"\[0, 3\]"),
        (dict(num_images=2, labels=[0.5, 1.0]), "ints"),
        (dict(num_images=2, guidance_scale=-1.0), "guidance_scale"),
        (dict(num_images=2, batch_size=0), "batch_size"),
        (dict(num_images=2, spacing="cubic"), "spacing"),
    ],
)
def test_bad_generate_arguments_raise_value_errors(tiny_conditional, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_conditional.generate(**kwargs)


def test_labels_or_guidance_on_an_unconditional_model_are_rejected(unconditional):
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.generate(2, labels=[0, 1])
    with pytest.raises(ValueError, match="class-conditional"):
        unconditional.generate(2, guidance_scale=2.0)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(schedule="sigmoid"), ValueError, "Unknown schedule"),
        (dict(prediction="score"), ValueError, "Unknown prediction"),
        (dict(ema_decay=1.0), ValueError, "ema_decay"),
        (dict(class_dropout=1.0), ValueError, "class_dropout"),
        (dict(timesteps=1), ValueError, "timesteps"),
    ],
)
def test_bad_model_arguments_raise_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        kd.DiffusionModel(tiny_unet(), **kwargs)


def test_a_denoiser_that_is_not_a_keras_layer_is_rejected():
    with pytest.raises(TypeError, match="Keras model or layer"):
        kd.DiffusionModel(lambda inputs: inputs[0])


def test_training_data_must_match_the_conditioning_and_image_shape(tiny_conditional, unconditional):
    images = np.zeros((4, 8, 8, 1), "float32")
    for model in (tiny_conditional, unconditional):
        model.compile()
    with pytest.raises(ValueError, match="no labels"):
        tiny_conditional.fit(images, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.fit(images, np.zeros(4, "int32"), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"shape \(batch, 8, 8, 1\)"):
        unconditional.fit(np.zeros((4, 28, 28, 1), "float32"), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="255"):
        unconditional.fit(images + 200.0, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        unconditional.fit(images - 0.5, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="NaN"):
        unconditional.fit(images * np.nan, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 2\]"):
        tiny_conditional.fit(images, np.array([0, 1, 2, 3]), epochs=1, verbose=0)


def test_tf_data_and_py_dataset_are_checked_before_tracing(unconditional):
    import tensorflow as tf

    images = np.zeros((4, 8, 8, 1), "float32")
    unconditional.compile()
    with pytest.raises(ValueError, match="batch it"):
        unconditional.fit(tf.data.Dataset.from_tensor_slices(images), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.fit(tf.data.Dataset.from_tensor_slices((images, np.zeros(4))).batch(2), epochs=1, verbose=0)

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return np.zeros((2, 16, 16, 1), "float32")

    with pytest.raises(ValueError, match="shape"):
        unconditional.fit(Batches(), epochs=1, verbose=0)


def test_well_formed_tf_data_with_labels_passes_the_early_check(tiny_conditional):
    import tensorflow as tf

    from keras_diffusion.diffusion_model import _check_training_data

    images, labels = np.zeros((4, 8, 8, 1), "float32"), np.arange(4) % 3
    _check_training_data(tiny_conditional, tf.data.Dataset.from_tensor_slices((images, labels)).batch(2), None)


def test_a_failed_fit_leaves_the_model_usable(unconditional):
    with pytest.raises(ValueError):
        unconditional.fit(np.zeros((4, 28, 28, 1), "float32"), epochs=1, verbose=0)
    assert unconditional.generate(1, steps=2, seed=0).shape == (1, 8, 8, 1)


def test_compile_rejects_a_loss():
    model = kd.DiffusionModel(tiny_unet(), timesteps=10)
    with pytest.raises(ValueError, match="own loss"):
        model.compile(loss="mse")
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.Adam)
