"""Which sampler for how many network evaluations? FID against NFE on MNIST, and the samples side by side.

Takes a trained MNIST model (`--model runs/mnist/model.keras`, e.g. the
quickstart's) or trains a small one first, then for every sampler and step
count generates the same N digits (same seed, same start noise and labels) and
measures their FID against the MNIST test digits (`kd.metrics.fid_versus_nfe`).
The figure shows where the second-order samplers (DPM-Solver++ 2M, Heun) beat
the first-order ones (DDIM, Euler) and how far the ancestral DDPM sampler
falls behind at few steps.

Full settings (the defaults): samplers ddim, dpmpp_2m, euler, heun, ddpm at
5, 10, 20, 50 and 100 steps, N = 2048 generated vs 2048 test digits per
point (the least N with a full-rank Inception covariance; FID is biased
upwards at small N, so compare points of one figure, not with papers). On a
2-core CPU that is hours (Inception ≈ 10 images/s, so ≈ 3.5 min per point plus
generation); on a GPU, minutes.

Writes to --out (default runs/sampler_comparison):
  fid_vs_nfe.png / .csv    FID against network evaluations, one line per sampler
  samples.png              one row per sampler at --grid-steps steps, digits 0-9
                           (conditional models) from the same noise
  model.keras              the model trained here (when no --model is given)

--quick trains a tiny model on 256 digits for one epoch and measures FID from
32 digits per point (meaningless values; it checks the pipeline in CI).

Data: MNIST from $KERAS_DIFFUSION_DATA_DIR/mnist.npz (or --data-dir); FID
weights from $KERAS_DIFFUSION_FID_WEIGHTS.

Example:
    python examples/sampler_comparison.py --model runs/mnist/model.keras
    python examples/sampler_comparison.py --quick --out runs/sampler_quick
"""

import argparse
import math
import os
import warnings

import keras
import numpy as np

import keras_diffusion as kd
from keras_diffusion.data.files import save_model_atomically
from keras_diffusion.metrics.fid import MIN_RECOMMENDED_SAMPLES

FULL = dict(samplers="ddim,dpmpp_2m,euler,heun,ddpm", steps="5,10,20,50,100", num_samples=2048, epochs=3, limit=0,
            widths=(32, 64, 64), grid_steps=10)  # fmt: skip
