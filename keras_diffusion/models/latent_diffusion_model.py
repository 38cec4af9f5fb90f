"""`LatentDiffusionModel`: a `DiffusionModel` that works in a frozen autoencoder's latent space."""

import keras
import numpy as np
from keras import ops

from keras_diffusion.models.checks import infer_image_shape
from keras_diffusion.models.diffusion_model import DiffusionModel
from keras_diffusion.runtime import keras_internals
from keras_diffusion.runtime.compilation import compile_function

#: Images encoded by `fit` to estimate the scale factor when none is given (LDM uses one batch).
DEFAULT_ADAPT_SAMPLES = 1024


@keras.saving.register_keras_serializable(package="keras_diffusion")
class LatentDiffusionModel(DiffusionModel):
    """Latent diffusion (LDM, Rombach et al. 2022; the thesis' section 3.2, eq. 18).

    The diffusion model of `DiffusionModel` — its ε-loss, EMA, guidance and
    every sampler, unchanged — runs on z = s·E(x), the scaled latents of a
    frozen autoencoder E/D, instead of on pixels:
    `L_LDM = E_{E(x), ε, t} ‖ε − ε_θ(z_t, t)‖²`. `generate` samples latents
    and returns D(z / s) as images in [0, 1]. The denoiser is smaller and
    cheaper because the latent grid is f² times smaller than the image.

    - The autoencoder is frozen (`trainable = False`): `fit` updates the
      denoiser only, and the optimizer holds no autoencoder variables.
    - Latents are the posterior *mean* of the encoder, not a sample: they are
      deterministic (the scale estimate and the training targets do not
      depend on a draw), and with LDM's small KL weight the posterior's
      standard deviation is tiny, so a sample would differ only by noise
      that the diffusion model would have to learn as data.
    - The scale s = 1 / std(E(x)) makes the latents unit-variance, as LDM
      does, so that the noise schedule (designed for data of unit scale)
      keeps its meaning. It is estimated by `adapt(images)` — called by the
      first `fit` on its data when `scale_factor=None` — and is part of the
      config, so a saved model restores it. Pass a number to fix it (e.g.
      `StableDiffusionVAE.scale_factor`, 0.18215).
    - x̂_0 is not clipped during sampling (`default_clip_denoised = False`):
      latents have no [-1, 1] range.

    Args:
        autoencoder: a model with `encode(images) -> latents`,
            `decode(latents) -> images in [0, 1]`, `image_shape` and
            `latent_shape`, e.g. `kd.models.AutoencoderKL` (trained first)
            or `kd.models.StableDiffusionVAE`.
        denoiser: the denoiser of the latents; its input shape must be the
            autoencoder's `latent_shape`.
        scale_factor: s, or None to estimate it from data (`adapt`).
        **kwargs: the arguments of `DiffusionModel` (`schedule`, `timesteps`,
            `prediction`, `ema_decay`, `class_dropout`, `num_classes`, `seed`, ...).

    Example:
    >>> autoencoder = keras_diffusion.models.AutoencoderKL(
    ...     image_shape=(8, 8, 1), downsampling_factor=2, latent_channels=2, widths=(8, 8), norm_groups=4)
    >>> unet = keras_diffusion.models.UNet(image_shape=(4, 4, 2), widths=(8,), num_res_blocks=1, norm_groups=4)
    >>> model = LatentDiffusionModel(autoencoder, unet, timesteps=100)
    >>> scale = model.adapt(np.random.default_rng(0).uniform(size=(16, 8, 8, 1)).astype("float32"))
    >>> bool(scale > 0)  # 1 / std of the latents
    True
    >>> model.generate(2, steps=3, seed=0).shape
    (2, 8, 8, 1)
    """

    default_clip_denoised = False

    def __init__(self, autoencoder: keras.layers.Layer, denoiser: keras.layers.Layer, scale_factor: float | None = None, **kwargs):
        _check_autoencoder(autoencoder)
        if scale_factor is not None and not (np.isfinite(scale_factor) and scale_factor > 0):
            raise ValueError(f"`scale_factor` must be a positive number or None (estimate it); received {scale_factor!r}.")
        latent_shape = tuple(int(d) for d in autoencoder.latent_shape)
        sample_shape = infer_image_shape(denoiser, kwargs.get("image_shape"))
        if sample_shape != latent_shape:  # checked before the base class builds the denoiser and its EMA
            raise ValueError(
                f"The denoiser works on {sample_shape} but the autoencoder's latents are {latent_shape}; "
                f"build the denoiser with image_shape={latent_shape}."
            )
        super().__init__(denoiser, **kwargs)
        self.autoencoder = autoencoder
        self.autoencoder.trainable = False
        self.image_shape = tuple(int(d) for d in autoencoder.image_shape)
        self.scale_factor = None if scale_factor is None else float(scale_factor)
        self._decode_function = None

    # ------------------------------------------------------------------ scaling

    def adapt(self, images, batch_size: int = 256) -> float:
        """Sets `scale_factor` to 1 / std of the latents of `images` (unit-variance latents).

        Args:
            images: (N, H, W, C) NumPy array in [0, 1] or uint8; a few
                hundred to a thousand images suffice.
            batch_size: images per encoder call.

        Returns:
            The new scale factor.
        """
        images = np.asarray(images)
        self._check_image_shape(images.shape)
        if len(images) < 2:
            raise ValueError(f"`adapt` needs at least 2 images to estimate a standard deviation; received {len(images)}.")
        latents = np.concatenate(
            [ops.convert_to_numpy(self.autoencoder.encode(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
        )
        std = float(np.std(latents.astype("float64")))
        if not (np.isfinite(std) and std > 0):
            raise ValueError(f"The latents of these images have standard deviation {std}; cannot scale them to unit variance.")
        self.scale_factor = 1.0 / std
        # A train step traced with the old factor holds it as a constant: trace again.
        keras_internals.retrace_steps(self)
        return self.scale_factor

    def fit(self, x=None, y=None, *args, **kwargs):
        """`DiffusionModel.fit`; estimates `scale_factor` from the first images first if it is None."""
        if self.scale_factor is None and x is not None:
            self.adapt(_first_images(x, DEFAULT_ADAPT_SAMPLES))
        return super().fit(x, y, *args, **kwargs)

    def _require_scale_factor(self):
        if self.scale_factor is None:
            raise ValueError(
                "The latent scale factor is not known yet: call `model.adapt(images)` (or `fit`, which does), "
                "or pass `scale_factor=` to the constructor."
            )

    # -------------------------------------------------------- the diffusion space

    def call(self, images, training=None):
        """Maps images in [0, 1] (or uint8) to scaled latents s·E(x) (the frozen encoder's mean)."""
        self._check_image_shape(images.shape)
        self._require_scale_factor()
        latents = self.autoencoder.encode(images)
        return ops.cast(ops.stop_gradient(latents), self.compute_dtype) * self.scale_factor

    def decode_samples(self, samples: np.ndarray) -> np.ndarray:
        """Maps sampled latents to float32 images in [0, 1]: D(z / s), in compiled batches."""
        self._require_scale_factor()
        if self._decode_function is None:
            self._decode_function = compile_function(self._stateless_decode)
        values = [ops.convert_to_tensor(v.value) for v in self.autoencoder.variables]
        batch_size = 256
        images = [
            ops.convert_to_numpy(self._decode_function(values, ops.convert_to_tensor(samples[i : i + batch_size] / self.scale_factor)))
            for i in range(0, len(samples), batch_size)
        ]
        return np.clip(np.concatenate(images, axis=0), 0.0, 1.0).astype("float32")

    def _stateless_decode(self, values, latents):
        # The autoencoder's variables are passed in, not captured: a compiled function must not read them.
        with keras.StatelessScope(state_mapping=list(zip(self.autoencoder.variables, values))):
            return self.autoencoder.decode(latents)

    def _check_image_shape(self, shape):
        if tuple(shape[1:]) != self.image_shape:
            raise ValueError(
                f"Expected images of shape (batch, {', '.join(map(str, self.image_shape))}) (the autoencoder's "
                f"image_shape); received {tuple(shape)}. Resize the data or use an autoencoder built for this shape."
            )

    # ------------------------------------------------------------ serialisation

    def get_config(self):
        return {
            **super().get_config(),
            "autoencoder": keras.saving.serialize_keras_object(self.autoencoder),
            "scale_factor": self.scale_factor,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["autoencoder"] = keras.saving.deserialize_keras_object(config["autoencoder"])
        return super().from_config(config)


def _check_autoencoder(autoencoder):
    missing = [name for name in ("encode", "decode", "image_shape", "latent_shape") if not hasattr(autoencoder, name)]
    if not isinstance(autoencoder, keras.layers.Layer) or missing:
        raise TypeError(
            "`autoencoder` must be a Keras model with encode(images), decode(latents), image_shape and "
            f"latent_shape, such as kd.models.AutoencoderKL; received {type(autoencoder).__name__}"
            + (f" (missing {', '.join(missing)})." if missing else ".")
        )


def _first_images(x, count: int) -> np.ndarray:
    """Up to `count` images from what `fit` accepts (array, batched tf.data.Dataset, PyDataset)."""
    if isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype") and not hasattr(x, "element_spec")):
        return np.asarray(x[:count])
    if hasattr(x, "element_spec") or isinstance(x, keras.utils.PyDataset):
        batches, total = [], 0
        iterator = iter(x) if hasattr(x, "element_spec") else (x[i] for i in range(len(x)))
        for batch in iterator:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            batches.append(np.asarray(images))
            total += len(batches[-1])
            if total >= count:
                break
        if batches:
            return np.concatenate(batches)[:count]
    raise ValueError(
        "Cannot take images from this data to estimate the latent scale factor; call "
        f"`model.adapt(images)` with about {count} images before `fit`, or pass `scale_factor=`."
    )

