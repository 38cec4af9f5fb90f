"""EDM's preconditioning (`prediction="edm"`) and its log-normal training levels (`timestep_sampling`)."""

import keras
import numpy as np
import pytest

import keras_diffusion as kd
from keras_diffusion import predictions
from keras_diffusion.timestep_sampling import LogNormalTimesteps, UniformTimesteps

ALPHA_BARS = (0.9999, 0.9, 0.5, 0.05, 1e-4)
IMAGES = np.clip(0.7 + 0.05 * np.random.default_rng(0).standard_normal((256, 8, 8, 1)), 0, 1).astype("float32")


def to_numpy(x):
    return keras.ops.convert_to_numpy(x).astype("float64")


def scales(alpha_bar):
    return np.sqrt(alpha_bar), np.sqrt(1.0 - alpha_bar)


@pytest.mark.parametrize("sigma_data", [0.3, 0.5, 1.0])
def test_the_edm_network_input_has_unit_variance_for_data_of_std_sigma_data(sigma_data):
    """EDM's c_in: x_t / r has unit variance at every level when x_0 ~ N(0, σ_data²)."""
    rng = np.random.default_rng(0)
    x0 = sigma_data * rng.standard_normal(200_000)
    eps = rng.standard_normal(200_000)
    for alpha_bar in ALPHA_BARS:
        signal, sigma = scales(alpha_bar)
        scaled = to_numpy(predictions.network_input("edm", signal * x0 + sigma * eps, signal, sigma, sigma_data))
        assert scaled.std() == pytest.approx(1.0, abs=0.01)
    assert predictions.network_input("v", x0, 0.5, 0.5) is x0  # the other targets see x_t itself


@pytest.mark.parametrize("sigma_data", [0.3, 0.5, 1.0])
def test_the_edm_loss_is_edms_weighted_denoiser_loss(sigma_data):
    """‖F − F*‖² = λ(σ)·‖D − x_0‖² with λ(σ) = (σ² + σ_data²)/(σ σ_data)², σ = √((1−ᾱ)/ᾱ) (EDM table 1)."""
    rng = np.random.default_rng(1)
    x0, eps, output = rng.standard_normal((3, 64))
    for alpha_bar in ALPHA_BARS:
        signal, sigma = scales(alpha_bar)
        x_t = signal * x0 + sigma * eps
        target = to_numpy(predictions.training_target("edm", x0, eps, signal, sigma, sigma_data))
        x0_hat, _ = predictions.to_x0_and_epsilon("edm", output, x_t, signal, sigma, sigma_data)
        edm_sigma = sigma / signal
        weight = (edm_sigma**2 + sigma_data**2) / (edm_sigma * sigma_data) ** 2
        assert np.sum((output - target) ** 2) == pytest.approx(weight * np.sum((to_numpy(x0_hat) - x0) ** 2), rel=1e-4)


def test_edm_with_unit_sigma_data_is_v_prediction_negated():
    rng = np.random.default_rng(2)
    x0, eps, output = rng.standard_normal((3, 32))
    for alpha_bar in ALPHA_BARS:
        signal, sigma = scales(alpha_bar)
        x_t = signal * x0 + sigma * eps
        np.testing.assert_allclose(
            to_numpy(predictions.training_target("edm", x0, eps, signal, sigma, 1.0)),
            -to_numpy(predictions.training_target("v", x0, eps, signal, sigma)), atol=1e-6,
        )  # fmt: skip
        for edm, v in zip(predictions.to_x0_and_epsilon("edm", output, x_t, signal, sigma, 1.0),
                          predictions.to_x0_and_epsilon("v", -output, x_t, signal, sigma)):  # fmt: skip
            np.testing.assert_allclose(to_numpy(edm), to_numpy(v), atol=1e-6)


