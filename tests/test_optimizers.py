"""`kd.optimizers.Adam`: Keras' Adam updates, exactly, from a smaller traced graph."""

import keras
import numpy as np
import pytest

import keras_diffusion as kd

SHAPES = [(3, 3, 2, 4), (4,), (5, 7), ()]


def variables(seed=0):
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=shape).astype("float32")) for shape in SHAPES]


def gradients(step):
    rng = np.random.default_rng(100 + step)
    return [keras.ops.convert_to_tensor(rng.normal(size=shape).astype("float32")) for shape in SHAPES]


def trained(optimizer, steps=5):
    weights = variables()
    for step in range(steps):
        optimizer.apply(gradients(step), weights)
    return [keras.ops.convert_to_numpy(v) for v in weights], optimizer


@pytest.mark.parametrize(
    "kwargs",
    [dict(learning_rate=0.05), dict(learning_rate=kd.learning_rates.warmup_cosine(0.05, 6), beta_2=0.99),
     dict(learning_rate=0.05, amsgrad=True), dict(learning_rate=0.05, clipnorm=0.5, epsilon=1e-3)],  # fmt: skip
    ids=["constant", "schedule", "amsgrad", "clipnorm"],
)
def test_updates_and_optimizer_state_equal_keras_adam(kwargs):
    ours, ours_optimizer = trained(kd.optimizers.Adam(**kwargs))
    theirs, theirs_optimizer = trained(keras.optimizers.Adam(**kwargs))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(ours, [v.numpy() for v in variables()])), "nothing moved"
    for a, b in zip(ours_optimizer.variables, theirs_optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-8)


def traced_operations(optimizer, weights):
    """Operations in one traced `apply` (TensorFlow graph operations, or JAX jaxpr equations)."""
    grads = [keras.ops.ones(v.shape) for v in weights]
    optimizer.build(weights)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return len(tf.function(lambda g: optimizer.apply(g, weights)).get_concrete_function(grads).graph.get_operations())
    if keras.backend.backend() == "jax":
        import jax

        def apply(optimizer_values, weight_values, grads):
            return optimizer.stateless_apply(optimizer_values, grads, weight_values)

        values = [v.value for v in optimizer.variables], [v.value for v in weights]
        return len(jax.make_jaxpr(apply)(*values, grads).jaxpr.eqns)
    pytest.skip("operations are counted on TensorFlow and JAX")


def operations_per_variable(make_optimizer):
    """The traced operations that one more variable adds (what grows with the network).

    TensorFlow: 21 for ours (16 of them the update itself, the rest its inputs) against Keras' 41; JAX: 12 against 21.
    """
    few, many = ([keras.Variable(np.ones((3, 2), "float32")) for _ in range(n)] for n in (4, 12))
    return (traced_operations(make_optimizer(), many) - traced_operations(make_optimizer(), few)) / 8


def test_traces_at_most_60_percent_of_keras_adams_operations_per_variable():
    ours = operations_per_variable(lambda: kd.optimizers.Adam(1e-3))
    theirs = operations_per_variable(lambda: keras.optimizers.Adam(1e-3))
    assert ours <= 0.6 * theirs, (ours, theirs)


def test_is_the_default_of_compile_and_round_trips_through_its_config():
    model = kd.DiffusionModel(kd.models.UNet(image_shape=(8, 8, 1), widths=(8,), num_res_blocks=1, norm_groups=4))
    model.compile()
    assert isinstance(model.optimizer, kd.optimizers.Adam)
    optimizer = kd.optimizers.Adam(learning_rate=kd.learning_rates.warmup_cosine(2e-3, 100), beta_2=0.99)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is kd.optimizers.Adam
    assert restored.get_config() == optimizer.get_config()
