import keras
import numpy as np
import pytest
from conftest import randomise_output, tiny_unet

import keras_diffusion as kd
from keras_diffusion.models.generation import make_step_function
from keras_diffusion.runtime import compile_function


def numpy_weights(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def tiny_images(n=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, 8, 8, 1)).astype("float32")


# ----------------------------------------------------------------------------- training


def test_training_loss_decreases_on_a_tiny_mnist_subset(trained_mnist):
    _, history = trained_mnist
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("jit_compile", [True, False])
def test_noise_and_timesteps_change_between_compiled_steps(jit_compile):
    # A one-level U-Net: eager JAX (jit_compile=False) compiles every operation of the step on its own.
    unet = kd.models.UNet(image_shape=(8, 8, 1), widths=(4,), num_res_blocks=1, num_classes=3, norm_groups=4)
    randomise_output(unet)
    model = kd.DiffusionModel(unet, timesteps=100, ema_decay=None, seed=3)
    model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=jit_compile)
    images, labels = tiny_images(), np.arange(16) % 3
    state_before = keras.ops.convert_to_numpy(model.seed_generator.state).copy()
    losses = [float(model.train_on_batch(images, labels)) for _ in range(3)]
    # The weights cannot move (learning rate 0), so equal losses would mean frozen noise.
    assert len(set(losses)) == 3
    assert not np.array_equal(state_before, keras.ops.convert_to_numpy(model.seed_generator.state))


def test_ema_follows_the_weights_with_the_warmup_decay():
    model = kd.DiffusionModel(tiny_unet(), timesteps=100, ema_decay=0.999, seed=4)
    model.compile(optimizer=keras.optimizers.SGD(0.5))
    images, labels = tiny_images(), np.arange(16) % 3
    theta_0 = numpy_weights(model.denoiser.trainable_variables)
    model.train_on_batch(images, labels)
    theta_1 = numpy_weights(model.denoiser.trainable_variables)
    assert any(not np.allclose(a, b) for a, b in zip(theta_0, theta_1))
    # The first update folds in θ_0 (EMA starts at θ_0, so it stays there).
    for ema, w0 in zip(numpy_weights(model.weight_averages.sets[0]), theta_0):
        np.testing.assert_allclose(ema, w0, atol=1e-6)
    model.train_on_batch(images, labels)
    decay = min(0.999, 2 / 11)  # (1 + k) / (10 + k) with k = 1 previous update
    for ema, w0, w1 in zip(numpy_weights(model.weight_averages.sets[0]), theta_0, theta_1):
        np.testing.assert_allclose(ema, w0 + (1 - decay) * (w1 - w0), atol=1e-5)
    assert int(keras.ops.convert_to_numpy(model.weight_averages.step)) == 2


def test_fit_accepts_a_tf_data_dataset_of_uint8_images_and_labels():
    import tensorflow as tf

    model = kd.DiffusionModel(tiny_unet(num_classes=3), timesteps=100, seed=5)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    # compile() creates the optimizer's variables: a step that created them would be traced twice on TF.
    assert model.optimizer.built and len(model.optimizer.variables) > len(model.trainable_variables)
    traces = []
    train_step = model.train_step
    model.train_step = lambda *args: traces.append(1) or train_step(*args)  # (data) on TF, (state, data) on JAX
    images, labels = (tiny_images(32) * 255).astype("uint8"), np.arange(32, dtype="int64") % 3
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    history = model.fit(dataset, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.all(np.isfinite(history.history["loss"]))
    assert len(traces) == 1  # one trace for all 8 steps of equal shape


def test_call_maps_uint8_and_unit_floats_to_minus_one_one(tiny_conditional):
    scaled = keras.ops.convert_to_numpy(tiny_conditional(np.full((1, 8, 8, 1), 255, "uint8")))
    np.testing.assert_allclose(scaled, 1.0)
    scaled = keras.ops.convert_to_numpy(tiny_conditional(np.zeros((1, 8, 8, 1), "float32")))
    np.testing.assert_allclose(scaled, -1.0)


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_generate_returns_the_requested_count_in_unit_range(trained_mnist, sampler):
    model, _ = trained_mnist
    images = model.generate(5, sampler=sampler, steps=10, seed=0, batch_size=2, labels=[0, 1, 2, 3, 10])
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_same_seed_gives_identical_images_and_another_seed_does_not(tiny_conditional):
    ddim = kd.samplers.get_sampler("ddim", eta=0.5)
    first = tiny_conditional.generate(4, sampler=ddim, steps=5, seed=11)
    np.testing.assert_array_equal(first, tiny_conditional.generate(4, sampler=ddim, steps=5, seed=11))
    assert not np.allclose(first, tiny_conditional.generate(4, sampler=ddim, steps=5, seed=12))


def test_generate_with_keywords_equals_the_same_settings_handed_over_whole(tiny_conditional):
    ddim = kd.samplers.get_sampler("ddim", eta=0.5, spacing="leading")
    settings = kd.samplers.Sampling(ddim, steps=4, guidance_scale=1.0, batch_size=2)
    keywords = tiny_conditional.generate(3, sampler=ddim, steps=4, guidance_scale=1.0, batch_size=2, seed=1)
    np.testing.assert_array_equal(keywords, tiny_conditional.generate(3, seed=1, **settings.arguments()))
    with pytest.raises(TypeError, match="eta"):
        tiny_conditional.generate(3, sampler="ddim", eta=0.5)  # a sampler's settings live on the sampler


def test_missing_labels_are_drawn_uniformly_from_the_seed(tiny_conditional):
    drawn = np.random.default_rng(5).integers(0, 3, 6)
    np.testing.assert_array_equal(
        tiny_conditional.generate(6, steps=3, seed=5), tiny_conditional.generate(6, steps=3, seed=5, labels=drawn)
    )


def test_ddim_with_eta_one_generates_what_ddpm_generates(tiny_conditional):
    kwargs = dict(steps=8, seed=7, labels=[0, 1, 2, 3])
    # The same levels for both.
    ddim = tiny_conditional.generate(4, sampler=kd.samplers.get_sampler("ddim", eta=1.0, spacing="leading"), **kwargs)
    ddpm = tiny_conditional.generate(4, sampler=kd.samplers.get_sampler("ddpm", spacing="leading"), **kwargs)
    np.testing.assert_allclose(ddim, ddpm, atol=2e-5)


def test_guidance_weight_zero_equals_the_conditional_prediction(tiny_conditional):
    model = tiny_conditional
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.standard_normal((4, 8, 8, 1)).astype("float32"))
    labels = keras.ops.convert_to_tensor(np.array([0, 1, 2, 0], "int32"))
    weights = [v.value for v in model.weight_averages.sets[0]]
    row = np.array([60, model.schedule.alpha_bar[60], model.schedule.alpha_bar[40]], "float32")

    def step(guided, w):
        # Compiled as generate compiles it (one XLA program; eager JAX would compile every operation).
        fn = compile_function(make_step_function(model, kd.samplers.DDIMSampler(), guided=guided, clip_denoised=False))
        x_next, _ = fn(weights, [], x, (), row, None, labels, np.float32(w))
        return keras.ops.convert_to_numpy(x_next)

    conditional = step(False, 0.0)
    np.testing.assert_allclose(step(True, 0.0), conditional, atol=1e-5)
    assert not np.allclose(step(True, 2.0), conditional, atol=1e-3)


