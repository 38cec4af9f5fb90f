"""Order-agnostic autoregressive diffusion (ARDM, Hoogeboom et al. 2021; the thesis' section 3.6).

The model learns every conditional p(x_k | x_σ(<t)) of every order σ with one
network: the pixels already generated are given through a mask. Training
draws one order σ and one step t per image and scores all the pixels not yet
generated at once (the thesis' eq. 28); sampling reveals the pixels one by one
(or a group at a time) in a random order. The maths, with the function that
implements each equation, is in docs/concepts/ardm.md.
"""

import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_diffusion.models.ardm_orders import likelihood_weight, quantize, random_ranks, revealed_mask
from keras_diffusion.models.base import OwnLossModel
from keras_diffusion.models.checks import (
    accepts_argument,
    ardm_shape_message,
    check_ardm_images,
    check_ardm_training_data,
    is_int,
)
from keras_diffusion.models.networks.ardm_network import ARDMNetwork
from keras_diffusion.runtime.compilation import compile_function
from keras_diffusion.runtime.replicas import draw_for_global_batch, mean_over_global_batch

INPUT_ENCODINGS = ("one_hot", "scaled")


# ------------------------------------------------------------------ network


@keras.saving.register_keras_serializable(package="keras_diffusion")
class ARDM(OwnLossModel):
    """An order-agnostic autoregressive diffusion model for discrete images (ARDM).

    Images are quantised to `num_levels` levels (2: binarised). The network
    sees `x ⊙ m` and the mask m of the pixels already generated, and the step
    t = Σm + 1; it returns `num_levels` logits for every pixel, read as
    p(x_k | x_σ(<t)) for the pixels k not yet generated.

    Training (`fit`) minimises the unbiased estimate of −log p(x) of the
    thesis' eq. 28: per image, an order σ and a step t uniform on 1..D
    (D = H·W·C), the mask of the t − 1 pixels earliest in σ, and the
    cross-entropy summed over the other D − t + 1 pixels, times
    D / (D − t + 1). The reported loss is this estimate in bits per
    dimension (divided by D·ln 2), so `fit`'s loss and `evaluate_nll` read
    in the same unit. σ and t come from a `SeedGenerator` owned by the model,
    so the step compiles once on every backend; their state is saved with
    the model. `compile()` takes no `loss`; its default optimizer is Adam(1e-3).

    Data: `fit` and `evaluate_nll` take images (N, H, W, C) as floats in
    [0, 1] or uint8 in [0, 255]; `generate` returns float32 in [0, 1] on the
    levels k / (num_levels − 1).

    Args:
        image_shape: (height, width, channels).
        num_levels: levels per value, 2..256 (2 = binarised).
        network: None for an `ARDMNetwork(filters, num_blocks, norm_groups)`,
            or any Keras model/layer called as `network([features, t])` with
            `features` (B, H, W, input_channels) and `t` (B,) float, returning
            logits (B, H, W, C·num_levels).
        input_encoding: `"one_hot"`: the one-hot levels times the mask
            (C·num_levels channels) and the mask (C); `"scaled"`: the values
            mapped to [-1, 1] times the mask (C) and the mask (C).
        filters: channels of the default network.
        num_blocks: residual blocks of the default network.
        norm_groups: GroupNormalization groups of the default network.
        seed: seed of the training orders and steps; None for a random one.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:
    >>> model = ARDM(image_shape=(4, 4, 1), num_levels=2, filters=8, num_blocks=1, norm_groups=4, seed=0)
    >>> model.generate(2, seed=0, pixels_per_step=4).shape
    (2, 4, 4, 1)
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        num_levels: int = 2,
        network: keras.layers.Layer | None = None,
        input_encoding: str = "one_hot",
        filters: int = 64,
        num_blocks: int = 4,
        norm_groups: int = 8,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        image_shape = tuple(image_shape)
        if len(image_shape) != 3 or not all(is_int(d) and d >= 1 for d in image_shape):
            raise ValueError(
                f"`image_shape` must be (height, width, channels) of positive ints; received {image_shape}."
            )
        if not is_int(num_levels) or not 2 <= num_levels <= 256:
            raise ValueError(f"`num_levels` must be an integer in 2..256 (2 = binarised); received {num_levels!r}.")
        if input_encoding not in INPUT_ENCODINGS:
            raise ValueError(f"`input_encoding` must be one of {INPUT_ENCODINGS}; received {input_encoding!r}.")
        if network is not None and not isinstance(network, keras.layers.Layer):
            raise TypeError(
                "`network` must be None or a Keras model/layer called as network([features, t]); "
                f"received {type(network).__name__}."
            )
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_levels = int(num_levels)
        self.input_encoding = input_encoding
        self.filters = filters
        self.num_blocks = num_blocks
        self.norm_groups = norm_groups
        self.seed = seed
        self.num_dims = int(np.prod(self.image_shape))
        channels = self.image_shape[-1]
        self.input_channels = channels * (self.num_levels + 1) if input_encoding == "one_hot" else 2 * channels
        if network is None:
            network = ARDMNetwork(
                self.image_shape, self.num_levels, self.input_channels, filters, num_blocks, norm_groups, name="network"
            )  # fmt: skip
        self.network = network
        self.seed_generator = keras.random.SeedGenerator(seed, name="training_seed")
        self._check_network_output()
        self._compiled = {}
        self.built = True

    def _check_network_output(self):
        # Symbolic: builds the network and checks its output without running it.
        features = keras.KerasTensor((1,) + self.image_shape[:2] + (self.input_channels,))
        output = self.network([features, keras.KerasTensor((1,))])
        expected = (1,) + self.image_shape[:2] + (self.image_shape[-1] * self.num_levels,)
        if tuple(output.shape) != expected:
            raise ValueError(
                f"The network must return logits of shape (batch, {', '.join(map(str, expected[1:]))}) "
                f"(channels × num_levels); it returned {tuple(output.shape)} for features of shape "
                f"{tuple(features.shape)}."
            )

    # ------------------------------------------------------------ the pieces

    def encode(self, levels, mask):
        """The network's input: `x ⊙ m` (one-hot or scaled to [-1, 1]) concatenated with m.

        Args:
            levels: int tensor (B, H, W, C) of levels.
            mask: bool tensor (B, H, W, C), True where the pixel is revealed.

        Returns:
            float32 tensor (B, H, W, input_channels).
        """
        mask = ops.cast(mask, "float32")
        if self.input_encoding == "one_hot":
            one_hot = ops.one_hot(levels, self.num_levels) * mask[..., None]
            batch, height, width, channels = ops.shape(levels)
            values = ops.reshape(one_hot, (batch, height, width, channels * self.num_levels))
        else:
            values = (ops.cast(levels, "float32") / (self.num_levels - 1) * 2.0 - 1.0) * mask
        return ops.concatenate([values, mask], axis=-1)

    def _log_probs(self, call_network, levels, mask, t):
        logits = call_network([self.encode(levels, mask), ops.cast(t, "float32")])
        batch, height, width, channels = ops.shape(levels)
        logits = ops.reshape(ops.cast(logits, "float32"), (batch, height, width, channels, self.num_levels))
        return ops.log_softmax(logits, axis=-1)

    def _conditional_nll(self, call_network, levels, ranks, revealed, group_size):
        revealed = ops.cast(revealed, "int32")
        mask = revealed_mask(ranks, revealed)
        scored = ops.logical_and(ops.logical_not(mask), revealed_mask(ranks, revealed + group_size))
        log_probs = self._log_probs(call_network, levels, mask, revealed + 1)
        log_likelihood = ops.sum(ops.one_hot(levels, self.num_levels) * log_probs, axis=-1)
        return -ops.sum(ops.where(scored, log_likelihood, 0.0), axis=(1, 2, 3))

    def conditional_nll(self, levels, ranks, revealed, group_size):
        """Σ −log p(x_k | x_σ(<t)) over the pixels k with rank in [revealed, revealed + group_size).

        With `revealed = t − 1` and `group_size = D` this is the sum inside
        eq. 28 (all of σ(≥t)); with `group_size = 1` it is the single
        autoregressive term −log p(x_σ(t) | x_σ(<t)). Uses the current weights
        (compiled once, like `evaluate_nll`).

        Args:
            levels: int tensor (B, H, W, C) of levels (see `quantize`).
            ranks: int tensor (B, H, W, C), each image a permutation of 0..D−1.
            revealed: int tensor (B,), t − 1 per image.
            group_size: int tensor (B,) or int.

        Returns:
            float32 tensor (B,), in nats.
        """
        levels = ops.convert_to_tensor(levels, dtype="int32")
        ranks = ops.convert_to_tensor(ranks, dtype="int32")
        revealed = ops.convert_to_tensor(revealed, dtype="int32")
        group_size = ops.broadcast_to(ops.convert_to_tensor(group_size, dtype="int32"), ops.shape(revealed))
        nll_function = self._compiled_function("nll", self._make_nll_function)
        return nll_function(*self._network_weights(), levels, ranks, revealed, group_size)

    def draw_orders_and_steps(self, batch_size: int, seed=None):
        """Draws an order σ (as ranks) and a step t uniform on 1..D per image.

        Args:
            batch_size: B.
            seed: a `SeedGenerator` or seed; default the model's own generator.

        Returns:
            `(ranks, t)`: int32 (B, H, W, C), each image a permutation of 0..D−1,
            and int32 (B,) in 1..D. In a replica of a `tf.distribute` step
            they are this replica's rows of the draws for the global batch,
            so every image gets the order and step that one device would give it.
        """
        seed = self.seed_generator if seed is None else seed
        uniform = draw_for_global_batch(lambda n: keras.random.uniform((n, self.num_dims), seed=seed), batch_size)
        ranks = ops.reshape(random_ranks(uniform), (batch_size,) + self.image_shape)
        t = draw_for_global_batch(
            lambda n: keras.random.randint((n,), 1, self.num_dims + 1, seed=seed, dtype="int32"), batch_size
        )  # fmt: skip
        return ranks, t

    def _nll_estimate(self, call_network, levels, ranks, t):
        """Eq. 28 for one (σ, t) per image: D/(D−t+1) Σ_{k∈σ(≥t)} −log p(x_k | x_σ(<t)), in nats."""
        terms = self._conditional_nll(call_network, levels, ranks, t - 1, ops.full_like(t, self.num_dims))
        return likelihood_weight(t, self.num_dims) * terms

    # ------------------------------------------------------------ training

    def call(self, images, training=None):
        """Quantises images (floats in [0, 1] or uint8) to int32 levels."""
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(ardm_shape_message(self.image_shape, images.shape))
        return quantize(images, self.num_levels)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The ARDM loss (eq. 28) for one batch, in bits per dimension.

        Args:
            x: the batch of images as given to `fit`.
            y: must be None (the model is unconditional).
            y_pred: the output of `call(x)`, the int32 levels.
            sample_weight: optional per-image weights.
            training: unused; the estimator is the same in `evaluate`.

        Returns:
            The scalar float32 loss: the mean over the batch of
            D/(D−t+1) Σ_{k∈σ(≥t)} −log p(x_k | x_σ(<t)) / (D ln 2).
        """
        if y is not None:
            raise ValueError("ARDM is unconditional; pass images only (e.g. `model.fit(images)`).")
        levels = y_pred
        ranks, t = self.draw_orders_and_steps(ops.shape(levels)[0])
        per_image = self._nll_estimate(self.network, levels, ranks, t) / (self.num_dims * math.log(2.0))
        if sample_weight is not None:
            per_image = per_image * ops.cast(ops.reshape(sample_weight, (-1,)), "float32")
        return mean_over_global_batch(per_image)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, after checking the images (shape, dtype, range, NaN) before tracing."""
        if y is not None:
            raise ValueError("ARDM is unconditional; call fit(images) without labels.")
        check_ardm_training_data(self, x)
        return super().fit(x, None, *args, **kwargs)

    # ------------------------------------------------------------ likelihood

    def evaluate_nll(
        self,
        images,
        num_draws: int = 1,
        exact: bool = False,
        batch_size: int = 256,
        seed: int | None = None,
    ) -> float:
        """The negative log-likelihood of `images` in bits per dimension.

        The default estimate averages, per image, `num_draws` draws of
        (σ, t) of eq. 28 (each an unbiased estimate of −log p(x) in nats, one
        network call per draw). With `exact=True` each draw runs the whole
        chain of one order σ, Σ_{t=1}^{D} −log p(x_σ(t) | x_σ(<t)) (D network
        calls): an exact −log p_σ(x), whose mean over σ is the same quantity.
        Bits per dimension = nats / (D · ln 2).

        Args:
            images: (N, H, W, C) floats in [0, 1] or uint8.
            num_draws: draws of (σ, t), or of σ with `exact=True`, per image; >= 1.
            exact: evaluate the whole chain of each order instead of one step.
            batch_size: images per network call.
            seed: makes the estimate reproducible; None for fresh randomness.

        Returns:
            The mean over the images, a Python float.

        Example:
        >>> model.evaluate_nll(test_images, num_draws=4, seed=0)  # doctest: +SKIP
        0.142
        """
        check_ardm_images(self, images, "images")
        if not is_int(num_draws) or num_draws < 1:
            raise ValueError(f"`num_draws` must be a positive integer; received {num_draws!r}.")
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer; received {batch_size!r}.")
        nll_function = self._compiled_function("nll", self._make_nll_function)
        weights = self._network_weights()
        generator = keras.random.SeedGenerator(seed)
        total = 0.0
        for start in range(0, len(images), batch_size):
            levels = quantize(images[start : start + batch_size], self.num_levels)
            count = int(levels.shape[0])
            for _ in range(num_draws):
                ranks, t = self.draw_orders_and_steps(count, seed=generator)
                if exact:
                    nats = 0.0
                    for revealed in range(self.num_dims):
                        revealed_batch = ops.full((count,), revealed, dtype="int32")
                        nats = nats + nll_function(*weights, levels, ranks, revealed_batch, ops.ones((count,), "int32"))
                else:
                    terms = nll_function(*weights, levels, ranks, t - 1, ops.full((count,), self.num_dims, "int32"))
                    nats = likelihood_weight(t, self.num_dims) * terms
                total += float(ops.convert_to_numpy(ops.sum(nats)))
        return total / (len(images) * num_draws * self.num_dims * math.log(2.0))

    def _make_nll_function(self):
        call_network = self._stateless_network()

        def nll(trainable, non_trainable, levels, ranks, revealed, group_size):
            return self._conditional_nll(call_network(trainable, non_trainable), levels, ranks, revealed, group_size)

        return nll

    # ------------------------------------------------------------ sampling

    def generate(
        self,
        num_images: int,
        seed: int | None = None,
        pixels_per_step: int = 1,
        temperature: float = 1.0,
        batch_size: int | None = None,
        return_order: bool = False,
        verbose: bool = False,
    ):
        """Samples images autoregressively in a random order per image.

        Each network call reveals the next `pixels_per_step` pixels of the
        image's order σ, all drawn from p(x_k | x_σ(<t)) given the pixels
        revealed so far (1: the exact ARDM sampler, D calls; more: fewer
        calls, the pixels of a group drawn independently). One compiled step
        is reused for every call; its randomness comes from
        `SeedGenerator(seed)`, so a seed reproduces the images.

        Args:
            num_images: how many images, >= 1.
            seed: makes the result reproducible; None for fresh randomness.
            pixels_per_step: pixels revealed per network call, 1..D.
            temperature: > 0; the logits are divided by it (1: the model's
                distribution, < 1: sharper).
            batch_size: images per network call (default min(num_images, 256)).
            return_order: also return, per pixel, the network call (0-based)
                that generated it.
            verbose: show a progress bar.

        Returns:
            float32 NumPy array (num_images, H, W, C) on the levels
            k / (num_levels − 1); with `return_order`, also an int32 array of
            the same shape.

        Example:
        >>> images = model.generate(16, seed=0, pixels_per_step=4)  # doctest: +SKIP
        """
        if not is_int(num_images) or num_images < 1:
            raise ValueError(f"`num_images` must be a positive integer; received {num_images!r}.")
        if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
            raise ValueError(f"`batch_size` must be a positive integer or None; received {batch_size!r}.")
        batch_size = min(batch_size or 256, num_images)
        steps = -(-self.num_dims // self._check_sampling_arguments(pixels_per_step, temperature))
        progress = keras.utils.Progbar(steps * -(-num_images // batch_size)) if verbose else None
        images, orders = [], []
        generator = keras.random.SeedGenerator(seed)
        for start in range(0, num_images, batch_size):
            for levels, ranks, _ in self.sampling_states(batch_size, generator, pixels_per_step, temperature):
                if progress is not None:
                    progress.add(1)
            count = num_images - start
            images.append(ops.convert_to_numpy(levels)[:count])
            orders.append(ops.convert_to_numpy(ranks)[:count] // pixels_per_step)
        images = (np.concatenate(images).astype("float32") / (self.num_levels - 1)).astype("float32")
        return (images, np.concatenate(orders).astype("int32")) if return_order else images

    def sampling_states(self, batch_size: int, seed=None, pixels_per_step: int = 1, temperature: float = 1.0):
        """The sampler one network call at a time: yields `(levels, ranks, revealed)` after each call.

        `levels` (B, H, W, C) int32 holds the pixels revealed so far (those
        with rank < revealed; the others are 0), `ranks` the order of each
        image (see `random_ranks`). `generate` runs this to the end.

        Args:
            batch_size: images sampled together.
            seed: a `SeedGenerator` or an int/None seed.
            pixels_per_step: as in `generate`.
            temperature: as in `generate`.

        Yields:
            `(levels, ranks, revealed)` with `revealed` a Python int, after
            every network call.
        """
        pixels_per_step = self._check_sampling_arguments(pixels_per_step, temperature)
        generator = seed if isinstance(seed, keras.random.SeedGenerator) else keras.random.SeedGenerator(seed)
        step_function = self._compiled_function("sample", self._make_sampling_step)
        weights = self._network_weights()
        group_tensor = ops.convert_to_tensor(np.int32(pixels_per_step))
        temperature_tensor = ops.convert_to_tensor(np.float32(temperature))
        ranks, _ = self.draw_orders_and_steps(batch_size, seed=generator)
        levels = ops.zeros((batch_size,) + self.image_shape, dtype="int32")
        for revealed in range(0, self.num_dims, pixels_per_step):
            uniform = keras.random.uniform(
                (batch_size,) + self.image_shape + (self.num_levels,), minval=1e-7, maxval=1.0 - 1e-7, seed=generator
            )  # fmt: skip
            revealed_tensor = ops.convert_to_tensor(np.int32(revealed))
            levels = step_function(*weights, levels, ranks, revealed_tensor, group_tensor, uniform, temperature_tensor)
            yield levels, ranks, min(revealed + pixels_per_step, self.num_dims)

    def _make_sampling_step(self):
        """A pure step: draws every pixel from the network's categorical, keeps the next group."""
        call_network = self._stateless_network()

        def step(trainable, non_trainable, levels, ranks, revealed, group_size, uniform, temperature):
            batch_size = ops.shape(levels)[0]
            revealed_batch = ops.full((batch_size,), revealed, dtype="int32")
            mask = revealed_mask(ranks, revealed_batch)
            log_probs = self._log_probs(call_network(trainable, non_trainable), levels, mask, revealed_batch + 1)
            gumbel = -ops.log(-ops.log(uniform))  # argmax(logits/τ + Gumbel) ~ softmax(logits/τ)
            sample = ops.cast(ops.argmax(log_probs / temperature + gumbel, axis=-1), "int32")
            group = ops.logical_and(ops.logical_not(mask), revealed_mask(ranks, revealed_batch + group_size))
            return ops.where(group, sample, levels)

        return step

    def _check_sampling_arguments(self, pixels_per_step, temperature) -> int:
        if not is_int(pixels_per_step) or not 1 <= pixels_per_step <= self.num_dims:
            raise ValueError(
                f"`pixels_per_step` must be an integer in 1..{self.num_dims} (the pixels of an image); "
                f"received {pixels_per_step!r}."
            )
        if not isinstance(temperature, (int, float, np.floating)) or not np.isfinite(temperature) or temperature <= 0:
            raise ValueError(f"`temperature` must be a finite number > 0; received {temperature!r}.")
        return int(pixels_per_step)

    # ------------------------------------------------------------ compiled helpers

    def _stateless_network(self):
        network = self.network
        # stateless_call hands keyword arguments straight to call(); not every network takes `training`.
        kwargs = {"training": False} if accepts_argument(network.call, "training") else {}

        def bind(trainable, non_trainable):
            return lambda inputs: network.stateless_call(trainable, non_trainable, inputs, **kwargs)[0]

        return bind

    def _network_weights(self):
        return (
            [ops.convert_to_tensor(v.value) for v in self.network.trainable_variables],
            [ops.convert_to_tensor(v.value) for v in self.network.non_trainable_variables],
        )

    def _compiled_function(self, key, make):
        if key not in self._compiled:
            self._compiled[key] = compile_function(make())
        return self._compiled[key]

    # ------------------------------------------------------------ serialisation

    def get_config(self):
        return {
            "name": self.name,
            "image_shape": self.image_shape,
            "num_levels": self.num_levels,
            "network": keras.saving.serialize_keras_object(self.network),
            "input_encoding": self.input_encoding,
            "filters": self.filters,
            "num_blocks": self.num_blocks,
            "norm_groups": self.norm_groups,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        return cls(**config)
