"""Power-function EMA and post-hoc EMA reconstruction (EDM2): the maths, the model's EMAs, the snapshots."""

import os

import keras
import numpy as np
import pytest
from conftest import tiny_unet

import keras_diffusion as kd
from keras_diffusion import ema

STDS = (0.05, 0.10)


def trajectory(t):
    """A made-up weight trajectory θ_t: smooth but not polynomial, two 'parameters'."""
    return np.array([np.sin(t / 300.0), (t / 2000.0) ** 2 - np.cos(t / 90.0) / 10])


def track(stds, updates, snapshot_every=None):
    """Discrete power-function EMAs of `trajectory` for t = 0..updates, as DiffusionModel folds them."""
    exponents = [float(ema.std_to_exponent(std)) for std in stds]
    averages = [trajectory(0) for _ in stds]
    snapshots = []
    for t in range(updates + 1):
        for index, exponent in enumerate(exponents):
            decay = ema.power_ema_decay(t, exponent)
            averages[index] = decay * averages[index] + (1 - decay) * trajectory(t)
        if snapshot_every and t and t % snapshot_every == 0:
            snapshots += [(t, std, [average.copy()]) for std, average in zip(stds, averages)]
    return averages, snapshots


@pytest.mark.parametrize("std", [0.01, 0.05, 0.1, 0.2, 0.28])
def test_std_and_exponent_are_inverse(std):
    exponent = ema.std_to_exponent(std)
    assert exponent > 0
    assert ema.exponent_to_std(exponent) == pytest.approx(std, rel=1e-10)


@pytest.mark.parametrize("std", [0.0, -0.1, 0.3, float("nan")])
def test_std_outside_the_power_functions_range_is_rejected(std):
    with pytest.raises(ValueError, match="0 < std"):
        ema.std_to_exponent(std)


@pytest.mark.parametrize("std", [0.05, 0.1, 0.2])
def test_the_discrete_power_ema_has_the_profiles_mean_and_std(std):
    """Averaging θ_t = t (and t²) gives the mean (and second moment) of the profile p(τ) ∝ τ^γ on [0, T]."""
    exponent, horizon = float(ema.std_to_exponent(std)), 4000
    mean = second = 0.0
    for t in range(horizon + 1):
        decay = ema.power_ema_decay(t, exponent)
        mean = decay * mean + (1 - decay) * t
        second = decay * second + (1 - decay) * t**2
    expected_mean = (exponent + 1) / (exponent + 2) * horizon
    assert mean == pytest.approx(expected_mean, rel=1e-3)
    assert np.sqrt(second - mean**2) / horizon == pytest.approx(std, rel=1e-2)  # σ_rel: the std relative to T


def test_inner_product_is_symmetric_and_matches_numerical_integration():
    t_a, std_a, t_b, std_b = 700.0, 0.05, 1000.0, 0.12
    tau = np.linspace(0, 1000, 2_000_001)

    def profile(t, std):
        g = float(ema.std_to_exponent(std))
        return np.where(tau <= t, (g + 1) / t * (tau / t) ** g, 0.0)

    numerical = np.trapezoid(profile(t_a, std_a) * profile(t_b, std_b), tau)
    assert ema.power_profile_inner_product(t_a, std_a, t_b, std_b) == pytest.approx(numerical, rel=1e-4)
    assert ema.power_profile_inner_product(t_b, std_b, t_a, std_a) == pytest.approx(numerical, rel=1e-4)


@pytest.mark.parametrize("target_std", [0.03, 0.07, 0.15])
def test_posthoc_reconstruction_matches_an_ema_tracked_during_training(target_std):
    (direct,), _ = track([target_std], 5000)
    _, snapshots = track(STDS, 5000, snapshot_every=500)
    reconstructed = ema.reconstruct(snapshots, target_std)[0]
    spread = np.abs(trajectory(5000) - direct).max()  # how far the EMA is from the raw weights
    assert np.abs(reconstructed - direct).max() < 0.05 * spread


def test_reconstruction_at_an_earlier_time_uses_only_the_snapshots_before_it():
    (direct,), _ = track([0.1], 2500)
    _, snapshots = track(STDS, 5000, snapshot_every=500)
    np.testing.assert_allclose(ema.reconstruct(snapshots, 0.1, target_updates=2500)[0], direct, rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="at or before"):
        ema.reconstruct(snapshots, 0.1, target_updates=100)


