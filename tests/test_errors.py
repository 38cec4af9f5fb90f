"""Bad input gets a clear error that names the fix, before any backend stack trace."""

import keras
import numpy as np
import pytest
from conftest import tiny_unet
from reliability_training import small_denoiser

import keras_diffusion as kd
from keras_diffusion.callbacks.checkpoint import TrainingCheckpoint


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
        (dict(num_images=2, labels=[0, 1, 2]), "one per image"),
        (dict(num_images=2, labels=[0, 4]), r"\[0, 3\]"),
        (dict(num_images=2, labels=[0.5, 1.0]), "ints"),
        (dict(num_images=2, guidance_scale=-1.0), "guidance_scale"),
        (dict(num_images=2, batch_size=0), "batch_size"),
        (dict(num_images=2, steps=2.5), "steps"),
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

    from keras_diffusion.models.checks import check_training_data

    images, labels = np.zeros((4, 8, 8, 1), "float32"), np.arange(4) % 3
    check_training_data(tiny_conditional, tf.data.Dataset.from_tensor_slices((images, labels)).batch(2), None)


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


def test_images_of_the_wrong_rank_channels_dtype_or_size_are_rejected_by_fit(unconditional):
    unconditional.compile()
    with pytest.raises(ValueError, match=r"received \(4, 8, 8\)"):  # rank 3: no channel axis
        unconditional.fit(np.zeros((4, 8, 8), "float32"), epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"received \(4, 8, 8, 3\)"):  # RGB for a grayscale denoiser
        unconditional.fit(np.zeros((4, 8, 8, 3), "float32"), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="uint8"):  # int64 pixel values
        unconditional.fit(np.zeros((4, 8, 8, 1), "int64"), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        unconditional.fit(np.zeros((0, 8, 8, 1), "float32"), epochs=1, verbose=0)

    class NoBatches(keras.utils.PyDataset):
        def __len__(self):
            return 0

        def __getitem__(self, index):
            raise IndexError(index)

    with pytest.raises(ValueError, match="empty"):
        unconditional.fit(NoBatches(), epochs=1, verbose=0)


def _feature_extractor_without_a_batch_axis(images):
    return np.zeros((7,), "float32")


BAD_INPUTS = [
    # models.UNet
    ("unet-rank", lambda: kd.models.UNet(image_shape=(28, 28)), ValueError, r"\(height, width, channels\)"),
    ("unet-divisible", lambda: kd.models.UNet(image_shape=(28, 28, 1), widths=(8, 16, 32, 64)), ValueError, "divisible"),
    ("unet-norm-groups", lambda: kd.models.UNet(image_shape=(8, 8, 1), widths=(8, 12), norm_groups=8), ValueError, "norm_groups"),
    ("unet-classes", lambda: kd.models.UNet(image_shape=(8, 8, 1), widths=(8,), norm_groups=4, num_classes=0), ValueError, "num_classes"),
    ("unet-dropout", lambda: kd.models.UNet(image_shape=(8, 8, 1), widths=(8,), norm_groups=4, dropout=1.0), ValueError, "dropout"),
    # schedules
    ("schedule-name", lambda: kd.schedules.get_schedule("sigmoid"), ValueError, "Unknown schedule"),
    ("schedule-timesteps", lambda: kd.schedules.LinearSchedule(timesteps=1), ValueError, ">= 2"),
    ("schedule-timesteps-float", lambda: kd.schedules.LinearSchedule(timesteps=10.5), ValueError, "integer"),
    ("schedule-betas", lambda: kd.schedules.LinearSchedule(beta_start=0.02, beta_end=0.01), ValueError, "beta_start <= beta_end"),
    ("schedule-cosine", lambda: kd.schedules.CosineSchedule(max_beta=1.0), ValueError, "max_beta"),
    ("schedule-mismatch", lambda: kd.schedules.get_schedule(kd.schedules.LinearSchedule(100), timesteps=50), ValueError, "agree"),
    # datasets
    ("dataset-name", lambda: kd.datasets.load("imagenet"), ValueError, "Unknown dataset"),
    ("dataset-split", lambda: kd.datasets.load("mnist", split="validation"), ValueError, "Unknown split"),
    ("dataset-limit", lambda: kd.datasets.load("mnist", limit=0), ValueError, "limit"),
    ("dataset-empty", lambda: kd.datasets.from_arrays(np.zeros((0, 8, 8, 1))), ValueError, "non-empty"),
    ("dataset-255-floats", lambda: kd.datasets.from_arrays(np.full((2, 4, 4), 255.0)), ValueError, "Divide uint8-range data by 255"),
    ("dataset-int-images", lambda: kd.datasets.from_arrays(np.full((2, 4, 4), 200)), ValueError, r"astype\('uint8'\)"),
    ("dataset-nan", lambda: kd.datasets.from_arrays(np.full((2, 4, 4), np.nan)), ValueError, "NaN"),
    ("dataset-labels", lambda: kd.datasets.from_arrays(np.zeros((2, 4, 4)), [0, 1, 2]), ValueError, "one per image"),
    ("dataset-folder", lambda: kd.datasets.from_directory("/no/such/folder", (8, 8)), FileNotFoundError, "No such image folder"),
    # metrics
    ("metrics-rank", lambda: kd.metrics.as_uint8_images(np.zeros((8, 8, 1))), ValueError, r"\(N, H, W, C\)"),
    ("metrics-channels", lambda: kd.metrics.as_uint8_images(np.zeros((2, 8, 8, 2))), ValueError, "channels"),
    ("metrics-range", lambda: kd.metrics.as_uint8_images(np.full((2, 8, 8, 1), 3.0)), ValueError, r"\[0, 1\]"),
    ("fid-dimensions", lambda: kd.metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), ValueError, "different dimensions"),
    ("fid-extractor", lambda: kd.metrics.extract_features(np.zeros((3, 2, 2, 1)), _feature_extractor_without_a_batch_axis), ValueError, r"expected \(num_images, dim\)"),
    ("fid-batch-size", lambda: kd.metrics.FID(batch_size=0), ValueError, "batch_size"),
    ("kid-samples", lambda: kd.metrics.kernel_inception_distance(np.zeros((1, 4)), np.zeros((5, 4))), ValueError, "at least 2"),
    ("wasserstein-empty", lambda: kd.metrics.wasserstein_distance(np.zeros((0, 4, 4, 1)), np.zeros((2, 4, 4, 1))), ValueError, "empty"),
    # callbacks
    ("fid-callback-dataset", lambda: kd.callbacks.FIDCallback(dataset="imagenet"), ValueError, "Unknown dataset"),
    ("grid-callback-rows", lambda: kd.callbacks.ImageGridCallback("grids", rows=0), ValueError, ">= 1"),
    ("grid-columns", lambda: kd.callbacks.make_image_grid(np.zeros((5, 4, 4, 1)), columns=2), ValueError, "do not fill rows"),
    ("checkpoint-save-freq", lambda: TrainingCheckpoint("checkpoint", save_freq=0), ValueError, "save_freq"),
    ("checkpoint-keep", lambda: TrainingCheckpoint("checkpoint", keep=0), ValueError, "keep"),
]


