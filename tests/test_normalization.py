"""kd.models.GroupNormalization: Keras' layer's values and gradients, faster; old files still load."""

import keras
import numpy as np
import pytest
from conftest import tiny_unet, value_and_gradients

import keras_diffusion as kd
from keras_diffusion.models.networks import normalization


def two_layers(shape, groups, seed=0):
    """Keras' GroupNormalization and ours, built for `shape`, with the same random gamma and beta."""
    rng = np.random.default_rng(seed)
    gamma, beta = rng.normal(1, 0.3, shape[-1:]).astype("float32"), rng.normal(0, 0.3, shape[-1:]).astype("float32")
    pair = []
    for cls in (keras.layers.GroupNormalization, kd.models.GroupNormalization):
        layer = cls(groups, epsilon=1e-5)
        layer.build(shape)
        layer.set_weights([gamma, beta])
        pair.append(layer)
    return pair


SHAPES = [(3, 6, 6, 8), (2, 10, 12), (2, 3, 4, 4, 8)]  # images, sequences, volumes; channels last


@pytest.mark.parametrize("shape", SHAPES)
def test_outputs_equal_keras_group_normalization(shape):
    keras_layer, ours = two_layers(shape, groups=4)
    # A large mean and a small spread: a one-pass E[x²] - E[x]² variance would lose digits here.
    x = np.random.default_rng(1).normal(30.0, 0.5, shape).astype("float32")
    expected, got = keras.ops.convert_to_numpy(keras_layer(x)), keras.ops.convert_to_numpy(ours(x))
    np.testing.assert_allclose(got, expected, atol=2e-4)
    np.testing.assert_allclose(got.std(), expected.std(), rtol=1e-4)


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_equal_those_of_keras_group_normalization(shape):
    keras_layer, ours = two_layers(shape, groups=4)
    rng = np.random.default_rng(2)
    x = rng.normal(2.0, 1.5, shape).astype("float32")
    weights = rng.normal(0, 1, shape).astype("float32")  # a loss whose gradient is not uniform
    gamma, beta = (keras.ops.convert_to_numpy(v) for v in keras_layer.weights)

    def loss(layer):
        return lambda x, gamma, beta: keras.ops.sum(layer.stateless_call([gamma, beta], [], x)[0] ** 2 * weights)

    expected_value, expected = value_and_gradients(loss(keras_layer), x, gamma, beta)
    value, got = value_and_gradients(loss(ours), x, gamma, beta)
    np.testing.assert_allclose(value, expected_value, rtol=1e-5)
    for name, g, e in zip(("x", "gamma", "beta"), got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * np.abs(e).max(), err_msg=f"d loss / d {name}")


