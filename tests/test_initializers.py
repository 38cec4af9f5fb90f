"""The host initializers: Keras' distributions and seeds, drawn with NumPy, and no XLA program per shape."""

import keras
import numpy as np
import pytest

import keras_diffusion as kd
from keras_diffusion.runtime import initializers


def values(initializer, shape, dtype=None) -> np.ndarray:
    return keras.ops.convert_to_numpy(initializer(shape, dtype=dtype))


@pytest.mark.parametrize("shape", [(3, 3, 16, 32), (64, 96), (1, 1, 40, 8)])
def test_glorot_uniform_has_the_bounds_and_spread_of_keras(shape):
    ours = values(initializers.GlorotUniform(seed=1), shape)
    theirs = values(keras.initializers.GlorotUniform(seed=1), shape)
    assert ours.dtype == np.float32 and ours.shape == shape
    assert np.abs(ours).max() <= np.abs(theirs).max() * 1.02  # the same limit, √(6 / (fan_in + fan_out))
    np.testing.assert_allclose(ours.std(), theirs.std(), rtol=0.05)
    assert abs(ours.mean()) < 0.05 * ours.std()
    assert not np.allclose(ours, theirs)  # another generator, so other values


def test_random_normal_has_its_mean_and_standard_deviation():
    drawn = values(initializers.RandomNormal(mean=0.5, stddev=2.0, seed=0), (200_000,))
    np.testing.assert_allclose([drawn.mean(), drawn.std()], [0.5, 2.0], atol=0.02)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_zeros_and_ones_are_exact_in_the_requested_dtype(dtype):
    zeros, ones = initializers.Zeros()((2, 5), dtype=dtype), initializers.Ones()((2, 5), dtype=dtype)
    assert keras.backend.standardize_dtype(zeros.dtype) == dtype == keras.backend.standardize_dtype(ones.dtype)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.cast(zeros, "float32")), np.zeros((2, 5)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(keras.ops.cast(ones, "float32")), np.ones((2, 5)))


def test_seeds_behave_as_in_keras():
    # An integer seed repeats its values; instances without one differ, and set_random_seed reproduces them.
    np.testing.assert_array_equal(
        values(initializers.GlorotUniform(seed=3), (4, 4)), values(initializers.GlorotUniform(seed=3), (4, 4))
    )
    keras.utils.set_random_seed(0)
    first, second = values(initializers.GlorotUniform(), (4, 4)), values(initializers.GlorotUniform(), (4, 4))
    assert not np.allclose(first, second)
    keras.utils.set_random_seed(0)
    np.testing.assert_array_equal(values(initializers.GlorotUniform(), (4, 4)), first)
    # A SeedGenerator advances at every call.
    initializer = initializers.RandomNormal(seed=keras.random.SeedGenerator(5))
    assert not np.allclose(values(initializer, (4, 4)), values(initializer, (4, 4)))


@pytest.mark.parametrize("initializer", [
    initializers.GlorotUniform(seed=7), initializers.RandomNormal(mean=1.0, stddev=0.5, seed=2),
    initializers.Zeros(), initializers.Ones(),
])  # fmt: skip
def test_initializers_round_trip_through_their_configs(initializer):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(initializer))
    assert type(restored) is type(initializer)
    assert restored.get_config() == initializer.get_config()
    np.testing.assert_array_equal(values(restored, (3, 4)), values(initializer, (3, 4)))


def test_glorot_uniform_takes_its_fans_from_the_given_axes():
    # A (4, 2, 30) kernel read as 4 inputs to 2 × 30 outputs: limit √(6 / 64), not √(6 / (8 + 30)).
    drawn = values(initializers.GlorotUniform(seed=0, input_axes=(0,), output_axes=(1, 2)), (4, 2, 30))
    assert np.abs(drawn).max() <= (6 / 64) ** 0.5 < np.abs(drawn).max() * 1.05


def test_layer_initializers_give_every_layer_its_own_values():
    first, second = (keras.layers.Dense(6, **initializers.layer_initializers()) for _ in range(2))
    first.build((None, 5))
    second.build((None, 5))
    assert not np.allclose(first.kernel.numpy(), second.kernel.numpy())
    np.testing.assert_array_equal(first.bias.numpy(), np.zeros(6))
    zero = keras.layers.Dense(6, **initializers.layer_initializers(zero_kernel=True))
    zero.build((None, 5))
    np.testing.assert_array_equal(zero.kernel.numpy(), np.zeros((5, 6)))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="counts JAX's lowerings to XLA")
def test_building_and_compiling_a_model_lowers_no_program_per_variable_shape():
    import jax

    lowerings = []

    def listener(event, duration, **kwargs):
        # Lowering happens before JAX's caches are consulted, so a cache hit is counted too.
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowerings.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        # Shapes that no other test uses, so that nothing is found in this process' dispatch cache.
        unet = kd.models.UNet(image_shape=(12, 12, 3), widths=(8, 24), num_res_blocks=1, num_classes=7, norm_groups=8)
        model = kd.DiffusionModel(unet, seed=0)
        model.compile()
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    shapes = {tuple(variable.shape) for variable in model.variables}
    assert len(shapes) > 15
    assert len(lowerings) <= 3, f"{len(lowerings)} programs lowered for {len(shapes)} variable shapes"
