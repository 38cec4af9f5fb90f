"""FID of MNIST train against MNIST test with the project's Inception port.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/fid_mnist_train_vs_test.py [--num 10000]

The first `--num` images of each split, grayscale repeated to RGB, bilinear
resize 28 -> 299. Prints the FID with N for each side, the wall time and the
machine. Two samples of the same distribution: the value measures the
sampling noise of FID at this N, a floor for what a model can reach.
"""

import argparse
import os
import platform
import time

import keras

import keras_diffusion as kd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num", type=int, default=10000, help="images per split")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    train, _ = kd.datasets.load("mnist", split="train", limit=args.num)
    test, _ = kd.datasets.load("mnist", split="test", limit=args.num)
    start = time.perf_counter()
    result = kd.metrics.FID(batch_size=args.batch_size)(train, test)
    seconds = time.perf_counter() - start
    print(f"backend   {keras.backend.backend()}; {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"FID       {result.value:.4f} (MNIST train N={len(train)} vs test N={len(test)})")
    print(f"time      {seconds:.0f} s for {len(train) + len(test)} images")


if __name__ == "__main__":
    main()
