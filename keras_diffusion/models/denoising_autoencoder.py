"""`DenoisingAutoencoder`: the thesis' denoising autoencoder (section 2.1, eq. 4–5)."""

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers, ops

from keras_diffusion.models.base import OwnLossModel
from keras_diffusion.runtime.replicas import draw_for_global_batch, mean_over_global_batch

CORRUPTIONS = ("gaussian", "masking", "salt_and_pepper")
LIKELIHOODS = ("bernoulli", "gaussian")


@keras.saving.register_keras_serializable(package="keras_diffusion")
class DenoisingAutoencoder(OwnLossModel):
    """A small convolutional denoising autoencoder (Vincent et al. 2008; the thesis' 2.1).

    A corruption process C(x̃|x) maps a clean image x to a noisy x̃; the
    network (encoder → code → decoder) is trained to recover x from x̃ by
    regularised maximum likelihood, minimising the thesis' eq. (4)

        L(θ) = −E_{(x, x̃) ~ P(x) C(x̃|x)} [log P_θ(x | x̃)]      (eq. 5 gives the joint)

    with P_θ(x|x̃) a product of per-pixel Bernoulli distributions (the loss
    is the binary cross-entropy summed over pixels; x in [0, 1]) or of unit
    Gaussians (half the squared error). In `fit` every batch is corrupted
    afresh inside the compiled step, from the model's `SeedGenerator`, so
    the model never sees the same x̃ twice.

    Corruptions (ν = `noise_level`):
    - `"gaussian"`: x̃ = x + ν·ε, ε ~ N(0, I) (additive isotropic noise, not clipped);
    - `"masking"`: each pixel is set to 0 with probability ν;
    - `"salt_and_pepper"`: each pixel is set to 0 or 1 (equally likely) with probability ν.

    Unlike the diffusion models' denoisers it sees one noise level and no
    timestep; it is the idea that DDPM's ε_θ(x_t, t) generalises to a whole
    schedule of noise levels.

    `compile()` takes no `loss` (the loss is eq. 4); its default optimizer
    is Adam(1e-3). The corruption seed's state is saved with the model, so a
    restored model continues with the corruptions of the run it resumes.

    Args:
        image_shape: (H, W, C); H and W divisible by 2 ** len(filters).
        filters: channels of the stride-2 encoder convolutions (the decoder mirrors them).
        code_channels: channels of the code (the bottleneck), a 1×1 convolution.
        corruption: one of `"gaussian"`, `"masking"`, `"salt_and_pepper"`.
        noise_level: ν > 0 (σ for "gaussian", a probability < 1 otherwise).
        likelihood: `"bernoulli"` (cross-entropy) or `"gaussian"` (squared error).
        seed: seed of the corruption noise drawn in training.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:
    >>> dae = DenoisingAutoencoder(image_shape=(8, 8, 1), filters=(4, 8), code_channels=2)
    >>> clean = np.zeros((2, 8, 8, 1), "float32")
    >>> noisy = dae.corrupt(clean, seed=0)
    >>> tuple(dae.denoise(noisy).shape), tuple(dae.encode(noisy).shape)
    ((2, 8, 8, 1), (2, 2, 2, 2))
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        filters: Sequence[int] = (32, 64),
        code_channels: int = 8,
        corruption: str = "gaussian",
        noise_level: float = 0.5,
        likelihood: str = "bernoulli",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        image_shape = tuple(int(d) for d in image_shape)
        filters = tuple(int(f) for f in filters)
        _check_arguments(image_shape, filters, code_channels, corruption, noise_level, likelihood)
        self.image_shape = image_shape
        self.filters = filters
        self.code_channels = int(code_channels)
        self.corruption = corruption
        self.noise_level = float(noise_level)
        self.likelihood = likelihood
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="corruption_seed")

        inputs = keras.Input(shape=image_shape, name="image")
        x = inputs
        for index, width in enumerate(filters):
            x = layers.Conv2D(width, 3, strides=2, padding="same", activation="relu", name=f"down_{index}")(x)
        code = layers.Conv2D(self.code_channels, 1, name="code")(x)
        self.encoder = keras.Model(inputs, code, name="encoder")

        code_input = keras.Input(shape=code.shape[1:], name="code")
        x = code_input
        for index, width in enumerate(reversed(filters)):
            x = layers.Conv2DTranspose(width, 3, strides=2, padding="same", activation="relu", name=f"up_{index}")(x)
        logits = layers.Conv2D(image_shape[-1], 3, padding="same", name="logits")(x)
        self.decoder = keras.Model(code_input, logits, name="decoder")
        self.built = True

    def corrupt(self, images, seed=None):
        """Draws x̃ ~ C(x̃|x).

        Args:
            images: clean images (B, H, W, C) in [0, 1] (floats) or uint8.
            seed: int or `keras.random.SeedGenerator`.

        Returns:
            The corrupted images, float32, same shape.
        """
        x = _to_unit_float(images)
        if not isinstance(seed, keras.random.SeedGenerator):
            seed = keras.random.SeedGenerator(seed)  # an int seed would give every draw the same numbers
        image_shape = tuple(ops.shape(x)[1:])

        def draw(distribution):
            # Drawn for the global batch, so data-parallel replicas corrupt as one device would.
            return draw_for_global_batch(lambda n: distribution((n,) + image_shape, seed=seed), ops.shape(x)[0])

        if self.corruption == "gaussian":
            return x + self.noise_level * draw(keras.random.normal)
        hit = draw(keras.random.uniform) < self.noise_level
        if self.corruption == "masking":
            return ops.where(hit, 0.0, x)
        salt = ops.cast(draw(keras.random.uniform) < 0.5, "float32")
        return ops.where(hit, salt, x)

    def encode(self, images):
        """The code of (noisy or clean) images: (B, H / 2^k, W / 2^k, code_channels)."""
        return self.encoder(_to_unit_float(images), training=False)

    def denoise(self, noisy_images):
        """E[x | x̃] under the model: the reconstruction, float32 in [0, 1] for "bernoulli"."""
        return self._reconstruct(_to_unit_float(noisy_images), training=False)

    def _reconstruct(self, x, training=False):
        logits = ops.cast(self.decoder(self.encoder(x, training=training), training=training), "float32")
        return ops.sigmoid(logits) if self.likelihood == "bernoulli" else logits

    def call(self, images, training=None):
        """Reconstructs images; in training from a fresh corruption C(x̃|x) of them."""
        x = _to_unit_float(images)
        if training:
            x = self.corrupt(x, seed=self.seed_generator)
        return self._reconstruct(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """−log P_θ(x | x̃) per image (eq. 4), averaged over the (global) batch."""
        target = _to_unit_float(x)
        axes = tuple(range(1, len(target.shape)))
        if self.likelihood == "bernoulli":
            per_image = ops.sum(ops.binary_crossentropy(target, y_pred), axis=axes)
        else:
            per_image = 0.5 * ops.sum(ops.square(target - y_pred), axis=axes)
        if sample_weight is not None:
            per_image = per_image * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        return mean_over_global_batch(per_image)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit` on clean images alone; the corruption happens inside the step."""
        if y is not None:
            raise ValueError("Fit a DenoisingAutoencoder on clean images alone (y=None); it corrupts them itself.")
        if hasattr(x, "shape") and tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"Expected images of shape (batch, {', '.join(map(str, self.image_shape))}); received {tuple(x.shape)}.")
        return super().fit(x, None, *args, **kwargs)

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": self.image_shape,
            "filters": self.filters,
            "code_channels": self.code_channels,
            "corruption": self.corruption,
            "noise_level": self.noise_level,
            "likelihood": self.likelihood,
            "seed": self.seed,
        }


