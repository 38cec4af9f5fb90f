"""`keras-diffusion train`: fit a DiffusionModel on a dataset or an image folder, in one process or several."""

import json
import os

import keras

import keras_diffusion as kd
from keras_diffusion.cli import common
from keras_diffusion.cli.common import (
    BACKEND_NOTE,
    EXIT_OK,
    CommandLineError,
    HelpFormatter,
    add_sampling_options,
    image_size,
    non_negative_float,
    non_negative_int,
    number,
    positive_float,
    positive_int,
    sampling_from_args,
    widths,
)
from keras_diffusion.data.files import save_model_atomically, write_bytes_atomically


def add_parser(commands) -> None:
    """Adds the `train` sub-command, with its options, to the `keras-diffusion` parser's `commands`."""
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
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "data", metavar="DATA",
        help=f"a dataset name ({', '.join(kd.datasets.DATASETS)}) or an image folder "
        "(one sub-folder per class, or images directly inside)",
    )  # fmt: skip
    parser.add_argument("--out", default="runs/train", help="output folder")
    parser.add_argument("--preset", choices=sorted(kd.models.PRESETS), default="tiny", help="U-Net size")
    parser.add_argument(
        "--widths", type=widths, default=None, help="override the preset's channels per level, e.g. 32,64,128"
    )
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument(
        "--learning-rate", type=positive_float, default=None,
        help="Adam's (peak) learning rate; default 1e-2 for the micro preset and 2e-3 for tiny (measured, "
        "docs/lab_notes.md), 2e-4 (DDPM's) for the larger ones",
    )  # fmt: skip
    parser.add_argument(
        "--lr-schedule", choices=["cosine", "constant"], default="cosine",
        help="cosine: 5%% warm-up, then cosine decay to 0 at the last update (kd.learning_rates.warmup_cosine)",
    )  # fmt: skip
    parser.add_argument("--timesteps", type=positive_int, default=1000, help="T of the noise schedule")
    parser.add_argument("--schedule", choices=["cosine", "linear"], default="cosine", help="noise schedule")
    parser.add_argument(
        "--prediction", choices=list(kd.predictions.PREDICTIONS), default=None,
        help="the network's target (default: DiffusionModel's, the fastest to train in docs/lab_notes.md); "
        "edm: EDM's preconditioning",
    )  # fmt: skip
    parser.add_argument(
        "--timestep-sampling", choices=["uniform", "log_normal"], default="uniform",
        help="the distribution of t in training: uniform (DDPM) or log_normal (EDM's ln σ ~ N(-1.2, 1.2²))",
    )  # fmt: skip
    parser.add_argument(
        "--ema-decay", type=non_negative_float, default=0.999, help="EMA decay of the sampling weights (0: no EMA)"
    )
    parser.add_argument(
        "--class-dropout", type=non_negative_float, default=0.1, help="probability of the null class in training"
    )
    parser.add_argument(
        "--unconditional", action="store_true", help="ignore the labels and train an unconditional model"
    )
    parser.add_argument(
        "--split", choices=list(kd.datasets.SPLITS), default="train", help="split of a named dataset to train on"
    )
    parser.add_argument(
        "--limit", type=non_negative_int, default=0, help="use only the first N training images (0: all)"
    )
    parser.add_argument(
        "--data-dir", default=None, help=f"folder with <name>.npz (default ${kd.datasets.DATA_DIR_ENV})"
    )
    parser.add_argument(
        "--image-size", type=image_size, default=None,
        help="HEIGHT,WIDTH of folder images (default: the first image's)",
    )
    parser.add_argument("--grayscale", action="store_true", help="load folder images with one channel")
    add_sampling_options(parser, "the grids and the FID samples")
    parser.add_argument(
        "--grid-every", type=positive_int, default=1, help="save a grid every N epochs (and after the last)"
    )
    parser.add_argument(
        "--fid-every", type=non_negative_int, default=0, help="log FID every N epochs (0: never; it is slow on a CPU)"
    )
    parser.add_argument("--fid-samples", type=positive_int, default=2048, help="generated images per FID evaluation")
    parser.add_argument(
        "--fid-real", type=positive_int, default=None, help="real images for FID (default: the whole test split)"
    )
    parser.add_argument("--keep-checkpoints", type=positive_int, default=2, help="per-epoch checkpoints to keep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--coordinator", default=None, metavar="ADDRESSES",
        help="train in several processes: every process's host:port, comma-separated, process 0 first (JAX "
        "needs only process 0's); 'auto' reads the engine's environment (TF_CONFIG; Slurm, Cloud TPU on JAX)",
    )  # fmt: skip
    parser.add_argument("--num-processes", type=positive_int, default=None, help="processes taking part")
    parser.add_argument("--process-id", type=number(int, 0, "a process index >= 0"), default=None, help="this one's")
    parser.set_defaults(handler=run_train)


def run_train(args) -> int:
    """`keras-diffusion train`: fit a model and write grids, curves, checkpoints and the model."""
    _start_processes(args)
    if args.steps is None:
        args.steps = kd.samplers.get_sampler(args.sampler).default_steps(kd.schedules.get_schedule(args.schedule, args.timesteps))
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
            class_dropout=args.class_dropout, seed=args.seed, timestep_sampling=args.timestep_sampling,
            **({} if args.prediction is None else {"prediction": args.prediction}),
        )  # fmt: skip
        updates = args.epochs * -(-len(images) // args.batch_size)
        model.compile(optimizer=kd.training.optimizer_for_run(updates, args.preset, args.learning_rate, args.lr_schedule))

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
                feature_extractor=common.make_feature_extractor(50), sampling=sampling_from_args(args),
            )  # fmt: skip
        )
    callbacks += [
        kd.callbacks.ImageGridCallback(
            os.path.join(args.out, "grids"), every_n_epochs=args.grid_every, columns=columns, labels=grid_labels,
            real_images=real_images[: 4 * columns], seed=args.seed, sampling=sampling_from_args(args),
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
