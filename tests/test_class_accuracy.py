"""Class accuracy of generated images, and the MNIST classifier behind it."""

import keras
import numpy as np
import pytest
from conftest import value_and_gradients

import keras_diffusion as kd
from keras_diffusion.metrics import classifier as classifier_module


def mean_band_classifier(num_classes):
    """Class = which of `num_classes` equal bands the image's mean falls in (one-hot scores)."""

    def classify(images):
        band = np.clip((np.asarray(images).mean(axis=(1, 2, 3)) * num_classes).astype(int), 0, num_classes - 1)
        return np.eye(num_classes, dtype="float32")[band]

    return classify


def test_balanced_labels_cycle_through_every_class():
    labels = kd.metrics.balanced_labels(25, 10)
    assert labels.dtype == np.int32
    assert np.bincount(labels).tolist() == [3] * 5 + [2] * 5


def test_classification_accuracy_counts_argmax_matches_for_floats_and_uint8():
    images = np.array([0.1, 0.5, 0.9, 0.9], "float32").reshape(4, 1, 1, 1)
    classify = mean_band_classifier(3)
    assert kd.metrics.classification_accuracy(classify, images, [0, 1, 2, 0]) == 0.75
    assert kd.metrics.classification_accuracy(classify, (images * 255).astype("uint8"), [0, 1, 2, 0], 3) == 0.75


@pytest.mark.parametrize(
    "labels, scores, match",
    [([0, 1], lambda x: np.zeros((len(x), 2)), "N labels"), ([0, 2, 1], lambda x: np.zeros((len(x), 2)), r"\[0, 2\)"),
     ([0, 1, 1], lambda x: np.zeros(len(x)), "batch, num_classes")],
)  # fmt: skip
def test_classification_accuracy_rejects_mismatched_inputs(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        kd.metrics.classification_accuracy(scores, np.zeros((3, 2, 2, 1), "float32"), labels)


def test_class_accuracy_generates_one_image_per_label_and_scores_it(tiny_conditional):
    classify = mean_band_classifier(3)
    labels = [0, 1, 2, 2, 1, 0]
    images = tiny_conditional.generate(6, steps=2, labels=labels, guidance_scale=1.0, seed=3)
    expected = np.mean(np.argmax(classify(images), axis=1) == np.array(labels))
    result = kd.metrics.class_accuracy(tiny_conditional, classify, labels, guidance_scale=1.0, seed=3, steps=2)
    assert result == pytest.approx(expected)
    balanced = kd.metrics.class_accuracy(tiny_conditional, classify, 6, guidance_scale=1.0, seed=3, steps=2)
    assert balanced == pytest.approx(
        kd.metrics.class_accuracy(tiny_conditional, classify, [0, 1, 2, 0, 1, 2], guidance_scale=1.0, seed=3, steps=2)
    )


def test_class_accuracy_rejects_unconditional_models_and_unknown_classes(tiny_conditional):
    class Unconditional:
        num_classes = None

    with pytest.raises(ValueError, match="class-conditional"):
        kd.metrics.class_accuracy(Unconditional(), mean_band_classifier(3), 4)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        kd.metrics.class_accuracy(tiny_conditional, mean_band_classifier(3), [0, 3])


def test_random_shifts_move_each_digit_by_at_most_two_pixels(mnist_subset):
    images = mnist_subset[0][:64]
    shifted = classifier_module._random_shifts(images, np.random.default_rng(0), max_shift=2)
    assert shifted.shape == images.shape
    # Each shifted digit is the original moved by some (dy, dx) in [-2, 2]², zero-filled.
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    offsets = set()
    for original, moved in zip(padded, shifted):
        matches = [(dy, dx) for dy in range(5) for dx in range(5) if np.array_equal(original[dy : dy + 28, dx : dx + 28], moved)]
        assert matches
        offsets.add(matches[0])
    assert len(offsets) > 10  # the shifts vary


@pytest.fixture(scope="module")
def small_classifier():
    """The MNIST classifier trained on 8,192 training digits (seconds), and its test accuracy on 512."""
    try:
        images, labels = kd.datasets.load("mnist", split="train", limit=8192)
        test_images, test_labels = kd.datasets.load("mnist", split="test", limit=512)
    except FileNotFoundError as error:
        pytest.skip(f"MNIST not available offline: {error}")
    trained = kd.metrics.train_mnist_classifier(images, labels, epochs=4)
    return trained, kd.metrics.classification_accuracy(trained, test_images, test_labels)


def test_the_mnist_classifier_learns_the_digits(small_classifier):
    _, accuracy = small_classifier
    assert accuracy > 0.95  # 8,192 digits; the full training set reaches about 99 %


def test_the_shipped_mnist_model_draws_the_digit_asked_for(small_classifier):
    classifier, test_accuracy = small_classifier
    model = kd.models.load_pretrained("mnist")
    labels = kd.metrics.balanced_labels(200, 10)
    images = model.generate(200, labels=labels, guidance_scale=2.0, steps=10, seed=0)  # the main job's 10 steps
    assert images.shape == (200, 28, 28, 1) and 0.0 <= images.min() and images.max() <= 1.0
    accuracy = kd.metrics.classification_accuracy(classifier, images, labels)
    assert accuracy >= 0.95, f"{accuracy:.1%} of the digits as asked (the classifier: {test_accuracy:.1%} on test ones)"


def test_mnist_classifier_is_trained_once_then_loaded_from_its_cache(small_classifier, tmp_path, monkeypatch):
    trained, _ = small_classifier
    path = tmp_path / "cache" / "classifier.npz"
    monkeypatch.setattr(kd.datasets, "load", lambda *a, **k: (np.zeros((1, 28, 28, 1), "float32"), np.zeros(1)))
    monkeypatch.setattr(classifier_module, "train_mnist_classifier", lambda *a, **k: trained)
    first = kd.metrics.mnist_classifier(path)
    assert path.is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached classifier must not be retrained")

    monkeypatch.setattr(classifier_module, "train_mnist_classifier", no_training)
    monkeypatch.setenv(kd.metrics.CLASSIFIER_ENV_VAR, str(path))
    second = kd.metrics.mnist_classifier()
    digits = np.random.default_rng(0).uniform(0, 1, (4, 28, 28, 1)).astype("float32")
    expected = keras.ops.convert_to_numpy(trained(digits))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(first(digits)), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(second(digits)), expected, rtol=1e-5, atol=1e-5)


