"""`DiffusionModel`: trains a denoiser with the diffusion loss (v, ε, x_0 or EDM targets) and samples from it."""

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_diffusion import ema as power_ema
from keras_diffusion import noise as noise_distributions
from keras_diffusion import predictions, samplers, schedules
from keras_diffusion import timestep_sampling as timestep_distributions
from keras_diffusion.models import generation
from keras_diffusion.models.base import OwnLossModel
from keras_diffusion.models.checks import check_labels_present, check_training_data, infer_image_shape
from keras_diffusion.runtime.replicas import draw_for_global_batch, mean_over_global_batch
from keras_diffusion.training.nan_guard import NaNGuard


@keras.saving.register_keras_serializable(package="keras_diffusion")
class DiffusionModel(OwnLossModel):
    """A denoising diffusion model (DDPM, Ho et al. 2020) around any denoiser network.

    Training (`fit`) minimises the simplified loss of DDPM eq. 14 (the
    thesis' eq. 16), `‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²` with t uniform on
    0..T-1, or the same regression on v (the default, Salimans & Ho 2022),
    x_0 or EDM's preconditioned output (`prediction`), with t drawn
    uniformly or as EDM does (`timestep_sampling`). The timestep,
    the noise and the class dropout are drawn from a `SeedGenerator` owned by
    the model, so the step compiles once and draws fresh numbers every step on
    every backend.

    Data convention (the one place it is defined): `fit` takes images in
    [0, 1] as floats, or uint8 in [0, 255]; the model maps them to [-1, 1]
    itself (`call`). `generate` returns float32 images in [0, 1].

    An exponential moving average (EMA) of the denoiser's trainable weights is
    kept in the model (saved with it) and used by `generate`. Its decay is
    `min(ema_decay, (1 + k) / (10 + k))` after k updates, so short runs are
    not dominated by the initial weights. With `ema_std` it is instead a
    power-function EMA (EDM2, `keras_diffusion.ema`) whose length is a fixed
    fraction σ_rel of the run; several σ_rel keep several EMAs, from whose
    snapshots (`callbacks.EMASnapshots`) an EMA of any length can be
    reconstructed after training. EMAs are folded in at the start of each
    training step, with the weights that the previous step produced.

    `compile()` takes no `loss` (the loss is the model's own); its default
    optimizer is Adam(2e-4), as in DDPM. Saved models keep the states of
    their seed generators, so a restored model draws the noise that the run
    it continues would have drawn.

    Args:
        denoiser: a Keras model/layer called as `denoiser([x_t, t])`, or
            `denoiser([x_t, t, labels])` when class-conditional, returning a
            tensor of x_t's shape; `t` is a float32 timestep per sample. Label
            `num_classes` means "no class" (classifier-free guidance).
        schedule: `"cosine"` (the default: Nichol & Dhariwal's ᾱ(t); on
            MNIST it reached a lower FID and a higher class accuracy at equal
            updates than DDPM's linear β, docs/lab_notes.md), `"linear"`
            (DDPM's and the thesis') or a `keras_diffusion.schedules.NoiseSchedule`.
        timesteps: T; default 1000, or the schedule's own T.
        prediction: the network's target, `"v"` (default), `"epsilon"` (DDPM's
            ε-loss, the thesis'), `"x0"` or `"edm"` (EDM's preconditioning
            with `sigma_data`: the network sees x_t scaled to unit variance
            and predicts F, `keras_diffusion.predictions`). v = √ᾱ ε − √(1−ᾱ) x_0
            trained a conditional MNIST model to a lower FID and a far higher
            class accuracy per update than ε (docs/lab_notes.md).
        ema_decay: EMA decay in [0, 1), or None to sample with the raw weights.
        ema_std: σ_rel of a power-function EMA (EDM2), e.g. 0.1, replacing
            the `ema_decay` one; or several, e.g. `(0.05, 0.10)`, to keep one
            EMA per value for post-hoc reconstruction (`generate` uses the
            first; `ema_weights(i)` reads the i-th). None: `ema_decay`.
        class_dropout: probability of replacing a label by the null class
            during training, which trains the unconditional model that
            guidance needs. Ignored for unconditional denoisers.
        num_classes: classes of a conditional denoiser; default: the
            denoiser's `num_classes` attribute, if any.
        image_shape: (H, W, C); default: the denoiser's `image_shape` or the
            shape of its first input. Needed to build an unbuilt denoiser.
        seed: seed of the training noise; None for a random one.
        noise: the noise distribution, `"gaussian"`, `"mixture_gaussian"` or a
            `keras_diffusion.noise` instance such as
            `MixtureGaussianNoise(p=0.3, phi=0.5)` (MG-DDM, the thesis' 3.5).
            Used for training and for the samplers' noise.
        min_snr_gamma: weight each image's loss by the min-SNR-γ rule
            (`predictions.min_snr_weight`, Hang et al. 2023); None for the
            unweighted simplified loss.
        timestep_sampling: the distribution of t in training: `"uniform"`
            (DDPM's, the default), `"log_normal"` (EDM's ln σ ~ N(−1.2, 1.2²))
            or a `keras_diffusion.timestep_sampling` instance such as
            `LogNormalTimesteps(mean=-1.0, std=1.4)`.
        sigma_data: σ_data of `prediction="edm"` (EDM: 0.5 for images in
            [-1, 1]); unused by the other targets.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:
    >>> unet = keras_diffusion.models.UNet(image_shape=(8, 8, 1), widths=(8, 16),
    ...                                    num_res_blocks=1, norm_groups=4)
    >>> model = DiffusionModel(unet, timesteps=100)
    >>> model.generate(2, steps=5, seed=0).shape
    (2, 8, 8, 1)
    """

    def __init__(
        self,
        denoiser: keras.layers.Layer,
        schedule: str | schedules.NoiseSchedule = "cosine",
        timesteps: int | None = None,
        prediction: str = "v",
        ema_decay: float | None = 0.999,
        class_dropout: float = 0.1,
        num_classes: int | None = None,
        image_shape: Sequence[int] | None = None,
        seed: int | None = None,
        noise: "str | noise_distributions.GaussianNoise" = "gaussian",
        min_snr_gamma: float | None = None,
        ema_std: float | Sequence[float] | None = None,
        timestep_sampling: "str | timestep_distributions.UniformTimesteps" = "uniform",
        sigma_data: float = predictions.DEFAULT_SIGMA_DATA,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(denoiser, keras.layers.Layer):
            raise TypeError(
                "`denoiser` must be a Keras model or layer called as denoiser([x_t, t]) or "
                f"denoiser([x_t, t, labels]); received {type(denoiser).__name__}."
            )
        if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must be in [0, 1) or None; received {ema_decay}.")
        if not 0.0 <= class_dropout < 1.0:
            raise ValueError(f"`class_dropout` must be in [0, 1); received {class_dropout}.")
        ema_stds = None if ema_std is None else tuple(float(v) for v in np.atleast_1d(ema_std))
        if ema_stds is not None and not ema_stds:
            raise ValueError("`ema_std` must be a number, a non-empty sequence of numbers, or None.")
        if min_snr_gamma is not None and not (np.isfinite(min_snr_gamma) and min_snr_gamma > 0):
            raise ValueError(f"`min_snr_gamma` must be a positive number or None; received {min_snr_gamma!r}.")
        if not (isinstance(sigma_data, (int, float, np.number)) and not isinstance(sigma_data, bool)
                and np.isfinite(sigma_data) and sigma_data > 0):  # fmt: skip
            raise ValueError(f"`sigma_data` must be a positive number; received {sigma_data!r}.")
        self.denoiser = denoiser
        self.noise = noise_distributions.get_noise(noise)
        self.min_snr_gamma = None if min_snr_gamma is None else float(min_snr_gamma)
        self.schedule = schedules.get_schedule(schedule, timesteps)
        self.timesteps = self.schedule.timesteps
        self.prediction = predictions.check_prediction(prediction)
        self.timestep_sampling = timestep_distributions.get_timestep_sampling(timestep_sampling)
        self.sigma_data = float(sigma_data)
        self.ema_decay = ema_decay
        self.ema_std = None if ema_stds is None else (ema_stds[0] if len(ema_stds) == 1 else ema_stds)
        self.class_dropout = float(class_dropout)
        self.num_classes = num_classes if num_classes is not None else getattr(denoiser, "num_classes", None)
        self.sample_shape = infer_image_shape(denoiser, image_shape)
        self.image_shape = self.sample_shape  # a latent model maps its images to sample_shape
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="training_seed")
        if not denoiser.built:
            denoiser(self._example_inputs(1))
        # The EMAs' variables are the model's own (saved with it): `ema_step`, then `ema_<i>` (and `ema<k>_<i>`).
        self.weight_averages = power_ema.WeightAverages(self, denoiser, None if ema_stds else ema_decay, ema_stds or ())
        self._step_functions = {}
        self.built = True

    #: The learning rate of the default Adam optimizer of `compile()` (DDPM's).
    default_learning_rate = 2e-4

    #: Whether `generate` clips x̂_0 to [-1, 1] when `clip_denoised=None` (pixels: yes; latents: no).
    default_clip_denoised = True

    @property
    def null_class(self) -> int | None:
        """The label that means "no class" (`num_classes`), or None if unconditional."""
        return self.num_classes

    # ------------------------------------------------------------------ training

    def call(self, images, training=None):
        """Maps images in [0, 1] (or uint8 in [0, 255]) to the model's [-1, 1] range."""
        self._check_image_shape(images.shape)
        if keras.backend.standardize_dtype(images.dtype) == "uint8":
            images = ops.cast(images, "float32") / 255.0
        return ops.cast(images, self.compute_dtype) * 2.0 - 1.0

    def fit(self, x=None, y=None, *args, nan_guard: bool = True, **kwargs):
        """`keras.Model.fit`, after checking the data against the model.

        `x` is images (N, H, W, C) in [0, 1] or uint8, a `tf.data.Dataset`
        or `keras.utils.PyDataset` of batches of images or (images, labels);
        `y` the labels when `x` is an array. Mismatches (image shape, labels
        for an unconditional model or none for a conditional one, value range
        of arrays) raise a ValueError here, before anything is traced: on JAX
        an error inside the compiled step would leave the model's variables
        unusable.

        A `keras_diffusion.callbacks.NaNGuard` is added unless the callbacks
        already hold one (or `keras.callbacks.TerminateOnNaN`): a NaN or inf
        loss stops training with a `NonFiniteLossError` naming the step and
        the likely cause. `nan_guard=False` leaves it out (it reads the loss
        after every batch, which costs JAX its asynchronous dispatch).
        """
        check_training_data(self, x, y)
        if nan_guard:
            callbacks = list(kwargs.get("callbacks") or [])
            if not any(isinstance(c, (NaNGuard, keras.callbacks.TerminateOnNaN)) for c in callbacks):
                kwargs["callbacks"] = callbacks + [NaNGuard()]
        return super().fit(x, y, *args, **kwargs)

    def _check_image_shape(self, shape):
        if tuple(shape[1:]) != self.image_shape:
            raise ValueError(
                f"Expected images of shape (batch, {', '.join(map(str, self.image_shape))}); received "
                f"{tuple(shape)}. Resize the data or build the denoiser for this shape."
            )

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The simplified diffusion loss for one batch (DDPM eq. 14).

        Args:
            x: the batch of images as given to `fit`.
            y: class labels of shape (B,) for a conditional denoiser, else None.
            y_pred: the output of `call(x)`, the images in [-1, 1].
            sample_weight: optional per-image weights.
            training: True in `fit`: updates the EMA and applies class dropout.

        Returns:
            The scalar float32 loss.
        """
        x0 = y_pred
        batch_size = ops.shape(x0)[0]
        labels = self._training_labels(y)
        # Drawn for the global batch, so data-parallel replicas see what one device would.
        t = draw_for_global_batch(lambda n: self.timestep_sampling.sample(n, self.schedule, self.seed_generator), batch_size)
        noise = draw_for_global_batch(
            lambda n: self.noise.sample((n,) + tuple(ops.shape(x0)[1:]), self.seed_generator, dtype=x0.dtype), batch_size
        )
        signal, sigma = self.schedule.signal_and_noise_scales(t, len(x0.shape), x0.dtype)
        x_t = signal * x0 + sigma * noise
        inputs = [predictions.network_input(self.prediction, x_t, signal, sigma, self.sigma_data), ops.cast(t, "float32")]
        if labels is not None:
            if training and self.class_dropout > 0:
                uniform = draw_for_global_batch(lambda n: keras.random.uniform((n,), seed=self.seed_generator), batch_size)
                labels = ops.where(uniform < self.class_dropout, self.null_class, labels)
            inputs.append(labels)
        if training:
            self.weight_averages.update()
        output = self.denoiser(inputs, training=training)
        target = predictions.training_target(self.prediction, x0, noise, signal, sigma, self.sigma_data)
        per_image = ops.mean(
            ops.square(ops.cast(target, "float32") - ops.cast(output, "float32")), axis=tuple(range(1, len(x0.shape)))
        )
        if self.min_snr_gamma is not None:
            alpha_bar = ops.take(ops.convert_to_tensor(self.schedule.alpha_bar, "float32"), t)
            snr = alpha_bar / (1.0 - alpha_bar)
            per_image = per_image * predictions.min_snr_weight(self.prediction, snr, self.min_snr_gamma, self.sigma_data)
        if sample_weight is not None:
            per_image = per_image * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        return mean_over_global_batch(per_image)

    def _training_labels(self, y):
        check_labels_present(self.num_classes, y is not None)
        return None if y is None else ops.reshape(ops.cast(y, "int32"), (-1,))

    @property
    def ema_stds(self) -> tuple[float, ...]:
        """σ_rel of each power-function EMA (empty for the `ema_decay` EMA or none)."""
        return () if self.ema_std is None else tuple(np.atleast_1d(self.ema_std).tolist())

    @property
    def ema_updates(self) -> int:
        """t of the EMAs' averaging profile: the updates behind the newest weights folded in (EMA step − 1)."""
        return self.weight_averages.updates

    def ema_weights(self, index: int = 0) -> list[np.ndarray]:
        """The weights of the `index`-th EMA as NumPy arrays (in `denoiser.trainable_variables` order).

        Args:
            index: which EMA (the order of `ema_std`).

        Returns:
            A list of arrays.
        """
        return self.weight_averages.values(index)

    def set_ema_weights(self, weights: Sequence[np.ndarray], index: int = 0) -> None:
        """Overwrites the `index`-th EMA, e.g. with a post-hoc reconstruction (`keras_diffusion.ema.reconstruct`).

        Args:
            weights: one array per trainable variable of the denoiser.
            index: which EMA; `generate` samples with EMA 0.

        Returns:
            None.

        Example:
        >>> snapshots = keras_diffusion.callbacks.read_ema_snapshots("runs/ema")  # doctest: +SKIP
        >>> model.set_ema_weights(keras_diffusion.ema.reconstruct(snapshots, target_std=0.08))  # doctest: +SKIP
        """
        self.weight_averages.assign(weights, index)

    # ---------------------------------------------------------------- sampling

    def generate(
        self,
        num_images: int,
        sampler: "str | samplers.Sampler" = samplers.RECOMMENDED,
        steps: int | None = None,
        labels=None,
        guidance_scale: float = 0.0,
        seed: int | None = None,
        batch_size: int | None = None,
        clip_denoised: bool | None = None,
        use_ema: bool = True,
        verbose: bool = False,
        callback=None,
    ) -> np.ndarray:
        """Samples images by running the reverse process from pure noise.

        Args:
            num_images: how many images, >= 1.
            sampler: a name from `keras_diffusion.samplers.available()` —
                `"dpmpp_2m_sde"` (the default: SDE-DPM-Solver++(2M), DDPM's
                fresh noise at every step with 2M's accuracy; the best FID
                per network evaluation we measured, docs/lab_notes.md),
                `"dpmpp_3m"` (DPM-Solver++ 3M, the most accurate solver of
                the sampling ODE at 20 evaluations), `"dpmpp_2m"`,
                `"ddim"` (DDIM eq. 12, η-controlled noise), `"ddpm"`
                (ancestral), `"euler"`, `"heun"` (Karras et al. 2022), `"sde"`
                (reverse VP-SDE, Euler–Maruyama), `"pc"` (predictor–corrector),
                `"ode"` (probability-flow ODE, adaptive SciPy solver) — or a
                `samplers.Sampler` instance, which is how a sampler's settings
                are given: `samplers.get_sampler("ddim", eta=1.0)`,
                `samplers.get_sampler("pc", snr=0.1, spacing="trailing")`.
            steps: noise levels to visit, 1..T; None for the sampler's own
                default (`Sampler.default_steps`): 20 for the DPM-Solvers, 50
                for DDIM and Euler, 25 for Heun, and T (the whole chain) for
                `"ddpm"`, `"sde"` and `"pc"`. Second-order and corrector
                samplers evaluate the network more than once per level
                (`Sampler.function_evaluations`).
            labels: for a conditional model, one int or a sequence of
                `num_images` ints in [0, num_classes] (`num_classes` is the
                null class, i.e. unconditional). None draws classes uniformly
                from `seed`. Must be None for an unconditional model.
            guidance_scale: classifier-free guidance weight w >= 0; 0 samples
                the conditional model alone.
            seed: makes the result reproducible; None for fresh randomness.
            batch_size: images per network call (at most num_images; default 256).
            clip_denoised: clip x̂_0 to [-1, 1] at every step (as DDPM does);
                None uses the model's `default_clip_denoised`.
            use_ema: sample with the EMA weights (if the model keeps them).
            verbose: show a progress bar over the steps.
            callback: optional `callback(step_index, x)` called after every
                step of every batch with the current x (NumPy, the model's
                diffusion space, e.g. [-1, 1] pixels), for denoising-sequence
                figures; in a multi-process run, this process's rows of x.

        In a multi-process run (`keras_diffusion.runtime.distributed`) every process
        calls `generate` with the same arguments; each samples its share of
        every batch (`batch_size` is rounded up to a multiple of the number of
        processes) and every process returns all the images.

        Returns:
            float32 NumPy array (num_images, H, W, C) with values in [0, 1].

        Example:
        >>> images = model.generate(16, sampler="ddim", steps=50, seed=0)  # doctest: +SKIP
        """
        settings = samplers.Sampling(sampler, steps, guidance_scale, batch_size, clip_denoised, use_ema)
        return generation.generate(self, num_images, settings, labels, seed, verbose, callback)

    def decode_samples(self, samples: np.ndarray) -> np.ndarray:
        """Maps samples of the diffusion space ([-1, 1] pixels here) to float32 images in [0, 1]."""
        return np.clip((samples + 1.0) / 2.0, 0.0, 1.0).astype("float32")

    def _example_inputs(self, batch_size):
        inputs = [ops.zeros((batch_size,) + self.sample_shape), ops.zeros((batch_size,))]
        if self.num_classes is not None:
            inputs.append(ops.zeros((batch_size,), dtype="int32"))
        return inputs

    # ------------------------------------------------------------ serialisation

    def get_config(self):
        return {
            "name": self.name,
            "denoiser": keras.saving.serialize_keras_object(self.denoiser),
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "timesteps": self.timesteps,
            "prediction": self.prediction,
            "ema_decay": self.ema_decay,
            "class_dropout": self.class_dropout,
            "num_classes": self.num_classes,
            "image_shape": self.sample_shape,
            "seed": self.seed,
            "noise": keras.saving.serialize_keras_object(self.noise),
            "min_snr_gamma": self.min_snr_gamma,
            "ema_std": list(self.ema_stds) if len(self.ema_stds) > 1 else self.ema_std,
            "timestep_sampling": keras.saving.serialize_keras_object(self.timestep_sampling),
            "sigma_data": self.sigma_data,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["denoiser"] = keras.saving.deserialize_keras_object(config["denoiser"])
        config["schedule"] = schedules.get_schedule(config["schedule"])
        if "noise" in config:
            config["noise"] = noise_distributions.get_noise(config["noise"])
        if "timestep_sampling" in config:
            config["timestep_sampling"] = timestep_distributions.get_timestep_sampling(config["timestep_sampling"])
        return cls(**config)

