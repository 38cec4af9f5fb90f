"""Sampling a trained `DiffusionModel`: the compiled step that binds the network to a sampler, and the batch loop.

A step is compiled once per (sampler settings, conditional?, guided?, clip?)
and cached on the model; the network's weights are its arguments, so the EMA
or the raw weights run through the same program. In a multi-process run every
process samples its rows of each batch and the rows are gathered at the end.
"""

import keras
import numpy as np
from keras import ops

from keras_diffusion.models.checks import accepts_argument, check_generation, generation_labels
from keras_diffusion.predictions import classifier_free_guidance, network_input, to_x0_and_epsilon
from keras_diffusion.runtime import distributed
from keras_diffusion.runtime.compilation import compile_function
from keras_diffusion.samplers import Sampler, Sampling


def generate(model, num_images: int, settings: Sampling, labels=None, seed=None, verbose=False, callback=None) -> np.ndarray:
    """`DiffusionModel.generate` with its settings in one object: samples in the diffusion space, then decodes.

    Returns:
        float32 NumPy array (num_images, H, W, C) in [0, 1].
    """
    sampler = settings.sampler_object()
    steps = sampler.default_steps(model.schedule) if settings.steps is None else settings.steps
    check_generation(model, num_images, sampler, settings.guidance_scale, steps)
    labels = generation_labels(model.num_classes, labels, num_images, seed)
    processes = distributed.process_count()
    batch_size = min(settings.batch_size or 256, num_images)
    batch_size = -(-batch_size // processes) * processes  # each process samples an equal share of a batch
    clip = model.default_clip_denoised if settings.clip_denoised is None else bool(settings.clip_denoised)
    compiled_step = cached_step_function(model, sampler, labels is not None, settings.guidance_scale != 0.0, clip)
    averaged = settings.use_ema and model.weight_averages.sets
    trainable = averaged[0] if averaged else model.denoiser.trainable_variables
    weights = [
        [distributed.local_value(ops.convert_to_tensor(v.value)) for v in variables]
        for variables in (trainable, model.denoiser.non_trainable_variables)
    ]
    generator = keras.random.SeedGenerator(seed)
    guidance = ops.convert_to_tensor(np.float32(settings.guidance_scale))
    progress = keras.utils.Progbar(steps * -(-num_images // batch_size)) if verbose else None
    outputs = []
    for start in range(0, num_images, batch_size):
        batch_labels = None if labels is None else np.resize(labels[start : start + batch_size], batch_size)

        def on_step(index, x, start=start):
            if progress is not None:
                progress.add(1)
            if callback is not None:
                callback(index, ops.convert_to_numpy(x)[: num_images - start])

        x = sample_batch(model, compiled_step, sampler, steps, weights, batch_size, batch_labels, guidance, generator, on_step)
        outputs.append(distributed.gather_rows(ops.convert_to_numpy(x))[: num_images - start])
    return model.decode_samples(np.concatenate(outputs, axis=0).astype("float32"))


def sample_batch(model, compiled_step, sampler, steps, weights, batch_size, labels, guidance, generator, on_step):
    """One batch through the sampler's loop; this process's rows of it in a multi-process run."""
    processes = distributed.process_count()
    rows = distributed.local_rows(batch_size)
    shape = (batch_size,) + model.sample_shape

    def draw(count=None):
        """Noise for the whole batch, as one process would draw it; this process's rows of it."""
        if count == 0:
            return None
        noise = model.noise.sample(shape if count is None else (count,) + shape, generator)
        if processes == 1:
            return noise  # no slice (a copy on JAX) in the sampling loop of a single process
        noise = distributed.local_value(noise)
        return noise[rows] if count is None else noise[:, rows]

    if labels is not None:
        labels = ops.convert_to_tensor(labels[rows].astype("int32"))
    trainable, non_trainable = weights

    def step_function(x, state, row, noise):
        return compiled_step(trainable, non_trainable, x, state, row, noise, labels, guidance)

    return sampler.run(step_function, draw(), model.schedule, steps, draw, on_step)


def cached_step_function(model, sampler: Sampler, conditional: bool, guided: bool, clip_denoised: bool):
    """The compiled step for these settings, made on first use and kept on the model."""
    key = (sampler.cache_key(), conditional, guided, clip_denoised)
    if key not in model._step_functions:
        model._step_functions[key] = compile_function(make_step_function(model, sampler, guided, clip_denoised))
    return model._step_functions[key]


def make_step_function(model, sampler: Sampler, guided: bool, clip_denoised: bool):
    """A pure function of one sampler step, compiled once per (sampler, labels?, guided?, clip?)."""
    denoiser, prediction, null_class, sigma_data = model.denoiser, model.prediction, model.null_class, model.sigma_data
    # stateless_call hands keyword arguments straight to call(); not every denoiser takes `training`.
    call_kwargs = {"training": False} if accepts_argument(denoiser.call, "training") else {}

    def step(trainable, non_trainable, x, state, row, noise, labels, guidance_scale):
        def denoise(x, t, alpha_bar):
            """(x̂_0, ε̂) at level (t, ᾱ): the network, guidance and the target conversion."""
            batch_size = ops.shape(x)[0]
            t_batch = ops.full((batch_size,), t)
            signal, sigma = ops.sqrt(alpha_bar), ops.sqrt(1.0 - alpha_bar)
            x_in = network_input(prediction, x, signal, sigma, sigma_data)
            if labels is None:
                inputs = [x_in, t_batch]
            elif guided:
                # One network call on [x; x] with [labels; null] gives ε(x, c) and ε(x, ∅).
                null = ops.full((batch_size,), null_class, dtype="int32")
                inputs = [ops.concatenate([x_in, x_in]), ops.concatenate([t_batch, t_batch]), ops.concatenate([labels, null])]
            else:
                inputs = [x_in, t_batch, labels]
            output, _ = denoiser.stateless_call(trainable, non_trainable, inputs, **call_kwargs)
            if guided and labels is not None:
                conditional, unconditional = output[:batch_size], output[batch_size:]
                output = classifier_free_guidance(conditional, unconditional, guidance_scale)
            x0, eps = to_x0_and_epsilon(prediction, ops.cast(output, x.dtype), x, signal, sigma, sigma_data)
            if clip_denoised:
                x0 = ops.clip(x0, -1.0, 1.0)
                eps = (x - signal * x0) / sigma
            return x0, eps

        return sampler.step(denoise, x, state, sampler.named(row), noise)

    return step