def test_each_group_is_normalised_to_zero_mean_and_unit_variance():
    x = keras.random.normal((2, 5, 5, 6), mean=4.0, stddev=3.0, seed=0)
    y = keras.ops.convert_to_numpy(normalization.group_normalization(x, np.ones(6, "float32"), np.zeros(6, "float32"), 3, 1e-6))
    grouped = y.reshape(2, 25, 3, 2)
    np.testing.assert_allclose(grouped.mean(axis=(1, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(grouped.var(axis=(1, 3)), 1.0, rtol=1e-4)


def test_mixed_bfloat16_returns_bfloat16_close_to_keras_layer_and_keeps_float32_weights():
    x = np.random.default_rng(3).normal(1.0, 2.0, (2, 4, 4, 8)).astype("float32")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        keras_layer, ours = two_layers(x.shape, groups=2)
        expected, got = keras_layer(x), ours(x)
    finally:
        keras.config.set_dtype_policy(previous)
    assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
    assert {v.dtype for v in ours.weights} == {"float32"}
    expected = keras.ops.convert_to_numpy(keras.ops.cast(expected, "float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.cast(got, "float32")), expected, atol=0.02)


def test_other_configurations_use_keras_code():
    # Channels first and no learned offset: Keras' own path, the same values as Keras' layer.
    x = np.random.default_rng(4).normal(0, 1, (2, 8, 4, 8)).astype("float32")
    for kwargs in ({"axis": 1}, {"center": False}):
        ours, reference = kd.models.GroupNormalization(4, **kwargs), keras.layers.GroupNormalization(4, **kwargs)
        assert not ours._uses_closed_form_gradient(x)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(reference(x)), atol=1e-5)


def test_unknown_spatial_sizes_use_keras_code_inside_a_functional_model():
    inputs = keras.Input((None, None, 8))
    model = keras.Model(inputs, kd.models.GroupNormalization(4)(inputs))
    x = np.random.default_rng(6).normal(0, 1, (2, 5, 3, 8)).astype("float32")
    reference = keras.layers.GroupNormalization(4)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(reference(x)), atol=1e-5)


def test_config_round_trips_through_serialization():
    layer = kd.models.GroupNormalization(4, epsilon=1e-3, name="norm")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is kd.models.GroupNormalization
    assert restored.get_config() == layer.get_config()


def test_a_unet_saved_with_keras_group_normalization_loads_with_the_same_outputs(tmp_path, monkeypatch):
    # Files written before the U-Net used this layer hold Keras' GroupNormalization in their blocks.
    from keras_diffusion.models.networks import layers, unet

    class KerasGroupNormalizationThenActivation(keras.layers.GroupNormalization):
        """What the blocks computed then: Keras' layer, then the SiLU."""

        def __init__(self, *args, activation=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.activation = keras.activations.get(activation)

        def call(self, inputs):
            return self.activation(super().call(inputs))

    monkeypatch.setattr(layers, "GroupNormalization", KerasGroupNormalizationThenActivation)
    monkeypatch.setattr(unet, "GroupNormalization", keras.layers.GroupNormalization)
    old = tiny_unet()
    assert not any(isinstance(layer, kd.models.GroupNormalization) for layer in _all_layers(old))
    path = str(tmp_path / "old_unet.keras")
    old.save(path)
    monkeypatch.undo()

    loaded = keras.saving.load_model(path)
    rng = np.random.default_rng(5)
    inputs = [rng.normal(0, 1, (2, 8, 8, 1)).astype("float32"), np.array([3.0, 700.0], "float32"), np.array([0, 2], "int32")]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(inputs)), keras.ops.convert_to_numpy(old(inputs)), rtol=1e-4, atol=1e-5
    )
    assert any(isinstance(layer, kd.models.GroupNormalization) for layer in _all_layers(loaded))


def _all_layers(model):
    return list(model._flatten_layers(include_self=False, recursive=True))


def test_activation_is_applied_in_float32_before_the_cast_on_both_paths():
    x = np.random.default_rng(7).normal(0.5, 2.0, (2, 4, 4, 8)).astype("float32")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        for kwargs in ({}, {"axis": 1}):  # our gradient's path, then Keras' code
            plain = kd.models.GroupNormalization(2, dtype="float32", **kwargs)
            activated = kd.models.GroupNormalization(2, activation="silu", **kwargs)
            plain.build(x.shape)
            activated.build(x.shape)
            # gamma and beta exactly representable in bfloat16: the layer reads its variables in that dtype.
            channels = x.shape[kwargs.get("axis", -1)]
            weights = [np.random.default_rng(9).normal(1, 0.3, channels).astype("float32"), np.full(channels, 0.25, "float32")]
            weights = [keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(w, "bfloat16"), "float32")) for w in weights]
            plain.set_weights(weights)
            activated.set_weights(weights)
            expected = keras.ops.cast(keras.ops.silu(plain(x)), "bfloat16")  # SiLU in float32, then the cast
            got = activated(x)
            assert keras.backend.standardize_dtype(got.dtype) == "bfloat16"
            got, expected = (keras.ops.convert_to_numpy(keras.ops.cast(y, "float32")) for y in (got, expected))
            if kwargs:  # Keras' code hands over a bfloat16 result before the SiLU: only close
                np.testing.assert_allclose(got, expected, atol=0.02)
            else:
                np.testing.assert_array_equal(got, expected)
    finally:
        keras.config.set_dtype_policy(previous)


def test_activation_round_trips_and_configs_without_it_load_in_keras_layer():
    x = np.random.default_rng(8).normal(0, 1, (2, 3, 3, 8)).astype("float32")
    layer = kd.models.GroupNormalization(4, activation="silu")
    layer.build(x.shape)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert restored.get_config() == layer.get_config()
    restored.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x)), keras.ops.convert_to_numpy(layer(x)), atol=1e-6)
    assert float(keras.ops.min(restored(x))) < 0  # SiLU's negative lobe: not a ReLU, not the identity's range
    config = kd.models.GroupNormalization(4).get_config()
    assert "activation" not in config
    assert keras.layers.GroupNormalization.from_config(config).groups == 4
