"""FID against network evaluations (NFE) for every sampler, on a trained model; plotted to PNG.

Usage:
    python benchmarks/sampler_quality.py runs/mnist/model.keras --num-samples 2048 \
        --samplers ddim,dpmpp_2m,heun,euler,ddpm --steps 5,10,20,50 --out runs/sampler_quality.png

The model is any saved `DiffusionModel` (e.g. the quickstart's `runs/mnist/model.keras`). Real
statistics come from the test split of the dataset matching its image shape (MNIST for 28×28×1),
through the project's FID (the 2015 Inception port). Prints one line per (sampler, steps) with
NFE, FID, N and seconds, writes the table next to the PNG (.csv) and the figure. FID needs
N ≥ 2048 for a full-rank covariance; smaller N is allowed for smoke runs and is printed with
every value. On the 2-core CPU this is slow (Inception ≈10 images/s on TF): budget
≈ (N / 10 s) per point, plus generation.
"""

import argparse
import csv
import io
import os
import pathlib
import time

import keras
import numpy as np

import keras_diffusion as kd
from keras_diffusion.callbacks.fid_callback import _dataset_for_shape
from keras_diffusion.metrics.atomic_files import write_bytes_atomically

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="path of a saved DiffusionModel (.keras)")
    parser.add_argument("--num-samples", type=int, default=2048, help="generated and real images per FID (N)")
    parser.add_argument("--samplers", default="ddim,dpmpp_2m,heun,euler,ddpm")
    parser.add_argument("--steps", default="5,10,20,50", help="comma-separated step counts")
    parser.add_argument("--guidance-scale", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=256)
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

    rows = []
    for name in args.samplers.split(","):
        for steps in [int(s) for s in args.steps.split(",")]:
            sampler = kd.samplers.get(name)
            start = time.perf_counter()
            images = model.generate(
                args.num_samples, sampler=sampler, steps=steps, guidance_scale=args.guidance_scale,
                seed=0, batch_size=args.batch_size,
            )  # fmt: skip
            generation = time.perf_counter() - start
            result = fid(real_statistics, images)
            nfe = sampler.function_evaluations(steps)
            rows.append({"sampler": name, "steps": steps, "nfe": nfe, "fid": result.value, "n": result.num_samples,
                         "generate_seconds": round(generation, 1)})  # fmt: skip
            print(f"{name:9s} steps {steps:4d}  NFE {nfe:4d}  FID {result.value:8.2f}  N {result.num_samples}"
                  f"  generate {generation:.0f} s", flush=True)  # fmt: skip

    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomically(out.with_suffix(".csv"), table.getvalue().encode())
    write_bytes_atomically(out, plot(rows, args.num_samples, dataset))
    print(f"wrote {out} and {out.with_suffix('.csv')}")


def plot(rows, num_samples, dataset) -> bytes:
    """The FID-vs-NFE figure as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["sampler"] for r in rows):
        points = sorted((r["nfe"], r["fid"]) for r in rows if r["sampler"] == name)
        axis.plot(*zip(*points), marker="o", label=name)
    axis.set_xscale("log")
    axis.set_xlabel("network evaluations (NFE)")
    axis.set_ylabel(f"FID (N = {num_samples}, {dataset} test)")
    axis.legend()
    axis.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=120)
    plt.close(figure)
    return buffer.getvalue()


if __name__ == "__main__":
    main()
