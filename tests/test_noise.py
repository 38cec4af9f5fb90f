"""Noise distributions: the mixture of the thesis' eq. 25-26, and training/sampling with it."""

import keras
import numpy as np
import pytest

import keras_diffusion as kd
from keras_diffusion.noise import GaussianNoise, MixtureGaussianNoise


def draw(distribution, count=400_000, seed=0):
    return keras.ops.convert_to_numpy(distribution.sample((count,), keras.random.SeedGenerator(seed)))


@pytest.mark.parametrize("p, phi", [(0.5, 0.5), (0.2, 0.3), (0.8, 0.9), (0.1, 0.05)])
def test_the_mixture_has_mean_zero_and_variance_one(p, phi):
    samples = draw(MixtureGaussianNoise(p, phi))
    assert samples.mean() == pytest.approx(0.0, abs=0.01)
    assert samples.var() == pytest.approx(1.0, rel=0.01)


def test_component_means_follow_eq_26_and_balance_the_mixture():
    noise = MixtureGaussianNoise(p=0.3, phi=0.4)
    m1, m2 = noise.means
    assert 0.3 * m1 + 0.7 * m2 == pytest.approx(0.0, abs=1e-12)
    assert 0.3 * (m1**2 + 0.16) + 0.7 * (m2**2 + 0.16) == pytest.approx(1.0, rel=1e-12)
    assert m1 == pytest.approx(np.sqrt((1 - 0.16) / (0.3 * 0.7 + 0.3**3 / 0.7 + 2 * 0.3**2)), rel=1e-12)


def test_a_narrow_mixture_is_bimodal_with_the_right_weights():
    noise = MixtureGaussianNoise(p=0.3, phi=0.1)
    samples = draw(noise)
    m1, m2 = noise.means
    near_first = np.mean(np.abs(samples - m1) < 0.3)
    near_second = np.mean(np.abs(samples - m2) < 0.3)
    between = np.mean(np.abs(samples - (m1 + m2) / 2) < 0.1)
    assert near_first == pytest.approx(0.3, abs=0.01) and near_second == pytest.approx(0.7, abs=0.01)
    assert between < 1e-3  # a Gaussian with the same variance would put ~8 % there


def test_gaussian_noise_is_standard_normal_and_seeded():
    samples = draw(GaussianNoise())
    assert samples.mean() == pytest.approx(0, abs=0.01) and samples.std() == pytest.approx(1, rel=0.01)
    np.testing.assert_array_equal(draw(GaussianNoise(), 10, seed=3), draw(GaussianNoise(), 10, seed=3))


@pytest.mark.parametrize("p, phi", [(0.0, 0.5), (1.0, 0.5), (0.5, 0.0), (0.5, 1.0)])
def test_invalid_mixture_parameters_are_rejected(p, phi):
    with pytest.raises(ValueError, match="p|phi"):
        MixtureGaussianNoise(p, phi)


def test_unknown_noise_names_are_rejected():
    with pytest.raises(ValueError, match="mixture_gaussian"):
        kd.noise.get_noise("laplace")


@pytest.fixture(scope="module")
def mixture_model():
    """A tiny unconditional 8×8 model trained with mixture noise, v-prediction and min-SNR weighting."""
    from conftest import tiny_unet

    rng = np.random.default_rng(0)
    images = np.clip(0.5 + 0.2 * rng.standard_normal((256, 8, 8, 1)), 0, 1).astype("float32")
    model = kd.DiffusionModel(
        tiny_unet(num_classes=None), timesteps=100, noise=MixtureGaussianNoise(0.3, 0.5),
        prediction="v", min_snr_gamma=5.0, seed=0,
    )  # fmt: skip
    model.compile(optimizer=kd.optimizers.Adam(2e-3))
    history = model.fit(images, batch_size=32, epochs=4, verbose=0)
    return model, history


def test_a_model_trains_with_mixture_noise(mixture_model):
    model, history = mixture_model
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]


def test_a_mixture_noise_model_samples_and_round_trips_its_config(mixture_model, tmp_path):
    model, _ = mixture_model
    images = model.generate(4, sampler="ddpm", steps=10, seed=0)
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))
    path = str(tmp_path / "mixture.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.noise, MixtureGaussianNoise) and restored.noise.get_config() == {"p": 0.3, "phi": 0.5}
    assert restored.min_snr_gamma == 5.0 and restored.prediction == "v"
    np.testing.assert_allclose(restored.generate(4, sampler="ddpm", steps=10, seed=0), images, atol=1e-5)


def test_score_based_samplers_refuse_a_non_gaussian_model(mixture_model):
    model, _ = mixture_model
    for sampler in ("sde", "pc"):
        with pytest.raises(ValueError, match="Gaussian"):
            model.generate(2, sampler=sampler, steps=5)