def test_log_normal_timesteps_follow_edms_distribution_on_the_nearest_level():
    schedule = kd.schedules.get_schedule("cosine")
    log_sigmas = np.log(schedule.sigmas)
    t = to_numpy(LogNormalTimesteps(mean=-1.2, std=1.2).sample(20_000, schedule, keras.random.SeedGenerator(0)))
    assert t.min() >= 0 and t.max() < schedule.timesteps and np.all(t == np.round(t))
    drawn = log_sigmas[t.astype(int)]
    assert drawn.mean() == pytest.approx(-1.2, abs=0.04) and drawn.std() == pytest.approx(1.2, abs=0.04)
    # Far outside the schedule's range: its first and last level.
    far = to_numpy(LogNormalTimesteps(mean=40.0, std=1e-3).sample(4, schedule, keras.random.SeedGenerator(0)))
    near = to_numpy(LogNormalTimesteps(mean=-40.0, std=1e-3).sample(4, schedule, keras.random.SeedGenerator(0)))
    assert set(far) == {schedule.timesteps - 1} and set(near) == {0}
    # A value between two levels goes to the nearer one.
    middle = 0.3 * log_sigmas[500] + 0.7 * log_sigmas[501]
    assert set(to_numpy(LogNormalTimesteps(mean=middle, std=1e-6).sample(8, schedule, keras.random.SeedGenerator(0)))) == {501}


def test_uniform_timesteps_cover_every_level():
    schedule = kd.schedules.LinearSchedule(50)
    t = to_numpy(UniformTimesteps().sample(5_000, schedule, keras.random.SeedGenerator(0)))
    assert set(t.astype(int)) == set(range(50))


def test_timestep_sampling_and_sigma_data_refuse_bad_values():
    with pytest.raises(ValueError, match="timestep_sampling"):
        kd.timestep_sampling.get_timestep_sampling("logit_normal")
    with pytest.raises(ValueError, match="positive `std`"):
        LogNormalTimesteps(std=0.0)
    from conftest import tiny_unet

    with pytest.raises(ValueError, match="sigma_data"):
        kd.DiffusionModel(tiny_unet(), timesteps=10, prediction="edm", sigma_data=-0.5)


@pytest.fixture(scope="module")
def edm_model():
    """A tiny conditional model trained with EDM's preconditioning (σ_data 0.6) and log-normal levels."""
    from conftest import tiny_unet

    rng = np.random.default_rng(0)
    model = kd.DiffusionModel(
        tiny_unet(), timesteps=100, prediction="edm", sigma_data=0.6,
        timestep_sampling=LogNormalTimesteps(mean=-1.0, std=1.4), seed=0,
    )  # fmt: skip
    model.compile(optimizer=kd.optimizers.Adam(2e-3))
    history = model.fit(IMAGES, rng.integers(0, 3, 256), batch_size=32, epochs=8, verbose=0)
    return model, history


def test_an_edm_model_trains_samples_with_guidance_and_round_trips(edm_model, tmp_path):
    model, history = edm_model
    losses = history.history["loss"]
    # The data are independent Gaussian pixels of mean m and std s (clipped far out). At level σ the
    # least EDM loss is λ(σ) times the posterior variance, (σ² + σ_d²) s² / (σ_d² (s² + σ²)), and a
    # network that outputs 0 loses E[F*²] = (σ² (s² + m²) / σ_d² + σ_d²) / (σ² + σ_d²).
    data = IMAGES * 2 - 1
    mean, std, sigma_data = float(np.mean(data)), float(np.std(data)), 0.6
    draws = to_numpy(model.timestep_sampling.sample(100_000, model.schedule, keras.random.SeedGenerator(1)))
    levels = model.schedule.sigmas[draws.astype(int)] ** 2
    floor = np.mean((levels + sigma_data**2) * std**2 / (sigma_data**2 * (std**2 + levels)))
    zero_output = np.mean((levels * (std**2 + mean**2) / sigma_data**2 + sigma_data**2) / (levels + sigma_data**2))
    assert np.all(np.isfinite(losses)) and losses[0] > losses[-1] > 0.9 * floor
    assert losses[-1] < floor + 0.3 * (zero_output - floor)  # measured: 0.31 between 0.23 and 0.80
    images = model.generate(4, steps=5, labels=[0, 1, 2, 3], guidance_scale=2.0, seed=0)
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))
    path = str(tmp_path / "edm.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    assert (restored.prediction, restored.sigma_data) == ("edm", 0.6)
    assert restored.timestep_sampling.get_config() == {"mean": -1.0, "std": 1.4}
    restored_images = restored.generate(4, steps=5, labels=[0, 1, 2, 3], guidance_scale=2.0, seed=0)
    np.testing.assert_allclose(restored_images, images, atol=1e-5)
