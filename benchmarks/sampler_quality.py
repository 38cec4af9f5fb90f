"""FID against network evaluations (NFE) for every sampler, on a trained model; plotted to PNG.

Usage:
    python benchmarks/sampler_quality.py runs/mnist/model.keras --num-samples 2048 \
        --samplers ddim,dpmpp_2m,heun,euler,ddpm --steps 5,10,20,50 --out runs/sampler_quality.png

The model is any saved `DiffusionModel` (e.g. the quickstart's `runs/mnist/model.keras`). Real
statistics come from the test split of the dataset matching its image shape (MNIST for 28×28×1),
through the project's FID (the 2015 Inception port). Prints one line per (sampler, steps) with
NFE, FID, N and seconds as it goes (`kd.metrics.fid_versus_nfe`), then writes the figure and the
table next to it (.csv, `kd.metrics.write_sweep`). FID needs
N ≥ 2048 for a full-rank covariance; smaller N is allowed for smoke runs and is printed with
every value. On the 2-core CPU this is slow (Inception ≈10 images/s on TF): budget
≈ (N / 10 s) per point, plus generation.
"""

import argparse
import os
import pathlib

import keras
from sampler_accuracy import parse_sampler  # benchmarks/: `name`, `name:spacing` or `name:setting=value`

import keras_diffusion as kd
from keras_diffusion.callbacks.fid_callback import _dataset_for_shape

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="path of a saved DiffusionModel (.keras)")
    parser.add_argument("--num-samples", type=int, default=2048, help="generated and real images per FID (N)")
    parser.add_argument("--samplers", default="ddim,dpmpp_2m,heun,euler,ddpm",
                        help="comma-separated name, name:spacing or name:setting=value (dpmpp_2m_sde:eta=0.25)")  # fmt: skip
    parser.add_argument("--steps", default="5,10,20,50", help="comma-separated step counts")
    parser.add_argument("--guidance-scale", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="start noise and labels, the same for every point")
    parser.add_argument("--no-ema", action="store_true", help="sample with the trained weights, not their EMA")
    parser.add_argument("--out", default="runs/sampler_quality.png")
    args = parser.parse_args()

    if SHARED.is_dir():
        os.environ.setdefault(kd.datasets.DATA_DIR_ENV, str(SHARED))
        os.environ.setdefault(kd.metrics.WEIGHTS_ENV_VAR, str(SHARED / "inception-2015-12-05-fid.npz"))
    model = keras.saving.load_model(args.model)
    dataset = _dataset_for_shape(tuple(model.image_shape))
    real, _ = kd.datasets.load(dataset, split="test", limit=args.num_samples)
    fid = kd.metrics.FID()
    real_statistics = fid.real_statistics(real, dataset, "test", args.num_samples)

    def report(point):
        print(f"{point.sampler:9s} steps {point.steps:4d}  NFE {point.nfe:4d}  FID {point.fid:8.2f}  "
              f"N {point.num_samples}  generate {point.generate_seconds:.0f} s", flush=True)  # fmt: skip

    points = kd.metrics.fid_versus_nfe(
        model, real_statistics, [parse_sampler(text)[1] for text in args.samplers.split(",")], [int(s) for s in args.steps.split(",")],
        num_samples=args.num_samples, fid=fid, seed=args.seed,
        sampling=kd.samplers.Sampling(guidance_scale=args.guidance_scale, batch_size=args.batch_size, use_ema=not args.no_ema),
        on_point=report,
    )  # fmt: skip
    kd.metrics.write_sweep(points, args.out, title=f"{pathlib.Path(args.model).name} vs {dataset} test")
    print(f"wrote {args.out} and {pathlib.Path(args.out).with_suffix('.csv')}")


if __name__ == "__main__":
    main()
