"""The `keras-diffusion` command line: `train`, `sample` and `evaluate`.

Installed as the console script `keras-diffusion` (also `python -m keras_diffusion`).
Every command prints what it does, shows progress bars on long work, writes its
files atomically and exits with 0 on success, 1 with a one-line message when an
input is wrong (a missing file, labels out of range, ...) and 2 on a usage
error (an unknown option or a malformed value). Set `KERAS_DIFFUSION_DEBUG=1`
to see the full traceback instead of the one-line message.

Nothing in the library imports this module; it only uses the public API.

Example:
    keras-diffusion train mnist --preset tiny --epochs 3 --out runs/mnist
    keras-diffusion sample runs/mnist/model.keras --num 80 --labels 0,1,2,3,4,5,6,7,8,9 --guidance-scale 2
    keras-diffusion evaluate --model runs/mnist/model.keras --dataset mnist --num 2048
"""

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence

import keras
import numpy as np

import keras_diffusion as kd
from keras_diffusion.io import save_model_atomically, save_npz_atomically, write_bytes_atomically
from keras_diffusion.metrics.fid import MIN_RECOMMENDED_SAMPLES

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
    available = getattr(kd.samplers, "available", None)
    if callable(available):
        return sorted(available())
    return sorted(kd.samplers.SAMPLERS)


# ----------------------------------------------------------------- argument types


def _number(kind: type, minimum: float, what: str):
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


_positive_int = _number(int, 1, "a positive integer")
_non_negative_int = _number(int, 0, "an integer >= 0")
_non_negative_float = _number(float, 0.0, "a finite number >= 0")
_positive_float = _number(float, math.ulp(0.0), "a number > 0")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _widths(text: str) -> tuple[int, ...]:
    values = _int_list(text)
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return tuple(values)


def _image_size(text: str) -> tuple[int, int]:
    values = _int_list(text.replace("x", ","))
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected HEIGHT,WIDTH (or one side), got {text!r}")
    return tuple(values)


