"""What the commands of `keras-diffusion` share: argument types, sampling options, the model loader, errors."""

import argparse
import math
import os

import keras
import numpy as np

import keras_diffusion as kd

PROGRAM = "keras-diffusion"
DEBUG_ENV = "KERAS_DIFFUSION_DEBUG"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

BACKEND_NOTE = (
    "The Keras backend is chosen before the program starts, with the environment variable\n"
    "KERAS_BACKEND (tensorflow or jax): `KERAS_BACKEND=jax keras-diffusion train ...`.\n"
    "A model saved on one backend loads, samples and is evaluated on the other."
)


class CommandLineError(Exception):
    """A problem with the user's input, reported as one line and exit status 1."""


def available_samplers() -> list[str]:
    """The sampler names `DiffusionModel.generate` accepts, read from `keras_diffusion.samplers`.

    Returns:
        Sorted names, e.g. `["ddim", "ddpm"]`.

    Example:
    >>> "ddim" in available_samplers()
    True
    """
    return kd.samplers.available()


# ----------------------------------------------------------------- argument types


def number(kind: type, minimum: float, what: str):
    """An argparse type: `kind` (int or float) parsed from the text, finite and >= `minimum`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


positive_int = number(int, 1, "a positive integer")
non_negative_int = number(int, 0, "an integer >= 0")
non_negative_float = number(float, 0.0, "a finite number >= 0")
positive_float = number(float, math.ulp(0.0), "a number > 0")


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def widths(text: str) -> tuple[int, ...]:
    values = int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return tuple(values)


def image_size(text: str) -> tuple[int, int]:
    values = int_list(text.replace("x", ","))
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH (or one side), got {text!r}")
    return tuple(values)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each default once and keeps the hand-made line breaks of descriptions and epilogs.

    A help text that already says its default ("default: ...", "(default 256)") gets no second one, and
    options without a value (`None`, flags that are off) get none.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default is None or action.default is False:
            return text
        if action.default == argparse.SUPPRESS:
            return text
        return super()._get_help_string(action)


def add_sampling_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--sampler", choices=available_samplers(), default=kd.samplers.RECOMMENDED, help=f"sampler of {what}"
    )
    parser.add_argument(
        "--steps", type=positive_int, default=None,
        help=f"sampler steps of {what} (default: the sampler's own, e.g. 20 for dpmpp_2m_sde, T for ddpm)",
    )  # fmt: skip
    parser.add_argument(
        "--eta", type=non_negative_float, default=None,
        help="eta of ddim (0 deterministic, 1 DDPM-like noise) or dpmpp_2m_sde (the share of the reverse SDE's "
        "noise, in (0, 1]); only for samplers that take it",
    )  # fmt: skip
    parser.add_argument(
        "--guidance-scale", type=non_negative_float, default=0.0,
        help="classifier-free guidance weight w (conditional models; 0: no guidance)",
    )  # fmt: skip

def make_feature_extractor(batch_size: int):
    """The FID Inception network (the tests substitute a cheap stand-in here, `common.make_feature_extractor`)."""
    return kd.metrics.default_feature_extractor(batch_size)


def sampling_from_args(args, batch_size: int | None = None, use_ema: bool = True) -> kd.samplers.Sampling:
    """The sampler (with its --eta), steps and guidance as one `Sampling`, for generate and the callbacks."""
    sampler = kd.samplers.get_sampler(args.sampler, **({} if args.eta is None else {"eta": args.eta}))
    return kd.samplers.Sampling(
        sampler, steps=args.steps, guidance_scale=args.guidance_scale, batch_size=batch_size, use_ema=use_ema
    )

def load_diffusion_model(path: str) -> kd.DiffusionModel:
    """Loads a `.keras` file, or a model shipped with the package by name, and checks that it holds a `DiffusionModel`.

    Args:
        path: the file, or a name of `kd.models.available_pretrained()` ("mnist").

    Returns:
        The model.

    Example:
    >>> model = load_diffusion_model("runs/mnist/model.keras")  # doctest: +SKIP
    """
    if not os.path.isfile(path) and path in kd.models.available_pretrained():
        return kd.models.load_pretrained(path)
    if not os.path.isfile(path):
        raise CommandLineError(
            f"Model file {path!r} does not exist (shipped models: {', '.join(kd.models.available_pretrained())})."
        )
    if not path.endswith(".keras"):
        raise CommandLineError(f"Model file {path!r} is not a .keras file (as written by `train` or model.save).")
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 - a corrupt or foreign file: say so in one line
        raise CommandLineError(f"Could not load {path!r}: {type(error).__name__}: {error}") from error
    if not isinstance(model, kd.DiffusionModel):
        raise CommandLineError(f"{path!r} holds a {type(model).__name__}, not a keras_diffusion DiffusionModel.")
    return model


def expand_labels(model: kd.DiffusionModel, labels: list[int] | None, num: int) -> np.ndarray | None:
    """One label per image: a single class for all, or each of k classes num/k times in a row."""
    if labels is None:
        return None
    if model.num_classes is None:
        raise CommandLineError("--labels were given but the model is unconditional; leave them out.")
    bad = [label for label in labels if not 0 <= label <= model.num_classes]
    if bad:
        raise CommandLineError(
            f"--labels must lie in 0..{model.num_classes - 1} for this {model.num_classes}-class model "
            f"({model.num_classes} = no class); got {', '.join(map(str, bad))}."
        )
    if num % len(labels):
        raise CommandLineError(f"--num ({num}) must be a multiple of the number of --labels ({len(labels)}).")
    return np.repeat(np.asarray(labels, dtype="int32"), num // len(labels))


def check_guidance(model: kd.DiffusionModel, guidance_scale: float) -> None:
    if guidance_scale and model.num_classes is None:
        raise CommandLineError("--guidance-scale needs a class-conditional model; this one is unconditional.")


def check_steps(model: kd.DiffusionModel, args) -> None:
    """Fills in the sampler's default `--steps` for this model, or checks the one given."""
    if args.steps is None:
        args.steps = kd.samplers.get_sampler(args.sampler).default_steps(model.schedule)
    if args.steps > model.timesteps:
        raise CommandLineError(f"--steps ({args.steps}) cannot exceed the model's timesteps ({model.timesteps}).")
