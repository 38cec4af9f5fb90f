"""The checks of what a user hands to the models, in one place: training data, image shapes, labels, counts.

Each raises a ValueError (or TypeError) that names the argument and the fix,
before anything is traced or written.
"""

import inspect

import keras
import numpy as np

from keras_diffusion.noise import GaussianNoise
from keras_diffusion.schedules import noise_levels


def is_int(value) -> bool:
    """Whether `value` is an integer for a count or size argument: Python or NumPy ints, not bools.

    Example:
    >>> is_int(3), is_int(np.int64(3)), is_int(True), is_int(3.0)
    (True, True, False, False)
    """
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def accepts_argument(function, name: str) -> bool:
    """Whether `function` takes a keyword `name` (or `**kwargs`), e.g. a user network's `training`.

    Example:
    >>> accepts_argument(lambda x, training=False: x, "training"), accepts_argument(lambda x: x, "training")
    (True, False)
    """
    parameters = inspect.signature(function).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def infer_image_shape(denoiser, image_shape) -> tuple[int, ...]:
    """(H, W, C) from `image_shape`, else the denoiser's `image_shape` attribute or first input."""
    if image_shape is None:
        image_shape = getattr(denoiser, "image_shape", None)
    if image_shape is None and getattr(denoiser, "inputs", None):
        image_shape = denoiser.inputs[0].shape[1:]
    if image_shape is None or None in tuple(image_shape):
        raise ValueError(
            "Cannot tell the image shape from the denoiser; pass image_shape=(height, width, channels)."
        )
    return tuple(int(d) for d in image_shape)



def check_training_data(model, x, y) -> None:
    """Checks what can be checked cheaply of `fit`'s data before anything is traced (the shape, the labels, the range).

    On JAX an error inside the compiled step would leave the model's variables unusable, so it is caught here.
    """
    if x is None:
        return
    images, labels = x, y
    if hasattr(x, "element_spec"):  # tf.data.Dataset: shapes without iterating
        images, labels = (x.element_spec + (None,))[:2] if isinstance(x.element_spec, tuple) else (x.element_spec, None)
        if len(images.shape) == len(model.image_shape):
            raise ValueError("The tf.data.Dataset yields single images; batch it with `dataset.batch(batch_size)`.")
    elif isinstance(x, keras.utils.PyDataset):
        if len(x) == 0:
            raise ValueError("The PyDataset is empty (len() == 0).")
        first = x[0]
        images, labels = (tuple(first) + (None,))[:2] if isinstance(first, (tuple, list)) else (first, None)
    elif not hasattr(x, "shape"):
        return  # a generator: checked when the step is traced
    model._check_image_shape(tuple(images.shape))
    check_labels_present(model.num_classes, labels is not None)
    if isinstance(images, np.ndarray):
        check_image_values(images)
        if images.shape[0] == 0:
            raise ValueError("The training images are empty (0 examples).")
    if isinstance(labels, np.ndarray) and model.num_classes is not None and labels.size:
        if labels.min() < 0 or labels.max() >= model.num_classes:
            raise ValueError(
                f"Labels must lie in [0, {model.num_classes - 1}] for num_classes={model.num_classes}; "
                f"received values from {labels.min()} to {labels.max()}."
            )




def check_image_values(images: np.ndarray) -> None:
    """Training images must be uint8, or floats in [0, 1]; the message names the conversion that fixes them."""
    if images.dtype == np.uint8 or images.size == 0:
        return
    if not np.issubdtype(images.dtype, np.floating):
        if np.issubdtype(images.dtype, np.integer) and images.min() >= 0 and images.max() <= 255:
            raise ValueError(
                f"Images are {images.dtype} with values in [0, 255]; pass them as uint8 "
                "(`images.astype('uint8')`) or as floats in [0, 1] (`images / 255`)."
            )
        raise ValueError(f"Images must be uint8 or float; received dtype {images.dtype}.")
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("The training images contain NaN or inf.")
    if high > 1.0:
        raise ValueError(
            f"Float images must lie in [0, 1]; these reach {high:g}, which looks like the [0, 255] range. "
            "Divide by 255, or pass the uint8 array as it is."
        )
    if low < 0.0:
        raise ValueError(
            f"Float images must lie in [0, 1]; these go down to {low:g}, which looks like [-1, 1] data. "
            "Map it with (x + 1) / 2; the model scales to [-1, 1] itself."
        )




