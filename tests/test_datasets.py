import numpy as np
import pytest

import keras_diffusion as kd


def test_local_mnist_has_the_keras_layout_scaled_to_unit_floats(mnist_subset):
    images, labels = mnist_subset
    assert images.shape == (512, 28, 28, 1) and images.dtype == np.float32
    assert images.min() == 0.0 and images.max() == 1.0
    # The standard test-set order starts 7 2 1 0 4.
    np.testing.assert_array_equal(labels[:5], [7, 2, 1, 0, 4])
    assert labels.dtype == np.int32


def test_missing_local_file_names_the_file_and_the_variable(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar10\.npz.*KERAS_DIFFUSION_DATA_DIR"):
        kd.datasets.load("cifar10", data_dir=str(tmp_path), source="local")


def test_an_npz_in_data_dir_is_used_with_channels_kept(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar10.npz", x_train=x, y_train=np.arange(6), x_test=x[:2], y_test=np.arange(2))
    images, labels = kd.datasets.load("cifar10", split="train", data_dir=str(tmp_path), limit=4)
    np.testing.assert_allclose(images, x[:4] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(labels, [0, 1, 2, 3])


def test_tfds_path_batches_the_dataset_under_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=10):
        images, labels = kd.datasets.load("mnist", split="train", source="tfds")
    assert images.shape == (10, 28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert labels.shape == (10,) and labels.min() >= 0 and labels.max() < 10


def test_from_arrays_scales_uint8_and_rejects_wrong_ranges():
    images, labels = kd.datasets.from_arrays(np.full((2, 4, 4), 255, np.uint8), [1, 2])
    assert images.shape == (2, 4, 4, 1) and images.max() == 1.0 and labels.tolist() == [1, 2]
    with pytest.raises(ValueError, match="255"):
        kd.datasets.from_arrays(np.full((2, 4, 4), 200.0))
    with pytest.raises(ValueError, match="one per image"):
        kd.datasets.from_arrays(np.zeros((2, 4, 4), np.uint8), [1, 2, 3])
    with pytest.raises(ValueError, match="NaN"):
        kd.datasets.from_arrays(np.full((2, 4, 4), np.nan))
    with pytest.raises(ValueError, match="non-empty"):
        kd.datasets.from_arrays(np.zeros((0, 4, 4), np.uint8))


def test_from_directory_reads_class_folders_in_sorted_order(tmp_path):
    from PIL import Image

    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.fromarray(np.full((10, 12, 3), 100 * label, np.uint8)).save(tmp_path / name / f"{i}.png")
    images, labels = kd.datasets.from_directory(str(tmp_path), image_size=(8, 8))
    assert images.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    np.testing.assert_allclose(images[2:], 100 / 255, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(name="imagenet"), "Unknown dataset"), (dict(name="mnist", split="val"), "split"), (dict(name="mnist", source="s3"), "source")],
)
def test_bad_load_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kd.datasets.load(**kwargs)