# ----------------------------------------------------------------------- parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the hand-made line breaks of descriptions and epilogs."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keras-diffusion` with its three sub-commands.

    Returns:
        An `argparse.ArgumentParser`.

    Example:
    >>> build_parser().parse_args(["sample", "model.keras", "--num", "4"]).num
    4
    """
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Train diffusion models, sample images from them and measure FID/KID.",
        epilog=BACKEND_NOTE + "\n\nRun `keras-diffusion COMMAND --help` for the options of a command.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {kd.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_parser(commands)
    _add_sample_parser(commands)
    _add_evaluate_parser(commands)
    return parser


def _add_sampling_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--sampler", choices=available_samplers(), default=kd.samplers.RECOMMENDED, help=f"sampler of {what}"
    )
    parser.add_argument(
        "--steps", type=_positive_int, default=None,
        help=f"sampler steps of {what} (default: the sampler's own, e.g. 20 for dpmpp_2m_sde, T for ddpm)",
    )  # fmt: skip
    parser.add_argument(
        "--eta", type=_non_negative_float, default=None,
        help="DDIM's eta (0 deterministic, 1 DDPM-like noise); only for samplers that take it",
    )  # fmt: skip
    parser.add_argument(
        "--guidance-scale", type=_non_negative_float, default=0.0,
        help="classifier-free guidance weight w (conditional models; 0: no guidance)",
    )  # fmt: skip


def _add_train_parser(commands) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model on a dataset or an image folder",
        description=(
            "Train a DiffusionModel (U-Net denoiser, simplified epsilon loss, EMA of the weights).\n\n"
            "Writes to --out:\n"
            "  grids/epoch_NNNN.png        generated rows over real rows, every --grid-every epochs\n"
            "  curves.png                  loss (and FID) per epoch, redrawn after every epoch\n"
            "  checkpoints/epoch_NNNN.keras the model after every epoch (the last --keep-checkpoints kept)\n"
            "  model.keras                 the final model (EMA weights, optimizer and seeds included)\n"
            "  history.json                the logged values per epoch\n\n"
            "A labelled dataset trains a class-conditional model (with class dropout for guidance)\n"
            "unless --unconditional is given."
        ),
        epilog=BACKEND_NOTE,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "data", metavar="DATA",
        help=f"a dataset name ({', '.join(kd.datasets.DATASETS)}) or an image folder "
        "(one sub-folder per class, or images directly inside)",
    )  # fmt: skip
    parser.add_argument("--out", default="runs/train", help="output folder")
    parser.add_argument("--preset", choices=sorted(kd.models.unet.PRESETS), default="tiny", help="U-Net size")
    parser.add_argument(
        "--widths", type=_widths, default=None, help="override the preset's channels per level, e.g. 32,64,128"
    )
    parser.add_argument("--epochs", type=_positive_int, default=10)
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument(
        "--learning-rate", type=_positive_float, default=None,
        help="Adam's (peak) learning rate; default 2e-3 for the tiny preset (measured, docs/benchmarks.md), "
        "2e-4 (DDPM's) for the larger ones",
    )  # fmt: skip
    parser.add_argument(
        "--lr-schedule", choices=["cosine", "constant"], default="cosine",
        help="cosine: 5%% warm-up, then cosine decay to 0 at the last update (kd.learning_rates.warmup_cosine)",
    )  # fmt: skip
    parser.add_argument("--timesteps", type=_positive_int, default=1000, help="T of the noise schedule")
    parser.add_argument("--schedule", choices=["cosine", "linear"], default="cosine", help="noise schedule")
    parser.add_argument(
        "--prediction", choices=["epsilon", "x0", "v"], default=None,
        help="the network's target (default: DiffusionModel's, the fastest to train in docs/benchmarks.md)",
    )  # fmt: skip
    parser.add_argument(
        "--ema-decay", type=_non_negative_float, default=0.999, help="EMA decay of the sampling weights (0: no EMA)"
    )
    parser.add_argument(
        "--class-dropout", type=_non_negative_float, default=0.1, help="probability of the null class in training"
    )
    parser.add_argument(
        "--unconditional", action="store_true", help="ignore the labels and train an unconditional model"
    )
    parser.add_argument(
        "--split", choices=list(kd.datasets.SPLITS), default="train", help="split of a named dataset to train on"
    )
    parser.add_argument(
        "--limit", type=_non_negative_int, default=0, help="use only the first N training images (0: all)"
    )
    parser.add_argument(
        "--data-dir", default=None, help=f"folder with <name>.npz (default ${kd.datasets.DATA_DIR_ENV})"
    )
    parser.add_argument(
        "--image-size", type=_image_size, default=None,
        help="HEIGHT,WIDTH of folder images (default: the first image's)",
    )
    parser.add_argument("--grayscale", action="store_true", help="load folder images with one channel")
    _add_sampling_options(parser, "the grids and the FID samples")
    parser.add_argument(
        "--grid-every", type=_positive_int, default=1, help="save a grid every N epochs (and after the last)"
    )
    parser.add_argument(
        "--fid-every", type=_non_negative_int, default=0, help="log FID every N epochs (0: never; it is slow on a CPU)"
    )
    parser.add_argument("--fid-samples", type=_positive_int, default=2048, help="generated images per FID evaluation")
    parser.add_argument(
        "--fid-real", type=_positive_int, default=None, help="real images for FID (default: the whole test split)"
    )
    parser.add_argument("--keep-checkpoints", type=_positive_int, default=2, help="per-epoch checkpoints to keep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--coordinator", default=None, metavar="ADDRESSES",
        help="train in several processes: every process's host:port, comma-separated, process 0 first (JAX "
        "needs only process 0's); 'auto' reads the engine's environment (TF_CONFIG; Slurm, Cloud TPU on JAX)",
    )  # fmt: skip
    parser.add_argument("--num-processes", type=_positive_int, default=None, help="processes taking part")
    parser.add_argument("--process-id", type=_number(int, 0, "a process index >= 0"), default=None, help="this one's")
    parser.set_defaults(handler=run_train)


def _add_sample_parser(commands) -> None:
    parser = commands.add_parser(
        "sample",
        help="generate images from a saved model (PNG grid and .npz)",
        description=(
            "Generate images from a saved .keras model and write them as a PNG grid and as an\n"
            ".npz file (key `images`: float32 (N, H, W, C) in [0, 1]; `labels` for a conditional model).\n\n"
            "--labels 3 gives every image class 3; --labels 0,1,2 with --num 24 gives 8 of each,\n"
            "one class per grid row. Without --labels a conditional model draws classes uniformly."
        ),
        epilog=BACKEND_NOTE,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", help="a .keras file written by `train` or DiffusionModel.save")
    parser.add_argument("--num", type=_positive_int, default=16, help="number of images")
    _add_sampling_options(parser, "the images")
    parser.add_argument("--labels", type=_int_list, default=None, help="class per image: one class, or a comma list")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=_positive_int, default=None, help="images per network call (default 256)")
    parser.add_argument(
        "--columns", type=_positive_int, default=None,
        help="images per grid row (default: one row per label, else a square)",
    )
    parser.add_argument(
        "--raw-weights", action="store_true", help="sample with the trained weights instead of their EMA"
    )
    parser.add_argument("--out", default="samples.png", help="the PNG grid")
    parser.add_argument("--npz", default=None, help="the .npz of the images (default: --out with .npz)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_sample)


def _add_evaluate_parser(commands) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="FID (and KID) of a model or of images against a dataset split",
        description=(
            "FID (Heusel et al. 2017) with the reference 2015 Inception network, optionally KID, of\n"
            "the images of a model (generated here) or of saved images, against a dataset split.\n"
            "FID depends on N: the result always states both N; compare values at equal N only\n"
            "(published FIDs use 50,000 generated images). Real-data statistics are cached in\n"
            "~/.keras/keras_diffusion/fid_stats ($KERAS_HOME)."
        ),
        epilog=BACKEND_NOTE,
        formatter_class=_HelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", default=None, help="a .keras model to generate the images with")
    source.add_argument(
        "--images", default=None, help="an image folder, or an .npz/.npy of images (e.g. from `sample`)"
    )
    parser.add_argument(
        "--dataset", default=None,
        help=f"the real images: {', '.join(kd.datasets.DATASETS)} or an image folder "
        "(default: the dataset of the model's image shape)",
    )  # fmt: skip
    parser.add_argument("--split", choices=list(kd.datasets.SPLITS), default="test", help="split of the real dataset")
    parser.add_argument(
        "--num", type=_positive_int, default=2048, help="generated images (with --images: at most this many)"
    )
    parser.add_argument("--num-real", type=_positive_int, default=None, help="real images (default: the whole split)")
    parser.add_argument(
        "--kid", action="store_true", help="also report KID (needs the real images' features, not cached)"
    )
    parser.add_argument(
        "--data-dir", default=None, help=f"folder with <name>.npz (default ${kd.datasets.DATA_DIR_ENV})"
    )
    _add_sampling_options(parser, "the generated images")
    parser.add_argument(
        "--labels", type=_int_list, default=None, help="classes of the generated images (default: uniform)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=_positive_int, default=50, help="images per Inception call")
    parser.add_argument("--out", default=None, help="also write the results to this .json")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_evaluate)


# ------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Runs `keras-diffusion` with `argv` (default `sys.argv[1:]`).

    Args:
        argv: the command-line arguments without the program name.

    Returns:
        The exit status: 0 success, 1 bad input (one line on stderr), 2 usage error.

    Example:
    >>> main(["--version"])  # doctest: +SKIP
    keras-diffusion 0.1.0
    0
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help / --version (0) and usage errors (2)
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.handler(args)
    except (CommandLineError, ValueError, OSError) as error:
        # The library's input checks raise ValueError with a message that names the fix.
        if os.environ.get(DEBUG_ENV):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{PROGRAM} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"{PROGRAM} {args.command}: interrupted", file=sys.stderr)
        return 130


# ------------------------------------------------------------------------ train


def _make_feature_extractor(batch_size: int):
    """The FID Inception network (the tests substitute a cheap stand-in here)."""
    return kd.metrics.default_feature_extractor(batch_size)


def _sampling_kwargs(args) -> dict:
    """The sampler (with its --eta), steps and guidance, passed the same way to generate and both callbacks."""
    sampler = kd.samplers.get(args.sampler, **({} if args.eta is None else {"eta": args.eta}))
    return dict(sampler=sampler, steps=args.steps, guidance_scale=args.guidance_scale)


def run_train(args) -> int:
    """`keras-diffusion train`: fit a model and write grids, curves, checkpoints and the model."""
    _start_processes(args)
    if args.steps is None:
        args.steps = kd.samplers.get(args.sampler).default_steps(kd.schedules.get(args.schedule, args.timesteps))
    if args.timesteps < args.steps:
        raise CommandLineError(f"--steps ({args.steps}) cannot exceed --timesteps ({args.timesteps}).")
    if args.ema_decay >= 1 or args.class_dropout >= 1:
        raise CommandLineError("--ema-decay and --class-dropout must be below 1.")
    images, labels, dataset = kd.datasets.load_dataset_or_folder(
        args.data, args.split, args.data_dir, args.limit or None, args.image_size, args.grayscale
    )
    num_classes = None
    if labels is not None and not args.unconditional:
        num_classes = kd.datasets.DATASETS[dataset][1] if dataset else int(labels.max()) + 1
        if num_classes < 2:
            num_classes = None  # a folder without class sub-folders
    if num_classes is None:
        labels = None
    if args.guidance_scale and num_classes is None:
        raise CommandLineError(
            "--guidance-scale needs a class-conditional model; this data trains an unconditional one."
        )
    keras.utils.set_random_seed(args.seed)
    widths = {} if args.widths is None else {"widths": tuple(args.widths)}
    with kd.distributed.scope():
        unet = kd.models.UNet.preset(args.preset, image_shape=images.shape[1:], num_classes=num_classes, **widths)
        model = kd.DiffusionModel(
            unet, schedule=args.schedule, timesteps=args.timesteps, ema_decay=args.ema_decay or None,
            class_dropout=args.class_dropout, seed=args.seed,
            **({} if args.prediction is None else {"prediction": args.prediction}),
        )  # fmt: skip
        learning_rate = args.learning_rate or (2e-3 if args.preset == "tiny" else 2e-4)
        if args.lr_schedule == "cosine":
            updates = args.epochs * -(-len(images) // args.batch_size)
            learning_rate = kd.learning_rates.warmup_cosine(learning_rate, max(updates, 2))
        model.compile(optimizer=keras.optimizers.Adam(learning_rate))

    if dataset:
        real_images, _, _ = kd.datasets.load_dataset_or_folder(dataset, "test", args.data_dir, 32)
    else:
        real_images = images[:32]
    columns = 8
    grid_labels = None if num_classes is None else list(range(min(num_classes, 4)))
    callbacks = []
    if args.fid_every:
        callbacks.append(
            kd.callbacks.FIDCallback(
                None if dataset else images, dataset=dataset, split="test", num_samples=args.fid_samples,
                every_n_epochs=args.fid_every, num_real_samples=args.fid_real, seed=args.seed, verbose=1,
                feature_extractor=_make_feature_extractor(50), **_sampling_kwargs(args),
            )  # fmt: skip
        )
    callbacks += [
        kd.callbacks.ImageGridCallback(
            os.path.join(args.out, "grids"), every_n_epochs=args.grid_every, columns=columns, labels=grid_labels,
            real_images=real_images[: 4 * columns], seed=args.seed, **_sampling_kwargs(args),
        ),  # fmt: skip
        kd.callbacks.TrainingCurvesCallback(os.path.join(args.out, "curves.png")),
        kd.callbacks.EpochCheckpoint(os.path.join(args.out, "checkpoints"), keep=args.keep_checkpoints),
    ]
    kind = f"class-conditional ({num_classes} classes)" if num_classes else "unconditional"
    processes = kd.distributed.process_count()
    print(
        f"Training a {kind} {unet.count_params():,}-parameter U-Net on {len(images):,} images of shape "
        f"{images.shape[1:]} for {args.epochs} epochs, batch {args.batch_size}, on the "
        f"{keras.backend.backend()} backend (set KERAS_BACKEND to change it)"
        + (f", process {kd.distributed.process_index()} of {processes}." if processes > 1 else ".")
    )
    with kd.distributed.scope():
        history = model.fit(
            images, labels, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, callbacks=callbacks,
            verbose=0 if args.quiet else 1,
        )  # fmt: skip
    model_path = os.path.join(args.out, "model.keras")
    save_model_atomically(model, model_path)
    values = {name: [float(v) for v in series] for name, series in history.history.items()}
    write_bytes_atomically(os.path.join(args.out, "history.json"), json.dumps(values, indent=1).encode())
    if kd.distributed.is_chief():
        print(f"Wrote {model_path}, grids/, checkpoints/, curves.png and history.json in {args.out}.")
    return EXIT_OK


def _start_processes(args) -> None:
    """Connects the training processes (`kd.distributed.initialize`) when --coordinator is given."""
    if args.coordinator is None:
        if args.num_processes is not None or args.process_id is not None:
            raise CommandLineError("--num-processes and --process-id need --coordinator (or --coordinator auto).")
        return
    try:
        if args.coordinator == "auto":
            kd.distributed.initialize(num_processes=args.num_processes, process_id=args.process_id)
        else:
            kd.distributed.initialize(args.coordinator, num_processes=args.num_processes, process_id=args.process_id)
    except ValueError as error:
        raise CommandLineError(f"--coordinator: {error}") from None
    processes = kd.distributed.process_count()
    if args.batch_size % processes:
        raise CommandLineError(
            f"--batch-size {args.batch_size} is the global batch; it must divide between the {processes} "
            f"processes, e.g. --batch-size {max(processes, args.batch_size // processes * processes)}."
        )


# ----------------------------------------------------------------------- sample


def load_diffusion_model(path: str) -> kd.DiffusionModel:
    """Loads a `.keras` file and checks that it holds a `DiffusionModel`.

    Args:
        path: the file.

    Returns:
        The model.

    Example:
    >>> model = load_diffusion_model("runs/mnist/model.keras")  # doctest: +SKIP
    """
    if not os.path.isfile(path):
        raise CommandLineError(f"Model file {path!r} does not exist.")
    if not path.endswith(".keras"):
        raise CommandLineError(f"Model file {path!r} is not a .keras file (as written by `train` or model.save).")
    try:
        model = keras.models.load_model(path)
    except Exception as error:  # noqa: BLE001 - a corrupt or foreign file: say so in one line
        raise CommandLineError(f"Could not load {path!r}: {type(error).__name__}: {error}") from error
    if not isinstance(model, kd.DiffusionModel):
        raise CommandLineError(f"{path!r} holds a {type(model).__name__}, not a keras_diffusion DiffusionModel.")
    return model


def _expand_labels(model: kd.DiffusionModel, labels: list[int] | None, num: int) -> np.ndarray | None:
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


def _check_guidance(model: kd.DiffusionModel, guidance_scale: float) -> None:
    if guidance_scale and model.num_classes is None:
        raise CommandLineError("--guidance-scale needs a class-conditional model; this one is unconditional.")


def _check_steps(model: kd.DiffusionModel, args) -> None:
    """Fills in the sampler's default `--steps` for this model, or checks the one given."""
    if args.steps is None:
        args.steps = kd.samplers.get(args.sampler).default_steps(model.schedule)
    if args.steps > model.timesteps:
        raise CommandLineError(f"--steps ({args.steps}) cannot exceed the model's timesteps ({model.timesteps}).")


