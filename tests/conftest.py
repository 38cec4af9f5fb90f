"""Shared fixtures. Tests use the offline data in ../shared/data when it exists."""

import os
import pathlib
import tempfile

# Set before the backend starts. The tests compile hundreds of tiny programs and run each for
# milliseconds, so XLA's LLVM optimisation (-O2) costs more than it saves (three JAX test files: -23 %
# in time), and JAX's persistent cache shares identical programs across tests, pytest-xdist
# workers and the tests' subprocesses. Neither changes what a program computes.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=0".strip()
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "keras_diffusion_tests_jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_diffusion as kd  # noqa: E402

# Grappler (TensorFlow's graph rewriting) is off on a CPU: keras_diffusion's import turns it off
# (`kd.runtime.skip_tensorflow_graph_rewrites`), so the tests run what users run.

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
if SHARED_DATA.is_dir():
    os.environ.setdefault(kd.datasets.DATA_DIR_ENV, str(SHARED_DATA))


def tiny_unet(num_classes=3, image_shape=(8, 8, 1)):
    """A U-Net small enough to compile in seconds, with its zero-initialised kernels randomised.

    At initialisation every residual branch and the output are exactly zero (DDPM's zero_module),
    so without this the output would ignore t and the label.
    """
    unet = kd.models.UNet(
        image_shape=image_shape, widths=(8, 16), num_res_blocks=1, attention_resolutions=(4,),
        num_classes=num_classes, norm_groups=4,
    )  # fmt: skip
    randomise_output(unet)
    return unet


def randomise_output(unet, seed=0):
    rng = np.random.default_rng(seed)
    for variable in unet.trainable_variables:
        if "kernel" in variable.path and not np.any(keras.ops.convert_to_numpy(variable)):
            variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))


def pixel_features(images):
    """A stand-in for Inception (tested in test_inception.py): the pixel values as features."""
    return np.asarray(images, dtype="float32").reshape(len(images), -1)


def strided_pixel_features(images):
    """A cheap stand-in for Inception: every 4th pixel, quantised (49 of a digit's, 192 of a CIFAR image's)."""
    pixels = kd.metrics.as_uint8_images(images)[:, ::4, ::4]
    return pixels.reshape(len(pixels), -1).astype("float32") / 255.0


@pytest.fixture(scope="session")
def mnist_subset():
    """512 MNIST test digits in [0, 1] and their labels."""
    try:
        return kd.datasets.load("mnist", split="test", limit=512)
    except FileNotFoundError as error:
        pytest.skip(f"MNIST not available offline: {error}")


@pytest.fixture(scope="session")
def trained_mnist():
    """A small conditional MNIST model trained for three short epochs, and its History.

    Built once per session: compiling the step costs more than the tests that use it.
    """
    images, labels = kd.datasets.load("mnist", split="test", limit=512)
    unet = kd.models.UNet(
        image_shape=(28, 28, 1), widths=(16, 32, 32), num_res_blocks=1, attention_resolutions=(7,),
        num_classes=10, norm_groups=8,
    )  # fmt: skip
    # DDPM's linear β: the loss-decrease threshold of test_diffusion_model was set on it.
    model = kd.DiffusionModel(unet, schedule="linear", class_dropout=0.2, seed=1)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    history = model.fit(images, labels, batch_size=64, epochs=3, verbose=0)
    return model, history


@pytest.fixture(scope="session")
def tiny_conditional():
    """An untrained 8x8 conditional model (3 classes) with a non-zero output, for sampling tests."""
    return kd.DiffusionModel(tiny_unet(), timesteps=100, seed=0)


def skip_tensorflow_bfloat16_under_an_isa_cap() -> None:
    """Skips a TensorFlow bfloat16 test when oneDNN is capped below AVX-512 (`ONEDNN_MAX_CPU_ISA`).

    TensorFlow picks oneDNN's bfloat16 kernels from the CPU's own flags (avx512_bf16, amx); a cap
    below AVX-512, how our AVX2 machine is emulated on a newer one, leaves them without an
    implementation and TensorFlow aborts. A real AVX2 CPU takes TensorFlow's Eigen path instead.
    """
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if keras.backend.backend() == "tensorflow" and isa and not isa.startswith(("AVX512", "AVX10", "ALL", "DEFAULT")):
        pytest.skip(f"ONEDNN_MAX_CPU_ISA={isa}: TensorFlow's bfloat16 kernels abort under the cap (emulation only)")


def value_and_gradients(function, *args):
    """function(*args) and its gradients with respect to every arg (float32 numpy in, numpy out)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, grads = jax.value_and_grad(lambda *a: function(*a), argnums=tuple(range(len(args))))(*args)
    elif backend == "tensorflow":
        import tensorflow as tf

        tensors = [tf.convert_to_tensor(a) for a in args]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            value = function(*tensors)
        grads = tape.gradient(value, tensors)
    else:
        import torch

        tensors = [torch.tensor(a, requires_grad=True) for a in args]
        value = function(*tensors)
        grads = torch.autograd.grad(value, tensors)
    return keras.ops.convert_to_numpy(value), [keras.ops.convert_to_numpy(g) for g in grads]
