"""FID, image-grid and training-curve callbacks, with a cheap injected feature extractor (no Inception)."""

import os
import time
import types
import warnings

import keras
import matplotlib.image
import numpy as np
import pytest
from conftest import pixel_features, tiny_unet

import keras_diffusion as kd
from keras_diffusion.callbacks import (
    FIDCallback,
    ImageGridCallback,
    TrainingCurvesCallback,
    make_image_grid,
)
from keras_diffusion.metrics import FeatureStatistics
from keras_diffusion.samplers import Sampling

COLUMNS = 4
NUM_CLASSES = 3


def real_images(count=48, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (count, 8, 8, 1)).astype("float32")


def fid_callback(real=None, **kwargs):
    arguments = dict(num_samples=16, sampling=Sampling(steps=2), feature_extractor=pixel_features, batch_size=16)
    arguments.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # num_samples < 2048
        return FIDCallback(real_images() if real is None else real, **arguments)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One tiny conditional fit of 3 epochs with every callback attached."""
    directory = tmp_path_factory.mktemp("run")
    images, labels = real_images(32, seed=1), np.arange(32) % NUM_CLASSES
    model = kd.DiffusionModel(tiny_unet(num_classes=NUM_CLASSES), timesteps=100, seed=0)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    callbacks = {
        "fid": fid_callback(every_n_epochs=2, kid=True),
        "checkpoint": keras.callbacks.ModelCheckpoint(
            str(directory / "best.keras"), monitor="fid", mode="min", save_best_only=True
        ),
        "grid": ImageGridCallback(directory / "grids", columns=COLUMNS, sampling=Sampling(steps=2), real_images=real_images(8)),
        "curves": TrainingCurvesCallback(directory / "curves.png"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ModelCheckpoint: "fid" missing on epoch 1.
        history = model.fit(images, labels, batch_size=16, epochs=3, verbose=0, callbacks=list(callbacks.values()))
    return model, history, callbacks, directory


# --- FIDCallback ----------------------------------------------------------------------------


def test_fid_is_logged_on_every_nth_and_the_last_epoch(fitted):
    _, history, _, _ = fitted
    # every_n_epochs=2 over 3 epochs: after epoch 2, and after the last one (3).
    assert len(history.history["fid"]) == 2
    assert all(np.isfinite(value) and value >= 0 for value in history.history["fid"])


def test_kid_is_logged_when_requested(fitted):
    _, history, _, _ = fitted
    assert len(history.history["kid"]) == 2
    assert all(np.isfinite(history.history["kid"]))


def test_model_checkpoint_can_monitor_fid(fitted):
    _, _, _, directory = fitted
    assert (directory / "best.keras").is_file()


def test_fid_evaluation_is_deterministic_for_a_fixed_model(fitted):
    model, _, _, _ = fitted
    callback = fid_callback()
    callback.set_model(model)
    assert callback.evaluate()["fid"] == pytest.approx(callback.evaluate()["fid"], rel=1e-6)


def test_fid_callback_accepts_precomputed_statistics(fitted):
    model, _, _, _ = fitted
    statistics = FeatureStatistics.from_features(pixel_features(real_images()))
    from_statistics, from_images = fid_callback(statistics), fid_callback(real_images())
    for callback in (from_statistics, from_images):
        callback.set_model(model)
    assert from_statistics.evaluate()["fid"] == pytest.approx(from_images.evaluate()["fid"], rel=1e-6)


def test_fid_callback_without_arguments_uses_the_cached_test_split_of_the_models_dataset(
    mnist_subset, monkeypatch, tmp_path
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    model = kd.DiffusionModel(tiny_unet(num_classes=None, image_shape=(28, 28, 1)), timesteps=100)
    callback = FIDCallback(num_samples=2048, num_real_samples=64, sampling=Sampling(steps=1), feature_extractor=pixel_features)
    callback.set_model(model)
    callback._prepare_real()
    images, _ = kd.datasets.load("mnist", split="test", limit=64)
    expected = FeatureStatistics.from_features(pixel_features(images))
    np.testing.assert_allclose(callback._real_statistics.mean, expected.mean, rtol=1e-5, atol=1e-7)
    cached = [f for _, _, files in os.walk(tmp_path) for f in files]
    assert len(cached) == 1 and cached[0].startswith("mnist_test_n64")


def test_fid_callback_without_real_data_rejects_an_unknown_image_shape():
    model = kd.DiffusionModel(tiny_unet(num_classes=None), timesteps=100)
    callback = FIDCallback(num_samples=2048)
    callback.set_model(model)
    with pytest.raises(ValueError, match="known dataset"):
        callback._prepare_real()


def test_kid_needs_real_images_not_statistics():
    statistics = FeatureStatistics(np.zeros(2), np.eye(2), num_samples=10)
    with pytest.raises(ValueError, match="kid=True"):
        FIDCallback(statistics, num_samples=4096, kid=True)


def test_fid_callback_warns_once_for_fewer_than_2048_samples():
    with pytest.warns(UserWarning, match="2048"):
        FIDCallback(real_images(), num_samples=100, feature_extractor=pixel_features)


def brightness_classifier(images):
    """A stand-in classifier: class = how bright the image is, in NUM_CLASSES bands of its mean."""
    band = np.clip((np.asarray(images).mean(axis=(1, 2, 3)) * NUM_CLASSES).astype(int), 0, NUM_CLASSES - 1)
    return np.eye(NUM_CLASSES, dtype="float32")[band]


@pytest.fixture(scope="module")
def fitted_per_update(fitted, tmp_path_factory):
    """The `fitted` model trained 3 more epochs (6 updates; its step already compiled) with
    FID every 4 updates, class accuracy, and curves after it."""
    model, _, _, _ = fitted
    directory = tmp_path_factory.mktemp("per_update")
    fid = fid_callback(every_n_updates=4, classifier=brightness_classifier)
    curves = TrainingCurvesCallback(directory / "curves.png", metrics=["loss", "fid", "class_accuracy"])
    images, labels = real_images(32, seed=1), np.arange(32) % NUM_CLASSES
    model.fit(images, labels, batch_size=16, epochs=3, verbose=0, callbacks=[fid, curves])
    return model, fid, curves, directory


def test_fid_every_n_updates_evaluates_at_each_multiple_and_at_the_end(fitted_per_update):
    _, fid, _, _ = fitted_per_update
    assert [row["updates"] for row in fid.history] == [4, 6]  # 2 updates per epoch, 3 epochs
    assert [row["epoch"] for row in fid.history] == [2, 3]
    first, last = fid.history
    assert 0.0 < first["seconds"] < last["seconds"]
    assert all(np.isfinite(row["fid"]) and row["fid"] >= 0 for row in fid.history)


def test_class_accuracy_is_the_share_of_samples_the_classifier_puts_in_their_requested_class(fitted_per_update):
    model, fid, _, _ = fitted_per_update
    labels = kd.metrics.balanced_labels(16, NUM_CLASSES)
    images = model.generate(16, steps=2, labels=labels, seed=0)
    expected = np.mean(np.argmax(brightness_classifier(images), axis=1) == labels)
    assert fid.evaluate()["class_accuracy"] == pytest.approx(expected)
    assert fid.history[-1]["class_accuracy"] == pytest.approx(expected)  # the last evaluation: same weights


def test_fid_every_seconds_evaluates_once_per_interval_crossed():
    callback = fid_callback(every_seconds=1.0)
    decisions = []
    for seconds in (0.5, 1.2, 1.5, 3.7, 3.9, 4.1):
        callback.clock.seconds = seconds
        decisions.append(callback._is_evaluation_update())
    assert decisions == [False, True, False, True, False, True]


@pytest.mark.parametrize(
    "arguments", [dict(every_n_updates=0), dict(every_seconds=0.0), dict(every_n_updates=5, every_seconds=10.0)]
)
def test_fid_callback_rejects_bad_evaluation_intervals(arguments):
    with pytest.raises(ValueError, match="every_"):
        fid_callback(**arguments)


def test_fid_every_n_updates_refuses_several_steps_per_execution():
    callback = fid_callback(every_n_updates=4)
    callback.set_model(types.SimpleNamespace(steps_per_execution=8))  # what compile(steps_per_execution=8) sets
    with pytest.raises(ValueError, match="steps_per_execution=1"):
        callback.on_train_begin()


def test_fid_callback_with_a_classifier_rejects_an_unconditional_model():
    callback = fid_callback(classifier=brightness_classifier)
    callback.set_model(kd.DiffusionModel(tiny_unet(num_classes=None), timesteps=100))
    with pytest.raises(ValueError, match="class-conditional"):
        callback.evaluate()


def test_training_clock_counts_updates_and_only_the_time_inside_batches():
    clock = kd.callbacks.TrainingClock()
    clock.batch_end()  # no batch begun: nothing counted
    clock.batch_begin()
    clock.batch_end()
    after_one = clock.seconds
    time.sleep(0.05)  # between batches: not training time
    clock.batch_begin()
    clock.batch_end()
    assert clock.updates == 2
    assert clock.seconds - after_one < 0.05


def test_an_evaluation_in_one_callback_is_not_training_time_for_the_callbacks_after_it():
    """Callbacks run in order: the FID callback evaluates inside the batch interval of the curves' clock."""
    evaluating, later = kd.callbacks.TrainingClock(), kd.callbacks.TrainingClock()
    for clock in (evaluating, later):
        clock.batch_begin()
    evaluating.batch_end()
    with kd.callbacks.TrainingClock.paused():  # what FIDCallback does around its evaluation
        time.sleep(0.2)
    later.batch_end()
    assert later.updates == evaluating.updates == 1
    assert abs(later.seconds - evaluating.seconds) < 0.05


