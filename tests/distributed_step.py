"""Trains tiny models on one device and data-parallel on 2 CPU devices; prints the differences.

A DiffusionModel (two steps, EMA, sampling, callbacks; its U-Net has dropout,
whose masks must be those of the global batch too), and one step of each of
ARDM, AutoencoderKL and DenoisingAutoencoder, whose random draws (orders and
steps, posterior noise, corruption) must also be those of the global batch.

Run by tests/test_distributed.py in a fresh process, because the 2 CPU devices
must be configured before TensorFlow or JAX starts:

    KERAS_BACKEND=jax python tests/distributed_step.py
    KERAS_BACKEND=tensorflow python tests/distributed_step.py

The distribution is the backend's own: `keras.distribution.DataParallel` on
JAX, `tf.distribute.MirroredStrategy` over 2 logical CPUs on TensorFlow. Both
runs start from the same weights and seed and see the same global batches, so
their losses, weights and EMA weights must agree. The other models train with
SGD, whose step is proportional to the gradient (Adam's first step is not, so
it would hide a loss averaged per replica). The last line of the output is a
JSON object with the largest absolute differences.
"""

import contextlib
import functools
import json
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")
DEVICES = 2
if os.environ["KERAS_BACKEND"] == "jax":
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={DEVICES}"

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
import keras_diffusion as kd  # noqa: E402
from keras_diffusion.models.ardm import ARDM  # noqa: E402
from keras_diffusion.models.autoencoder import AutoencoderKL  # noqa: E402
from keras_diffusion.models.denoising_autoencoder import DenoisingAutoencoder  # noqa: E402
from keras_diffusion.training.nan_guard import NaNGuard  # noqa: E402

GLOBAL_BATCH = 8
UNET_DROPOUT = 0.3
STEPS = int(os.environ.get("KD_TEST_STEPS", "2"))
EXTRA = int(os.environ.get("KD_TEST_EXTRA", "0"))


def split_cpu_devices():
    """Makes the backend see DEVICES CPU devices (JAX: done by XLA_FLAGS above)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * DEVICES)


def device_count():
    """How many CPU devices the backend sees."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_logical_devices("CPU"))
    return len(keras.distribution.list_devices("cpu"))


@functools.cache
def data_parallel_distribution():
    """The backend's data-parallel distribution over all its CPU devices.

    One per process: a second MirroredStrategy reuses the first one's
    collective keys, and their gradient all-reduces then mix up.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(DEVICES)])
    return keras.distribution.DataParallel(devices=keras.distribution.list_devices("cpu")[:DEVICES])


def data_parallel_scope():
    """The data-parallel distribution as a context manager."""
    return data_parallel_distribution().scope()


def build_model(initial_weights=None):
    keras.utils.set_random_seed(0)
    unet = kd.models.UNet(
        image_shape=(8, 8, 1), widths=(8, 16), num_res_blocks=1, attention_resolutions=(4,),
        num_classes=3, norm_groups=4, dropout=UNET_DROPOUT,
    )  # fmt: skip
    model = kd.DiffusionModel(unet, timesteps=100, ema_decay=0.9, class_dropout=0.3, seed=3)
    if initial_weights is not None:
        model.set_weights(initial_weights)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    return model


def train(scope, initial_weights, images, labels, callbacks=()):
    with scope:
        model = build_model(initial_weights)
        history = model.fit(
            images, labels, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0, callbacks=list(callbacks)
        )
        generated = model.generate(2, steps=3, seed=0)
    weights = [keras.ops.convert_to_numpy(v) for v in model.denoiser.trainable_variables]
    ema = [keras.ops.convert_to_numpy(v) for v in model.weight_averages.sets[0]]
    return history.history["loss"][-1], weights, ema, generated


# Tiny models whose training draws random numbers per image, and their image shapes.
OTHER_MODELS = {
    "ardm": (lambda: ARDM(image_shape=(4, 4, 1), num_levels=2, filters=8, num_blocks=1, norm_groups=4, seed=5), (4, 4, 1)),
    "autoencoder_kl": (
        lambda: AutoencoderKL(image_shape=(8, 8, 1), downsampling_factor=2, latent_channels=2, widths=(4, 4),
                              norm_groups=2, mid_attention=False, kl_weight=0.1, seed=6),
        (8, 8, 1),
    ),
    "denoising_autoencoder": (
        lambda: DenoisingAutoencoder(image_shape=(8, 8, 1), filters=(4, 4), code_channels=2, noise_level=0.5, seed=7),
        (8, 8, 1),
    ),
}  # fmt: skip


def train_one_step(scope, build, initial_weights, images):
    """One SGD step on the global batch `images`: (loss, trainable weights)."""
    with scope:
        keras.utils.set_random_seed(0)
        model = build()
        model.set_weights(initial_weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        history = model.fit(images, batch_size=GLOBAL_BATCH, epochs=1, shuffle=False, verbose=0)
    return history.history["loss"][-1], [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def other_model_differences(rng):
    """For each of OTHER_MODELS: the single-device and data-parallel losses and weights after one step."""
    report = {}
    for name, (build, image_shape) in OTHER_MODELS.items():
        images = rng.uniform(0, 1, (GLOBAL_BATCH,) + image_shape).astype("float32")
        keras.utils.set_random_seed(0)
        initial = build()
        # Perturbed: ARDM's output layer starts at zero, which makes every order's loss exactly 1 bit/dim.
        initial.set_weights([w + 0.1 * rng.standard_normal(w.shape).astype(w.dtype) for w in initial.get_weights()])
        initial_weights = initial.get_weights()
        initial_trainable = [keras.ops.convert_to_numpy(v) for v in initial.trainable_variables]
        single = train_one_step(contextlib.nullcontext(), build, initial_weights, images)
        parallel = train_one_step(data_parallel_scope(), build, initial_weights, images)
        report[name] = {
            "loss_single": single[0],
            "loss_parallel": parallel[0],
            "loss": abs(single[0] - parallel[0]),
            "weights": max_difference(single[1], parallel[1]),
            "weights_moved": max_difference(single[1], initial_trainable),
        }
    return report


def max_difference(first, second):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(first, second))


def main():
    split_cpu_devices()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (GLOBAL_BATCH * STEPS + EXTRA, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 3, GLOBAL_BATCH * STEPS + EXTRA).astype("int32")
    initial_model = build_model()
    initial_weights = initial_model.get_weights()
    initial_trainable = [keras.ops.convert_to_numpy(v) for v in initial_model.denoiser.trainable_variables]

    single = train(contextlib.nullcontext(), initial_weights, images, labels)
    with tempfile.TemporaryDirectory() as directory:
        grids = kd.callbacks.ImageGridCallback(directory, columns=2, sampling=kd.samplers.Sampling(steps=2))
        parallel = train(data_parallel_scope(), initial_weights, images, labels, [grids, NaNGuard()])
        grid_written = os.path.isfile(os.path.join(directory, "epoch_0001.png"))
    report = {
        "backend": keras.backend.backend(),
        "devices": device_count(),
        "unet_dropout": initial_model.denoiser.dropout,
        "loss_single": single[0],
        "loss_parallel": parallel[0],
        "loss": abs(single[0] - parallel[0]),
        "weights": max_difference(single[1], parallel[1]),
        "weights_moved": max_difference(single[1], initial_trainable),
        "ema": max_difference(single[2], parallel[2]),
        "generated": float(np.max(np.abs(single[3] - parallel[3]))),
        "generated_finite": bool(np.all(np.isfinite(parallel[3]))),
        "callback_grid_written": grid_written,
        "models": other_model_differences(rng),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