@pytest.mark.parametrize("build, error, message", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_inputs_across_the_api_raise_clear_errors(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_a_missing_dataset_file_offline_names_the_file_and_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"mnist\.npz.*{kd.datasets.DATA_DIR_ENV}"):
        kd.datasets.load("mnist", data_dir=str(tmp_path), source="local")


def test_fid_from_few_samples_warns_that_it_is_biased():
    flatten = lambda images: images.reshape(len(images), -1).astype("float32")  # noqa: E731
    images = np.random.default_rng(0).random((16, 2, 2, 1))
    with pytest.warns(UserWarning, match="biased upwards"):
        kd.metrics.FID(flatten)(images, images)


def test_resuming_a_mid_epoch_checkpoint_with_other_batches_is_rejected(tmp_path):
    model = kd.DiffusionModel(small_denoiser(), timesteps=10, num_classes=3)
    model.compile()
    model.optimizer.build(model.trainable_variables)
    writer = TrainingCheckpoint(tmp_path, save_freq=2)
    writer.set_model(model)
    writer.set_params({"steps": 4})
    writer.save(epoch=1, batch=2)
    reader = TrainingCheckpoint(tmp_path, save_freq=2)
    reader.set_model(model)
    reader.set_params({"steps": 8})  # e.g. a smaller batch_size
    with pytest.raises(ValueError, match="same data and batch_size"):
        reader.on_train_begin()
