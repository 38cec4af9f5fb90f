"""Throughput of the FID Inception network on the Keras backend in use.

Usage:
    KERAS_BACKEND=jax python benchmarks/fid.py [--batch-size 50] [--batches 4]

Needs the weights: `$KERAS_DIFFUSION_FID_WEIGHTS`, `../shared/data` next to
the repository, or the Keras cache. Prints images per second after one
warm-up batch (which includes compilation), and the machine it ran on.
"""

import argparse
import os
import pathlib
import platform
import time

import keras
import numpy as np

from keras_diffusion.metrics import WEIGHTS_ENV_VAR, InceptionFeatures

SHARED_WEIGHTS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "inception-2015-12-05-fid.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--batches", type=int, default=4, help="timed batches after the warm-up")
    parser.add_argument("--size", type=int, default=299, help="input image size (resized to 299)")
    args = parser.parse_args()

    weights = None
    if not os.environ.get(WEIGHTS_ENV_VAR) and SHARED_WEIGHTS.is_file():
        weights = SHARED_WEIGHTS
    extractor = InceptionFeatures(weights=weights, batch_size=args.batch_size)
    images = np.random.default_rng(0).integers(0, 256, (args.batch_size, args.size, args.size, 3), dtype=np.uint8)

    start = time.perf_counter()
    extractor(images)
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.batches):
        extractor(images)
    elapsed = time.perf_counter() - start

    devices = keras.distribution.list_devices() if hasattr(keras, "distribution") else ["?"]
    print(f"backend        {keras.backend.backend()} (keras {keras.__version__})")
    print(f"devices        {', '.join(map(str, devices))}")
    print(f"machine        {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"input          {args.batch_size} x {args.size}x{args.size}x3 uint8, {args.batches} timed batches")
    print(f"warm-up batch  {warm_up:.2f} s (includes compilation)")
    print(f"throughput     {args.batches * args.batch_size / elapsed:.1f} images/s")


if __name__ == "__main__":
    main()
