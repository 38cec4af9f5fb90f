"""FID, KID and the Wasserstein distance, on random features and tiny images (no Inception)."""

import os
import warnings

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from keras_diffusion.metrics import (
    FID,
    KID,
    FeatureStatistics,
    RunningFeatureStatistics,
    as_uint8_images,
    compute_fid,
    feature_statistics,
    frechet_distance,
    iterate_image_batches,
    kernel_inception_distance,
    wasserstein_distance,
)


def random_covariance(rng, dim, rank=None):
    factor = rng.normal(size=(dim, rank or 2 * dim))
    return factor @ factor.T / factor.shape[1]


def direct_frechet_distance(mu1, sigma1, mu2, sigma2):
    """The textbook formula with scipy's general matrix square root."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2 - 2 * root)


def pixel_features(images):
    """A cheap stand-in for Inception: the uint8 pixels as features."""
    return as_uint8_images(images).reshape(len(images), -1).astype("float32")


pixel_features.name = "pixels"


def small_images(rng, count, noise=0.0):
    base = rng.uniform(0.2, 0.8, size=(count, 4, 4, 1))
    return np.clip(base + noise * rng.normal(size=base.shape), 0, 1).astype("float32")


# --- Fréchet distance -------------------------------------------------------------------


def test_frechet_distance_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=16), random_covariance(rng, 16)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_of_diagonal_covariances_has_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    var1, var2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected)


def test_frechet_distance_of_commuting_covariances_has_closed_form():
    rng = np.random.default_rng(1)
    basis, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    eig1, eig2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    sigma1, sigma2 = basis @ np.diag(eig1) @ basis.T, basis @ np.diag(eig2) @ basis.T
    expected = np.sum((np.sqrt(eig1) - np.sqrt(eig2)) ** 2)
    assert frechet_distance(np.zeros(8), sigma1, np.zeros(8), sigma2) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_agrees_with_direct_sqrtm_computation(seed):
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=32), rng.normal(size=32)
    sigma1, sigma2 = random_covariance(rng, 32), random_covariance(rng, 32)
    expected = direct_frechet_distance(mu1, sigma1, mu2, sigma2)
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(3)
    a = rng.normal(size=20), random_covariance(rng, 20)
    b = rng.normal(size=20), random_covariance(rng, 20)
    assert frechet_distance(*a, *b) == pytest.approx(frechet_distance(*b, *a), rel=1e-10)


@pytest.mark.parametrize("seed", range(5))
def test_frechet_distance_is_never_negative_for_nearly_equal_singular_covariances(seed):
    # Rank 5 in 64 dimensions (as with N < 2048 Inception features): round-off could go below 0.
    rng = np.random.default_rng(seed)
    mu, sigma = rng.normal(size=64), random_covariance(rng, 64, rank=5)
    perturbed = sigma + 1e-12 * np.eye(64)
    assert frechet_distance(mu, sigma, mu, perturbed) >= 0.0
    assert frechet_distance(mu, sigma, mu + 1e-9, sigma) >= 0.0


@pytest.mark.parametrize(
    "shapes",
    [((3,), (3, 3), (4,), (4, 4)), ((3,), (3, 4), (3,), (3, 3)), ((3,), (2, 2), (3,), (3, 3))],
    ids=["different-dimensions", "non-square-sigma", "sigma-does-not-match-mu"],
)
def test_frechet_distance_rejects_mismatched_shapes(shapes):
    arrays = [np.eye(*shape) if len(shape) == 2 else np.zeros(shape) for shape in shapes]
    with pytest.raises(ValueError):
        frechet_distance(*arrays)


def test_frechet_distance_rejects_non_finite_input():
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan]), np.eye(1), np.zeros(1), np.eye(1))


# --- statistics -------------------------------------------------------------------------


def test_feature_statistics_are_mean_and_unbiased_covariance():
    features = np.random.default_rng(4).normal(size=(50, 6))
    mu, sigma = feature_statistics(features)
    np.testing.assert_allclose(mu, features.mean(axis=0))
    np.testing.assert_allclose(sigma, np.cov(features, rowvar=False))


def test_running_statistics_over_batches_equal_statistics_of_all_features():
    features = np.random.default_rng(5).normal(loc=100.0, size=(103, 7))
    running = RunningFeatureStatistics()
    for start in range(0, 103, 10):
        running.update(features[start : start + 10])
    result = running.result()
    mu, sigma = feature_statistics(features)
    assert result.num_samples == 103
    np.testing.assert_allclose(result.mean, mu, rtol=1e-12)
    np.testing.assert_allclose(result.covariance, sigma, rtol=1e-9, atol=1e-12)


# --- FID on images ----------------------------------------------------------------------


@pytest.fixture
def quiet():
    """FID on a few hundred tiny images warns about N < 2048; these tests are not about that."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def test_fid_of_a_set_against_itself_is_zero(quiet):
    images = small_images(np.random.default_rng(6), 300)
    assert FID(pixel_features)(images, images).value == pytest.approx(0.0, abs=1e-6)