# --- image grids ----------------------------------------------------------------------------


def test_image_grid_callback_writes_one_png_per_epoch_and_no_temporary_files(fitted):
    _, _, _, directory = fitted
    assert sorted(os.listdir(directory / "grids")) == ["epoch_0001.png", "epoch_0002.png", "epoch_0003.png"]


def test_conditional_grid_has_one_row_per_class_over_as_many_real_rows(fitted):
    _, _, _, directory = fitted
    tile = 8 + 2  # image + padding
    generated_height = NUM_CLASSES * tile + 2
    real_rows = 8 // COLUMNS  # 8 real images fill 2 rows of 4
    expected_height = generated_height + 4 + real_rows * tile + 2
    image = matplotlib.image.imread(directory / "grids" / "epoch_0003.png")
    assert image.shape[:2] == (expected_height, COLUMNS * tile + 2)


def test_real_images_appear_unchanged_under_the_generated_ones(fitted):
    _, _, callbacks, _ = fitted
    grid = callbacks["grid"].grid()
    real_block = make_image_grid(real_images(8), COLUMNS)
    np.testing.assert_allclose(grid[-real_block.shape[0] :], real_block)


def test_unconditional_grid_has_the_requested_number_of_rows(tmp_path):
    model = kd.DiffusionModel(tiny_unet(num_classes=None), timesteps=100, seed=0)
    callback = ImageGridCallback(tmp_path, rows=2, columns=3, sampling=Sampling(steps=2))
    callback.set_model(model)
    assert callback.grid().shape == (2 * 10 + 2, 3 * 10 + 2, 1)