def _to_unit_float(images):
    images = ops.convert_to_tensor(images)
    if keras.backend.standardize_dtype(images.dtype) == "uint8":
        return ops.cast(images, "float32") / 255.0
    return ops.cast(images, "float32")


def _check_arguments(image_shape, filters, code_channels, corruption, noise_level, likelihood):
    if len(image_shape) != 3:
        raise ValueError(f"`image_shape` must be (height, width, channels); received {image_shape}.")
    if not filters or min(filters) < 1 or code_channels < 1:
        raise ValueError(f"`filters` must be positive ints and code_channels >= 1; received {filters}, {code_channels}.")
    factor = 2 ** len(filters)
    if image_shape[0] % factor or image_shape[1] % factor:
        raise ValueError(f"Height and width {image_shape[:2]} must be divisible by 2 ** len(filters) = {factor}.")
    if corruption not in CORRUPTIONS:
        raise ValueError(f"Unknown corruption {corruption!r}; use one of {CORRUPTIONS}.")
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {likelihood!r}; use one of {LIKELIHOODS}.")
    if not np.isfinite(noise_level) or noise_level <= 0 or (corruption != "gaussian" and noise_level >= 1):
        raise ValueError(
            f"`noise_level` must be > 0 (and < 1, a probability, for {corruption!r}); received {noise_level!r}."
        )
