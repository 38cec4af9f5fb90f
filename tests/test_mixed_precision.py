"""Mixed precision: `fit` and `generate` under mixed_bfloat16 and mixed_float16 stay finite, loss and EMA stay float32."""

import keras
import numpy as np
import pytest
from conftest import skip_tensorflow_bfloat16_under_an_isa_cap, tiny_unet

import keras_diffusion as kd

POLICIES = ["mixed_bfloat16", "mixed_float16"]
JAX_CPU_FLOAT16 = (
    "XLA:CPU has no float16 matmul with float32 accumulation ('The precision F16_F16_F32 is not "
    "supported by dot_general on CPU'); mixed_float16 on JAX runs on GPUs only"
)


@pytest.fixture(scope="module", params=POLICIES)
def trained(request):
    """(policy name, model, History) after 3 training steps under the policy."""
    if request.param == "mixed_float16" and keras.backend.backend() == "jax" and _cpu_only():
        pytest.skip(JAX_CPU_FLOAT16)
    if request.param == "mixed_bfloat16":
        skip_tensorflow_bfloat16_under_an_isa_cap()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(request.param)
    try:
        model = kd.DiffusionModel(tiny_unet(), timesteps=100, ema_decay=0.9, seed=0)
        model.compile(optimizer=kd.optimizers.Adam(1e-3))
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 1, (24, 8, 8, 1)).astype("float32")
        labels = rng.integers(0, 3, 24).astype("int32")
        history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
        yield request.param, model, history
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_the_model_computes_in_half_precision_and_keeps_float32_weights(trained):
    policy, model, _ = trained
    assert model.dtype_policy.name == policy
    assert model.denoiser.compute_dtype == policy.removeprefix("mixed_")
    assert {v.dtype for v in model.denoiser.trainable_variables} == {"float32"}


def test_the_loss_stays_finite(trained):
    _, _, history = trained
    assert len(history.history["loss"]) == 1 and all(np.isfinite(history.history["loss"]))


def test_the_ema_is_float32_finite_and_has_moved(trained):
    _, model, _ = trained
    assert model.weight_averages.sets[0]
    assert {v.dtype for v in model.weight_averages.sets[0]} == {"float32"}
    assert int(keras.ops.convert_to_numpy(model.weight_averages.step)) == 3  # one update per batch
    emas = [keras.ops.convert_to_numpy(v) for v in model.weight_averages.sets[0]]
    assert all(np.all(np.isfinite(e)) for e in emas)
    weights = [keras.ops.convert_to_numpy(v) for v in model.denoiser.trainable_variables]
    # The EMA lags the raw weights: equal only if training did not move them.
    assert max(float(np.max(np.abs(e - w))) for e, w in zip(emas, weights)) > 0


def test_the_optimizer_scales_the_loss_exactly_under_float16(trained):
    policy, model, _ = trained
    # compile() wraps the optimizer itself under mixed_float16, where small gradients would underflow.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")


def test_generate_is_finite_in_0_1(trained):
    _, model, _ = trained
    images = model.generate(2, steps=3, seed=0, labels=[0, 1])
    assert images.dtype == np.float32 and images.shape == (2, 8, 8, 1)
    assert np.all(np.isfinite(images)) and images.min() >= 0 and images.max() <= 1


def _cpu_only() -> bool:
    return all(device.lower().startswith("cpu") for device in keras.distribution.list_devices())