def test_generate_uses_the_ema_weights(trained_mnist):
    model, _ = trained_mnist
    kwargs = dict(steps=5, seed=1, labels=np.arange(4))
    assert not np.allclose(model.generate(4, **kwargs), model.generate(4, use_ema=False, **kwargs))


def test_save_and_load_restore_schedule_ema_and_identical_samples(trained_mnist, tmp_path):
    model, _ = trained_mnist
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, kd.DiffusionModel)
    assert restored.get_config()["schedule"] == model.get_config()["schedule"]
    for a, b in zip(numpy_weights(model.weight_averages.sets[0]), numpy_weights(restored.weight_averages.sets[0])):
        np.testing.assert_array_equal(a, b)
    kwargs = dict(steps=6, seed=3, labels=np.arange(4), guidance_scale=0.5)
    np.testing.assert_array_equal(model.generate(4, **kwargs), restored.generate(4, **kwargs))


def test_a_user_denoiser_without_num_classes_attribute_works():
    inputs = [keras.Input((4, 4, 1)), keras.Input(())]
    outputs = keras.layers.Conv2D(1, 3, padding="same")(inputs[0])
    denoiser = keras.Model(inputs, outputs)
    model = kd.DiffusionModel(denoiser, timesteps=50)
    assert model.image_shape == (4, 4, 1) and model.num_classes is None
    assert model.generate(3, steps=4, seed=0).shape == (3, 4, 4, 1)


def test_a_saved_and_reloaded_model_continues_training_exactly_like_the_original(tmp_path):
    images, labels = tiny_images(), np.arange(16) % 3
    model = kd.DiffusionModel(tiny_unet(), timesteps=100, seed=8)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    model.train_on_batch(images, labels)
    model.save(tmp_path / "checkpoint.keras")
    restored = keras.models.load_model(tmp_path / "checkpoint.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored.seed_generator.state), keras.ops.convert_to_numpy(model.seed_generator.state)
    )
    for m in (model, restored):
        m.train_on_batch(images, labels)
    for a, b in zip(numpy_weights(model.weights), numpy_weights(restored.weights)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_the_models_with_their_own_loss_share_one_base_that_saves_seed_states():
    from keras_diffusion.models.base import OwnLossModel
    from keras_diffusion.models.seed_states import SavesSeedStates

    models = (kd.DiffusionModel, kd.LatentDiffusionModel, kd.models.ARDM, kd.models.AutoencoderKL,
              kd.models.DenoisingAutoencoder)  # fmt: skip
    for cls in models:
        assert issubclass(cls, OwnLossModel), cls
        assert cls.save_own_variables is SavesSeedStates.save_own_variables, cls
        assert cls.load_own_variables is SavesSeedStates.load_own_variables, cls