def test_mnist_classifier_without_a_cache_and_without_training_names_the_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_mnist_classifier.py"):
        kd.metrics.mnist_classifier(tmp_path / "missing.npz", train_if_missing=False)


def test_mnist_classifier_rejects_a_file_of_other_weights(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, arr_0=np.zeros(3))
    with pytest.raises(ValueError, match="delete it to retrain"):
        kd.metrics.mnist_classifier(path)


def test_the_classifiers_pooling_equals_keras_max_pooling_in_values_and_gradients():
    x = np.random.default_rng(0).normal(size=(3, 6, 8, 5)).astype("float32")  # no tied maxima
    layer = classifier_module.MaxPooling2x2()
    expected = keras.ops.convert_to_numpy(keras.layers.MaxPooling2D()(x))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), expected)
    assert layer.compute_output_shape((None, 6, 8, 5)) == (None, 3, 4, 5)
    # The gradient of sum(pool(x) * w) is w at each window's maximum and 0 elsewhere, as for Keras' layer.
    weights = np.random.default_rng(1).normal(size=expected.shape).astype("float32")
    windows = x.reshape(3, 3, 2, 4, 2, 5).transpose(0, 1, 3, 5, 2, 4).reshape(3, 3, 4, 5, 4)
    is_max = windows == windows.max(axis=-1, keepdims=True)
    wanted = (is_max * weights[..., None]).reshape(3, 3, 4, 5, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(x.shape)
    for pooling in (layer, keras.layers.MaxPooling2D()):
        _, (gradient,) = value_and_gradients(lambda v, pooling=pooling: keras.ops.sum(pooling(v) * weights), x)
        np.testing.assert_allclose(gradient, wanted, atol=1e-6)


def test_the_classifiers_pooling_round_trips_through_its_config_and_refuses_odd_sizes():
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(classifier_module.MaxPooling2x2()))
    assert isinstance(restored, classifier_module.MaxPooling2x2)
    with pytest.raises(ValueError, match="even height and width"):
        restored(np.zeros((1, 5, 4, 1), "float32"))