def test_fid_grows_with_added_noise(quiet):
    rng = np.random.default_rng(7)
    real = small_images(rng, 400)
    fid = FID(pixel_features)
    statistics = fid.statistics(real)
    values = [
        fid(statistics, np.clip(real + noise * rng.normal(size=real.shape), 0, 1)).value
        for noise in (0.02, 0.1, 0.3)
    ]
    assert values[0] < values[1] < values[2]


def test_fid_result_reports_both_sample_sizes(quiet):
    rng = np.random.default_rng(8)
    result = FID(pixel_features)(small_images(rng, 120), small_images(rng, 80))
    assert (result.num_samples, result.num_real_samples) == (80, 120)
    assert float(result) == result.value >= 0.0


def test_fid_warns_below_2048_samples():
    rng = np.random.default_rng(9)
    with pytest.warns(UserWarning, match="2048"):
        FID(pixel_features)(small_images(rng, 100), small_images(rng, 100))


def test_fid_does_not_warn_from_2048_samples():
    rng = np.random.default_rng(10)
    images = small_images(rng, 2048)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        FID(pixel_features, batch_size=512)(images, images)


def test_compute_fid_returns_a_non_negative_float(quiet):
    rng = np.random.default_rng(11)
    value = compute_fid(small_images(rng, 100), small_images(rng, 100), feature_extractor=pixel_features)
    assert isinstance(value, float) and value >= 0.0


def test_fid_reads_datasets_of_image_label_batches_like_arrays(quiet):
    rng = np.random.default_rng(12)
    real, generated = small_images(rng, 100), small_images(rng, 100)
    batches = [(real[i : i + 32], np.zeros(len(real[i : i + 32]))) for i in range(0, 100, 32)]
    fid = FID(pixel_features)
    assert fid(batches, generated).value == pytest.approx(fid(real, generated).value, rel=1e-9)


def test_fid_reads_tf_data_datasets(quiet):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(13)
    real, generated = small_images(rng, 100), small_images(rng, 100)
    dataset = tf.data.Dataset.from_tensor_slices({"image": real}).batch(30)
    fid = FID(pixel_features)
    assert fid(dataset, generated).value == pytest.approx(fid(real, generated).value, rel=1e-6)


def test_requesting_more_images_than_the_data_holds_raises():
    with pytest.raises(ValueError, match="only 10 images"):
        list(iterate_image_batches(iter([np.zeros((10, 4, 4, 1))]), 4, num_samples=20))


# --- the statistics cache ---------------------------------------------------------------


def never_called(images):
    raise AssertionError("the cache should have been used")


never_called.name = "pixels"


def test_real_statistics_are_cached_to_a_file_named_by_dataset_split_n_and_resize(tmp_path):
    images = small_images(np.random.default_rng(14), 64)
    FID(pixel_features, cache_dir=tmp_path).real_statistics(images, dataset_name="toy", split="test")
    assert [path.name for path in tmp_path.iterdir()] == ["toy_test_n64_pixels_none.npz"]


def test_cached_real_statistics_round_trip_without_recomputation(tmp_path):
    images = small_images(np.random.default_rng(15), 64)
    computed = FID(pixel_features, cache_dir=tmp_path).real_statistics(images, dataset_name="toy", split="test")
    loaded = FID(never_called, cache_dir=tmp_path).real_statistics(images, dataset_name="toy", split="test")
    np.testing.assert_array_equal(loaded.mean, computed.mean)
    np.testing.assert_array_equal(loaded.covariance, computed.covariance)
    assert loaded.num_samples == computed.num_samples == 64


def test_cache_key_distinguishes_sample_counts(tmp_path):
    fid = FID(pixel_features, cache_dir=tmp_path)
    assert fid.cache_path("toy", "test", 100) != fid.cache_path("toy", "test", 200)
    assert fid.cache_path("toy", "train", 100) != fid.cache_path("toy", "test", 100)