def run_sample(args) -> int:
    """`keras-diffusion sample`: a PNG grid and an .npz of generated images."""
    if not args.out.lower().endswith(".png"):
        raise CommandLineError(f"--out must name a .png file; got {args.out!r}.")
    npz_path = args.npz or os.path.splitext(args.out)[0] + ".npz"
    model = load_diffusion_model(args.model)
    labels = _expand_labels(model, args.labels, args.num)
    _check_guidance(model, args.guidance_scale)
    _check_steps(model, args)
    print(f"Sampling {args.num} images with {args.sampler}, {args.steps} steps ({keras.backend.backend()} backend).")
    images = model.generate(
        args.num, labels=labels, seed=args.seed, batch_size=args.batch_size, use_ema=not args.raw_weights,
        verbose=not args.quiet, **_sampling_kwargs(args),
    )  # fmt: skip
    columns = args.columns or (args.num // len(args.labels) if args.labels and len(args.labels) > 1 else None)
    columns = columns or math.ceil(math.sqrt(args.num))
    kd.callbacks.save_image_atomically(args.out, _grid_with_blanks(images, columns))
    arrays = {
        "images": images.astype("float32"),
        "sampler": np.array(args.sampler),
        "steps": np.array(args.steps),
        "guidance_scale": np.array(args.guidance_scale, dtype="float32"),
        "seed": np.array(args.seed),
    }
    if labels is not None:
        arrays["labels"] = labels
    save_npz_atomically(npz_path, arrays)
    print(f"Wrote {args.out} ({columns} per row) and {npz_path}.")
    return EXIT_OK


def _grid_with_blanks(images: np.ndarray, columns: int) -> np.ndarray:
    """`make_image_grid`, with white tiles completing the last row."""
    missing = -len(images) % columns
    if missing:
        images = np.concatenate([images, np.ones((missing,) + images.shape[1:], images.dtype)])
    return kd.callbacks.make_image_grid(images, columns)


# --------------------------------------------------------------------- evaluate


class _ProgressExtractor:
    """Forwards to a feature extractor and shows a progress bar from its first call.

    Keeps the extractor's `name` and `resize`, which key the FID statistics cache.
    """

    def __init__(self, extractor, total: int, label: str, quiet: bool) -> None:
        self.extractor, self.total, self.label, self.quiet = extractor, total, label, quiet
        self.name = getattr(extractor, "name", None) or type(extractor).__name__
        self.resize = getattr(extractor, "resize", "none")
        self.progress = None

    def __call__(self, images):
        if self.progress is None and not self.quiet:
            print(f"Inception features of {self.total:,} {self.label} images:")
            self.progress = keras.utils.Progbar(self.total)
        features = self.extractor(images)
        if self.progress is not None:
            self.progress.add(len(images))
        return features


def run_evaluate(args) -> int:
    """`keras-diffusion evaluate`: FID (and KID) against a dataset split, with N stated."""
    model = load_diffusion_model(args.model) if args.model else None
    dataset = args.dataset
    if dataset is None:
        if model is None:
            raise CommandLineError("--images needs --dataset (the real images to compare with).")
        dataset = kd.datasets.name_for_shape(model.image_shape)
    if model is not None:
        labels = _expand_labels(model, args.labels, args.num)
        _check_guidance(model, args.guidance_scale)
        _check_steps(model, args)
    elif args.labels is not None:
        raise CommandLineError("--labels apply to --model only.")

    real, _, dataset_name = kd.datasets.load_dataset_or_folder(dataset, args.split, args.data_dir, args.num_real)
    if model is not None:
        if tuple(model.image_shape) != tuple(real.shape[1:]):
            raise CommandLineError(f"The model makes {model.image_shape} images; {dataset} has {real.shape[1:]}.")
        backend = keras.backend.backend()
        print(f"Generating {args.num} images with {args.sampler}, {args.steps} steps ({backend} backend).")
        generated = model.generate(
            args.num, labels=labels, seed=args.seed, verbose=not args.quiet, **_sampling_kwargs(args)
        )
    else:
        generated = kd.datasets.read_images(args.images, real.shape[1:], args.num)
        if tuple(generated.shape[1:]) != tuple(real.shape[1:]):
            raise CommandLineError(f"The images have shape {generated.shape[1:]}; {dataset} has {real.shape[1:]}.")

    extractor = _make_feature_extractor(args.batch_size)
    real_name = dataset_name or os.path.abspath(dataset)
    real_extractor = _ProgressExtractor(extractor, len(real), f"real ({real_name} {args.split})", args.quiet)
    real_features = None
    if args.kid:
        real_features = kd.metrics.extract_features(real, real_extractor, args.batch_size)
        real_statistics = kd.metrics.FeatureStatistics.from_features(real_features)
    else:
        # Cached on disk by dataset, split and N: later runs skip the real images.
        fid = kd.metrics.FID(real_extractor, batch_size=args.batch_size)
        real_statistics = fid.real_statistics(real, dataset_name=dataset_name, split=args.split)
    scores = kd.metrics.score_images(
        generated, real_statistics, _ProgressExtractor(extractor, len(generated), "generated", args.quiet),
        args.batch_size, real_features=real_features,
    )  # fmt: skip
    results = {
        **scores,
        "num_generated": int(len(generated)),
        "num_real": int(real_statistics.num_samples),
        "dataset": real_name,
        "split": args.split,
        "source": os.path.abspath(args.model or args.images),
    }
    if model is not None:
        results.update(sampler=args.sampler, steps=args.steps, guidance_scale=args.guidance_scale, seed=args.seed)
    summary = f"({results['num_generated']} generated vs {results['num_real']} real images, {real_name} {args.split})"
    print(f"FID {results['fid']:.3f} {summary}")
    if min(results["num_generated"], results["num_real"]) < MIN_RECOMMENDED_SAMPLES:
        print(
            f"Note: below {MIN_RECOMMENDED_SAMPLES} images FID is biased upwards; "
            "compare only values computed at the same N."
        )
    if args.kid:
        print(f"KID {results['kid']:.5f} ± {results['kid_std']:.5f} {summary}")
    if args.out:
        write_bytes_atomically(args.out, (json.dumps(results, indent=1) + "\n").encode())
        print(f"Wrote {args.out}.")
    return EXIT_OK