QUICK = dict(samplers="ddim,dpmpp_2m,heun", steps="2,4", num_samples=32, epochs=1, limit=256, widths=(8, 16),
             grid_steps=2)  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved MNIST DiffusionModel (.keras); trains one when omitted")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a CPU / CI run")
    parser.add_argument("--out", default="runs/sampler_comparison", help="output folder")
    parser.add_argument("--samplers", help=f"comma-separated names (full {FULL['samplers']})")
    parser.add_argument("--steps", help=f"comma-separated step counts (full {FULL['steps']})")
    parser.add_argument("--num-samples", type=int, help="generated and real digits per FID (full 2048)")
    parser.add_argument("--grid-steps", type=int, help="steps of the side-by-side samples (full 10)")
    parser.add_argument("--guidance-scale", type=float, default=0.0, help="w for every point (conditional models)")
    parser.add_argument("--epochs", type=int, help="training epochs when no --model (full 3)")
    parser.add_argument("--limit", type=int, help="training digits when no --model (0: all 60,000)")
    parser.add_argument("--widths", type=lambda s: tuple(int(w) for w in s.split(",")), help="U-Net channels per level")
    parser.add_argument("--data-dir", default=None, help="folder with mnist.npz (default $KERAS_DIFFUSION_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.samplers = args.samplers.split(",")
    unknown = sorted(set(args.samplers) - set(kd.samplers.available()))
    if unknown:
        parser.error(f"unknown sampler(s) {unknown}; choose from {kd.samplers.available()}")
    try:
        args.steps = [int(s) for s in args.steps.split(",")]
    except ValueError:
        parser.error(f"--steps must be comma-separated integers; received {args.steps!r}")
    if min(args.steps + [args.num_samples, args.grid_steps, args.epochs]) < 1 or args.limit < 0:
        parser.error("--steps, --num-samples, --grid-steps and --epochs must be >= 1 and --limit >= 0")
    if args.model and not os.path.isfile(args.model):
        parser.error(f"--model {args.model!r} is not a file; train one with examples/train_mnist.py")
    return args


def train_model(args) -> kd.DiffusionModel:
    """A class-conditional MNIST model, trained with the quickstart's recipe at this run's size."""
    images, labels = kd.datasets.load("mnist", split="train", data_dir=args.data_dir, limit=args.limit or None)
    unet = kd.models.UNet.mnist(widths=args.widths, num_res_blocks=1, attention_resolutions=(7,),
                                norm_groups=math.gcd(8, *args.widths), dropout=0.0)  # fmt: skip
    model = kd.DiffusionModel(unet, schedule="linear", timesteps=1000, ema_decay=0.999, class_dropout=0.1, seed=args.seed)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    print(f"Training a {unet.count_params():,}-parameter U-Net on {len(images):,} digits for {args.epochs} epoch(s).")
    model.fit(images, labels, batch_size=64, epochs=args.epochs, shuffle=True, verbose=2)
    save_model_atomically(model, os.path.join(args.out, "model.keras"))
    return model


def save_samples_by_sampler(path, model, samplers, steps, guidance_scale, seed) -> None:
    """One row of digits 0-9 (or 10 unconditional samples) per sampler, all from the same noise."""
    labels = np.arange(10) if model.num_classes else None
    rows = [model.generate(10, sampler=name, steps=steps, labels=labels, guidance_scale=guidance_scale, seed=seed)
            for name in samplers]  # fmt: skip
    kd.callbacks.save_image_atomically(path, kd.callbacks.make_image_grid(np.concatenate(rows), columns=10))


def main(argv=None, feature_extractor=None) -> list:
    """Runs the comparison and returns its `SweepPoint`s.

    `feature_extractor` replaces the Inception network of FID (the tests pass a cheap one).
    """
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    model = keras.saving.load_model(args.model) if args.model else train_model(args)
    if tuple(model.image_shape) != (28, 28, 1):
        raise SystemExit(f"This example compares samplers on MNIST; the model makes {model.image_shape} images.")

    real, _ = kd.datasets.load("mnist", split="test", data_dir=args.data_dir, limit=args.num_samples)
    fid = kd.metrics.FID(feature_extractor=feature_extractor)
    real_statistics = fid.real_statistics(real, "mnist" if feature_extractor is None else None, "test", len(real))

    def report(point):
        print(f"{point.sampler:9s} steps {point.steps:4d}  NFE {point.nfe:4d}  FID {point.fid:8.2f} "
              f"(N = {point.num_samples})  {point.generate_seconds:.0f} s", flush=True)  # fmt: skip

    with warnings.catch_warnings():
        if args.num_samples < MIN_RECOMMENDED_SAMPLES:
            print(f"FID from N = {args.num_samples} < 2048 images: values are biased upwards; compare within this run.")
            warnings.simplefilter("ignore", UserWarning)
        points = kd.metrics.fid_versus_nfe(
            model, real_statistics, args.samplers, args.steps, num_samples=args.num_samples,
            sampling=kd.samplers.Sampling(guidance_scale=args.guidance_scale), seed=args.seed, fid=fid, on_point=report,
        )  # fmt: skip
    kd.metrics.write_sweep(points, os.path.join(args.out, "fid_vs_nfe.png"), title="MNIST, same seed for every point")
    save_samples_by_sampler(os.path.join(args.out, "samples.png"), model, args.samplers, args.grid_steps,
                            args.guidance_scale, args.seed)  # fmt: skip
    print(f"Wrote fid_vs_nfe.png, fid_vs_nfe.csv and samples.png in {args.out}.")
    return points


if __name__ == "__main__":
    main()