def test_make_image_grid_places_images_row_by_row():
    images = np.stack([np.full((2, 2, 1), value, "float32") for value in (0.0, 0.2, 0.4, 0.6)])
    grid = make_image_grid(images, columns=2, padding=1)
    assert grid.shape == (7, 7, 1)
    assert grid[1, 4, 0] == pytest.approx(round(0.2 * 255) / 255)  # row 0, column 1
    assert grid[4, 1, 0] == pytest.approx(round(0.4 * 255) / 255)  # row 1, column 0
    assert grid[0, 0, 0] == 1.0  # padding


def test_make_image_grid_rejects_incomplete_rows():
    with pytest.raises(ValueError, match="columns"):
        make_image_grid(np.zeros((5, 2, 2, 1), "float32"), columns=2)


# --- training curves ------------------------------------------------------------------------


def test_training_curves_record_loss_every_epoch_and_fid_when_evaluated(fitted):
    _, _, callbacks, _ = fitted
    history = callbacks["curves"].history
    assert [point.epoch for point in history["loss"]] == [1, 2, 3]
    assert [point.updates for point in history["loss"]] == [2, 4, 6]
    assert [point.epoch for point in history["fid"]] == [2, 3]
    assert history["loss"][0].seconds < history["loss"][-1].seconds


def test_training_curves_take_evaluations_within_epochs_at_their_update(fitted_per_update):
    _, fid, curves, _ = fitted_per_update
    for name in ("fid", "class_accuracy"):
        assert [point.updates for point in curves.history[name]] == [4, 6]
        assert [point.value for point in curves.history[name]] == pytest.approx([row[name] for row in fid.history])
    assert [point.updates for point in curves.history["loss"]] == [2, 4, 6]  # counted from this fit's start


def test_training_curves_draw_one_column_per_x_axis(tmp_path):
    history = {"loss": [kd.callbacks.CurvePoint(1, 10, 5.0, 0.5)], "fid": [kd.callbacks.CurvePoint(1, 10, 5.0, 9.0)]}
    widths = []
    for x_axes in (("updates",), ("updates", "seconds")):
        kd.callbacks.plot_training_curves(history, tmp_path / "curves.png", x_axes=x_axes)
        widths.append(matplotlib.image.imread(tmp_path / "curves.png").shape[1])
    assert widths == [450, 900]
    kd.callbacks.plot_training_curves({"loss": [(1, 0.5), (2, 0.3)]}, tmp_path / "pairs.png")  # epoch only
    assert matplotlib.image.imread(tmp_path / "pairs.png").shape[1] == 450
    with pytest.raises(ValueError, match="x_axes"):
        kd.callbacks.plot_training_curves(history, tmp_path / "bad.png", x_axes=("wall",))


def test_training_curves_png_is_written(fitted):
    _, _, _, directory = fitted
    image = matplotlib.image.imread(directory / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 100


def test_callbacks_take_the_sampling_settings_whole_and_reject_bad_ones_at_construction(tmp_path):
    ddim = kd.samplers.get_sampler("ddim", eta=1.0)
    settings = Sampling(ddim, steps=3, guidance_scale=1.5)
    grid = ImageGridCallback(tmp_path, sampling=settings)
    assert grid.sampling is settings and grid.sampling.sampler_object() is ddim
    assert ImageGridCallback(tmp_path).sampling == Sampling()  # generate's own defaults
    with pytest.raises(ValueError, match="Unknown sampler"):
        ImageGridCallback(tmp_path, sampling=Sampling("dddim"))
    with pytest.raises(TypeError, match="kd.samplers.Sampling"):
        kd.callbacks.FIDCallback(kd.metrics.FeatureStatistics(np.zeros(2), np.eye(2), 2), sampling="ddim")