def test_posthoc_coefficients_sum_to_one():
    coefficients = ema.posthoc_coefficients([1000, 1000, 2000, 2000], [0.05, 0.1, 0.05, 0.1], 2000, 0.08)
    assert coefficients.sum() == pytest.approx(1.0)


# --- the model's EMAs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def power_ema_run(tmp_path_factory):
    """A tiny conditional model with two power-function EMAs, fitted 5 updates with snapshots every 2."""
    directory = tmp_path_factory.mktemp("ema")
    model = kd.DiffusionModel(tiny_unet(), timesteps=100, ema_std=STDS, seed=0)
    model.compile(optimizer=kd.optimizers.Adam(1e-2))
    rng = np.random.default_rng(0)
    images, labels = rng.uniform(0, 1, (40, 8, 8, 1)).astype("float32"), np.arange(40) % 3
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0, callbacks=[kd.callbacks.EMASnapshots(directory, 2)])
    return model, directory, (images, labels)


def test_each_ema_follows_the_power_function_decay(power_ema_run):
    model, _, (images, labels) = power_ema_run
    before = [model.ema_weights(index) for index in range(len(STDS))]
    start = int(keras.ops.convert_to_numpy(model.weight_averages.step))  # the fold of step s uses θ_s, with β_s
    weights = []
    for batch in range(3):  # the fold at the start of each step uses the weights the previous step produced
        weights.append([keras.ops.convert_to_numpy(v) for v in model.denoiser.trainable_variables])
        model.train_on_batch(images[8 * batch : 8 * batch + 8], labels[8 * batch : 8 * batch + 8])
    for index, std in enumerate(STDS):
        exponent = float(ema.std_to_exponent(std))
        expected = [w.astype("float64") for w in before[index]]
        for offset, theta in enumerate(weights):
            decay = ema.power_ema_decay(start + offset, exponent)
            expected = [decay * e + (1 - decay) * t for e, t in zip(expected, theta)]
        for got, want in zip(model.ema_weights(index), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_snapshots_are_written_every_n_updates_and_at_the_end(power_ema_run):
    _, directory, _ = power_ema_run
    # 5 updates: snapshots after updates 2 and 4 and at the end; named by the profile time t = updates - 1.
    assert sorted(os.listdir(directory)) == [f"ema_snapshot_{t:09d}.npz" for t in (1, 3, 4)]
    snapshots = kd.callbacks.read_ema_snapshots(directory)
    assert [(t, std) for t, std, _ in snapshots] == [(t, s) for t in (1, 3, 4) for s in STDS]


def test_reconstructing_a_tracked_std_returns_that_ema(power_ema_run):
    model, directory, _ = power_ema_run
    snapshots = [s for s in kd.callbacks.read_ema_snapshots(directory) if s[0] <= 4]
    last = {std: weights for t, std, weights in snapshots if t == 4}
    for std in STDS:
        for got, want in zip(ema.reconstruct(snapshots, std, target_updates=4), last[std]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_set_ema_weights_changes_what_generate_samples(tiny_conditional):
    model = kd.DiffusionModel(tiny_unet(), timesteps=100, ema_std=0.1, seed=0)
    raw = model.generate(2, steps=2, labels=[0, 1], seed=0, use_ema=False)
    model.set_ema_weights([w + 0.05 for w in model.ema_weights()])
    assert not np.allclose(model.generate(2, steps=2, labels=[0, 1], seed=0), raw)
    model.set_ema_weights([keras.ops.convert_to_numpy(v) for v in model.denoiser.trainable_variables])
    np.testing.assert_allclose(model.generate(2, steps=2, labels=[0, 1], seed=0), raw, atol=1e-6)
    with pytest.raises(ValueError, match="shaped like"):
        model.set_ema_weights(model.ema_weights()[:-1])
    with pytest.raises(ValueError, match="out of range"):
        model.ema_weights(1)


def test_a_model_with_several_emas_saves_and_loads_them_all(power_ema_run, tmp_path):
    model, _, _ = power_ema_run
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.ema_stds == STDS
    for index in range(len(STDS)):
        for got, want in zip(loaded.ema_weights(index), model.ema_weights(index)):
            np.testing.assert_array_equal(got, want)


def test_ema_snapshots_need_power_function_emas():
    model = kd.DiffusionModel(tiny_unet(), timesteps=100)
    with pytest.raises(ValueError, match="ema_std"):
        kd.callbacks.EMASnapshots("unused", 10).set_model(model)
    with pytest.raises(ValueError, match="0 < std"):
        kd.DiffusionModel(tiny_unet(), timesteps=100, ema_std=0.5)