def check_labels_present(num_classes: int | None, has_labels: bool) -> None:
    """Labels must come with a class-conditional denoiser and only with one."""
    if num_classes is None and has_labels:
        raise ValueError(
            "The data has labels but the denoiser is unconditional. Pass images only "
            "(e.g. `model.fit(images)` or `ds.map(lambda x, y: x)`), or build the denoiser "
            "with `num_classes` to train a class-conditional model."
        )
    if num_classes is not None and not has_labels:
        raise ValueError(
            f"The denoiser is class-conditional (num_classes={num_classes}) but the data has "
            "no labels. Pass (images, labels) to `fit`, or use an unconditional denoiser (num_classes=None)."
        )



def generation_labels(num_classes: int | None, labels, num_images: int, seed) -> np.ndarray | None:
    """The labels of `generate` as `num_images` ints (drawn from `seed` when None), or None when unconditional."""
    if num_classes is None:
        if labels is not None:
            raise ValueError(
                "`labels` were given but the denoiser is unconditional; pass labels=None "
                "or train a class-conditional model (UNet(num_classes=...))."
            )
        return None
    if labels is None:
        return np.random.default_rng(seed).integers(0, num_classes, num_images)
    labels = np.asarray(labels)
    if labels.ndim == 0:
        labels = np.full((num_images,), labels)
    if labels.shape != (num_images,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`labels` must be one int or {num_images} ints (one per image); received shape "
            f"{labels.shape} and dtype {labels.dtype}."
        )
    if labels.min() < 0 or labels.max() > num_classes:
        raise ValueError(
            f"`labels` must lie in [0, {num_classes}] ({num_classes} = no class); "
            f"received values from {labels.min()} to {labels.max()}."
        )
    return labels



def check_generation(model, num_images, sampler, guidance_scale: float, steps: int) -> None:
    """What `generate` needs of the model beyond the `Sampling` settings' own checks."""
    if not is_int(num_images) or num_images < 1:
        raise ValueError(f"`num_images` must be a positive integer; received {num_images!r}.")
    if guidance_scale != 0 and model.num_classes is None:
        raise ValueError(
            "`guidance_scale` needs a class-conditional denoiser (built with num_classes); "
            "this model is unconditional, so leave guidance_scale=0."
        )
    if sampler.gaussian_only and type(model.noise) is not GaussianNoise:
        raise ValueError(
            f"The {sampler.name!r} sampler uses the score of Gaussian noise; this model was trained with "
            f"{model.noise!r}. Use 'ddpm' or 'ddim' for it."
        )
    noise_levels(model.schedule, steps, "leading")  # steps within 1..T


def ardm_shape_message(image_shape, shape):
    hint = " Add the channel axis with images[..., None]." if len(shape) == 3 and image_shape[-1] == 1 else ""
    return (
        f"Expected images of shape (batch, {', '.join(map(str, image_shape))}); received {tuple(shape)}.{hint}"
    )


def check_ardm_images(model, images, name: str) -> None:
    """Checks an array of images (shape, dtype, range, NaN) before anything is traced."""
    if not hasattr(images, "shape") or not hasattr(images, "dtype"):
        raise TypeError(f"`{name}` must be an array of shape (N, H, W, C); received {type(images).__name__}.")
    if tuple(images.shape[1:]) != model.image_shape or len(images.shape) != 4:
        raise ValueError(ardm_shape_message(model.image_shape, images.shape))
    if images.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (0 images).")
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(
            f"Images must be floats in [0, 1] or uint8 in [0, 255]; received dtype {images.dtype}. "
            "Cast integer levels k to float with k / (num_levels - 1)."
        )
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError(f"`{name}` contain NaN or inf.")
    if high > 1.0 or low < 0.0:
        raise ValueError(
            f"Float images must lie in [0, 1]; these range over [{low:g}, {high:g}]. "
            "Divide [0, 255] data by 255 (or pass it as uint8), map [-1, 1] data with (x + 1) / 2."
        )


def check_ardm_training_data(model, x) -> None:
    """`ARDM.fit`'s data: unconditional batches of images of the model's shape."""
    if x is None:
        return
    if hasattr(x, "element_spec"):  # tf.data.Dataset
        spec = x.element_spec
        if isinstance(spec, tuple):
            raise ValueError(
                "ARDM is unconditional; the dataset must yield images only (e.g. `ds.map(lambda x, y: x)`)."
            )
        if len(spec.shape) == len(model.image_shape):
            raise ValueError("The tf.data.Dataset yields single images; batch it with `dataset.batch(batch_size)`.")
        if tuple(spec.shape[1:]) != model.image_shape:
            raise ValueError(ardm_shape_message(model.image_shape, spec.shape))
    elif hasattr(x, "shape"):
        check_ardm_images(model, x, "x")