def test_statistics_file_write_leaves_no_temporary_files(tmp_path):
    statistics = FeatureStatistics(np.zeros(3), np.eye(3), num_samples=10)
    statistics.save(tmp_path / "stats.npz", dataset="toy")
    assert os.listdir(tmp_path) == ["stats.npz"]
    assert FeatureStatistics.load(tmp_path / "stats.npz").num_samples == 10


def test_atomically_written_files_get_the_permissions_of_a_plain_open(tmp_path):
    from keras_diffusion.data.files import write_bytes_atomically

    write_bytes_atomically(tmp_path / "atomic.bin", b"x")
    with open(tmp_path / "plain.bin", "wb") as file:
        file.write(b"x")
    assert os.stat(tmp_path / "atomic.bin").st_mode == os.stat(tmp_path / "plain.bin").st_mode


def test_fid_accepts_a_path_to_saved_statistics(tmp_path, quiet):
    rng = np.random.default_rng(16)
    real, generated = small_images(rng, 100), small_images(rng, 100)
    fid = FID(pixel_features)
    fid.statistics(real).save(tmp_path / "real.npz")
    assert fid(str(tmp_path / "real.npz"), generated).value == pytest.approx(fid(real, generated).value)


# --- KID --------------------------------------------------------------------------------


def test_kid_is_unbiased_for_equal_distributions():
    rng = np.random.default_rng(17)
    real, generated = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 8))
    num_subsets = 200
    mean, std = kernel_inception_distance(real, generated, num_subsets=num_subsets, subset_size=50)
    assert abs(mean) < 4 * std / np.sqrt(num_subsets)


def test_kid_is_positive_for_shifted_distributions():
    rng = np.random.default_rng(18)
    real, generated = rng.normal(size=(1000, 8)), rng.normal(loc=0.5, size=(1000, 8))
    mean, std = kernel_inception_distance(real, generated, num_subsets=50, subset_size=200)
    assert mean > 4 * std / np.sqrt(50) > 0


def test_kid_on_images_reports_sample_sizes():
    rng = np.random.default_rng(19)
    result = KID(pixel_features, num_subsets=10, subset_size=50)(small_images(rng, 60), small_images(rng, 70))
    assert (result.num_samples, result.num_real_samples) == (70, 60)
    assert result.std >= 0.0


def test_kid_rejects_features_of_different_dimensions():
    with pytest.raises(ValueError, match="equal d"):
        kernel_inception_distance(np.zeros((10, 3)), np.zeros((10, 4)))


# --- Wasserstein distance of pixel intensities ------------------------------------------


def test_wasserstein_between_black_and_white_sets_is_one():
    black, white = np.zeros((2, 4, 4, 1), "uint8"), np.full((3, 4, 4, 1), 255, "uint8")
    assert wasserstein_distance(black, white) == pytest.approx(1.0)


def test_wasserstein_of_a_set_with_itself_is_zero():
    images = (np.random.default_rng(20).random((5, 8, 8, 3)) * 255).astype("uint8")
    assert wasserstein_distance(images, images) == 0.0


def test_wasserstein_of_a_uniform_intensity_shift_is_the_shift():
    images = np.random.default_rng(21).integers(0, 200, size=(10, 8, 8, 1)).astype("uint8")
    assert wasserstein_distance(images, images + 20) == pytest.approx(20 / 255)


def test_wasserstein_uses_all_images_of_unequal_sets():
    # Truncating the real set to the generated set's length would give 0 here.
    real = np.stack([np.zeros((4, 4, 1)), np.ones((4, 4, 1))]).astype("float32")
    generated = np.zeros((1, 4, 4, 1), "float32")
    assert wasserstein_distance(real, generated) == pytest.approx(0.5)


def test_wasserstein_matches_scipy_on_raw_intensities():
    rng = np.random.default_rng(22)
    real = rng.integers(0, 256, size=(7, 5, 5, 1)).astype("uint8")
    generated = rng.integers(50, 256, size=(3, 5, 5, 1)).astype("uint8")
    expected = scipy.stats.wasserstein_distance(real.ravel() / 255.0, generated.ravel() / 255.0)
    assert wasserstein_distance(real, generated) == pytest.approx(expected, rel=1e-12)
