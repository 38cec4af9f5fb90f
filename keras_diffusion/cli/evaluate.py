"""`keras-diffusion evaluate`: FID (and KID) of a model or of saved images against a dataset split."""

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
    check_guidance,
    check_steps,
    expand_labels,
    int_list,
    load_diffusion_model,
    positive_int,
    sampling_from_args,
)
from keras_diffusion.data.files import write_bytes_atomically
from keras_diffusion.metrics.fid import MIN_RECOMMENDED_SAMPLES


def add_parser(commands) -> None:
    """Adds the `evaluate` sub-command, with its options, to the `keras-diffusion` parser's `commands`."""
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
        formatter_class=HelpFormatter,
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
        "--num", type=positive_int, default=2048, help="generated images (with --images: at most this many)"
    )
    parser.add_argument("--num-real", type=positive_int, default=None, help="real images (default: the whole split)")
    parser.add_argument(
        "--kid", action="store_true", help="also report KID (needs the real images' features, not cached)"
    )
    parser.add_argument(
        "--data-dir", default=None, help=f"folder with <name>.npz (default ${kd.datasets.DATA_DIR_ENV})"
    )
    add_sampling_options(parser, "the generated images")
    parser.add_argument(
        "--labels", type=int_list, default=None, help="classes of the generated images (default: uniform)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=50, help="images per Inception call")
    parser.add_argument("--out", default=None, help="also write the results to this .json")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=run_evaluate)


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
        labels = expand_labels(model, args.labels, args.num)
        check_guidance(model, args.guidance_scale)
        check_steps(model, args)
    elif args.labels is not None:
        raise CommandLineError("--labels apply to --model only.")

    real, _, dataset_name = kd.datasets.load_dataset_or_folder(dataset, args.split, args.data_dir, args.num_real)
    if model is not None:
        if tuple(model.image_shape) != tuple(real.shape[1:]):
            raise CommandLineError(f"The model makes {model.image_shape} images; {dataset} has {real.shape[1:]}.")
        backend = keras.backend.backend()
        print(f"Generating {args.num} images with {args.sampler}, {args.steps} steps ({backend} backend).")
        generated = model.generate(
            args.num, labels=labels, seed=args.seed, verbose=not args.quiet, **sampling_from_args(args).arguments()
        )
    else:
        generated = kd.datasets.read_images(args.images, real.shape[1:], args.num)
        if tuple(generated.shape[1:]) != tuple(real.shape[1:]):
            raise CommandLineError(f"The images have shape {generated.shape[1:]}; {dataset} has {real.shape[1:]}.")

    extractor = common.make_feature_extractor(args.batch_size)
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
