"""A tiny KL autoencoder trained on MNIST digits, built once per test process.

Shared by test_autoencoders.py and test_latent_diffusion.py through a cache
rather than a fixture: a session fixture imported into two modules would be
built twice. Compiling the training step dominates its cost.
"""

import functools

import keras
import numpy as np
import pytest

import keras_diffusion as kd
from keras_diffusion.models.autoencoder import AutoencoderKL

NUM_IMAGES = 256


@functools.lru_cache(maxsize=None)
def _train():
    images, _ = kd.datasets.load("mnist", split="test", limit=NUM_IMAGES)
    autoencoder = AutoencoderKL(
        image_shape=(28, 28, 1), downsampling_factor=4, latent_channels=2, widths=(8, 8, 8), norm_groups=4,
        mid_attention=False, kl_weight=1e-4, seed=0,
    )  # fmt: skip
    psnr_before = autoencoder.reconstruction_psnr(images)
    autoencoder.compile(optimizer=kd.optimizers.Adam(3e-3))
    history = autoencoder.fit(images, batch_size=32, epochs=3, shuffle=False, verbose=0)
    return autoencoder, images, psnr_before, autoencoder.reconstruction_psnr(images), history


def trained_autoencoder():
    """(autoencoder, its 256 training digits, PSNR before training, PSNR after, History)."""
    try:
        return _train()
    except FileNotFoundError as error:
        pytest.skip(f"MNIST not available offline: {error}")


def latent_denoiser(latent_shape, width=16):
    """A two-convolution denoiser with a timestep embedding: compiles in a fraction of a U-Net's time."""
    x_input = keras.Input(shape=latent_shape, name="x_t")
    t_input = keras.Input(shape=(), name="t")
    embedding = keras.layers.Dense(width, activation="silu")(kd.models.SinusoidalEmbedding(16)(t_input))
    h = keras.layers.Conv2D(width, 3, padding="same")(x_input)
    h = keras.layers.Activation("silu")(h + keras.layers.Reshape((1, 1, width))(embedding))
    h = keras.layers.Conv2D(width, 3, padding="same", activation="silu")(h)
    output = keras.layers.Conv2D(latent_shape[-1], 3, padding="same")(h)
    return keras.Model([x_input, t_input], output, name="latent_denoiser")


def as_numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor))
