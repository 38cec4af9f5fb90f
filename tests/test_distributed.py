"""Data-parallel training on 2 CPU devices equals training on one device: loss, weights, EMA and samples.

For DiffusionModel (whose U-Net has dropout), and for ARDM, AutoencoderKL and DenoisingAutoencoder (one
step each): their random draws and loss averages must be those of the global batch.

The backend's own distribution is used (`keras.distribution.DataParallel` on
JAX, `tf.distribute.MirroredStrategy` on TensorFlow). The device count must be
set before the backend starts, so tests/distributed_step.py runs in a new process.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_step.py")
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def differences():
    """The JSON report of tests/distributed_step.py on the backend under test (it inherits KERAS_BACKEND)."""
    result = subprocess.run([sys.executable, SCRIPT], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_run_had_two_devices(differences):
    assert differences["devices"] == 2, differences


def test_the_unet_draws_dropout_masks(differences):
    # Replicas share one seed state: only masks drawn for the global batch match one device.
    assert differences["unet_dropout"] > 0, differences


def test_the_loss_equals_the_single_device_loss(differences):
    assert differences["loss"] <= TOLERANCE, differences


def test_the_updated_weights_equal_the_single_device_weights(differences):
    # The comparison means something only if training moved the weights far more than the tolerance.
    assert differences["weights_moved"] > 100 * TOLERANCE, differences
    assert differences["weights"] <= TOLERANCE, differences


def test_the_ema_weights_equal_the_single_device_ema(differences):
    assert differences["ema"] <= TOLERANCE, differences


def test_generate_under_the_distribution_gives_the_single_device_images(differences):
    assert differences["generated_finite"], differences
    assert differences["generated"] <= TOLERANCE, differences


def test_callbacks_run_under_the_distribution(differences):
    assert differences["callback_grid_written"], differences


OTHER_MODELS = ["ardm", "autoencoder_kl", "denoising_autoencoder"]


@pytest.mark.parametrize("name", OTHER_MODELS)
def test_one_step_of_each_model_equals_the_single_device_step(differences, name):
    model = differences["models"][name]
    assert model["weights_moved"] > 100 * TOLERANCE, model
    assert model["loss"] <= TOLERANCE, model
    assert model["weights"] <= TOLERANCE, model
