"""The FID Inception's batch norm folded into its convolutions, against the four-pass form it replaced.

Usage:
    KERAS_BACKEND=tensorflow python benchmarks/inception_batch_norm.py [--batch-size 50] [--grappler on|off]

`kd.metrics.inception.ConvBatchNormReLU` computes
`relu((conv(x, kernel) - mean) / sqrt(var + eps) + beta)` as
`relu(conv(x, kernel * s) + (beta - mean * s))` with `s = rsqrt(var + eps)`:
two passes over the activations after the convolution instead of four. This
builds one feature extractor with each form in one process, compiles both,
then times them in alternating rounds on the same 28×28 uint8 digits (resized
to 299 as in FID) and prints img/s per round and the largest difference
between their features. `--grappler` sets TensorFlow's graph rewriting for the
process (default: the library's choice, off without a GPU).
Needs the weights: `$KERAS_DIFFUSION_FID_WEIGHTS` or `../shared/data` next to the repository.
"""

import argparse
import os
import pathlib
import time

import keras
import numpy as np
from keras import ops

from keras_diffusion.metrics import WEIGHTS_ENV_VAR, inception
from keras_diffusion.runtime import cpu_description, tensorflow_graph_rewrites

SHARED_WEIGHTS = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "inception-2015-12-05-fid.npz"


def four_pass_call(self, inputs):
    """`ConvBatchNormReLU.call` before the fold: subtract, divide, add, ReLU after the convolution."""
    pad_height, pad_width = self.padding
    if pad_height or pad_width:
        inputs = ops.pad(inputs, [[0, 0], [pad_height, pad_height], [pad_width, pad_width], [0, 0]])
    outputs = ops.conv(inputs, self.kernel, strides=self.strides, padding="valid")
    outputs = (outputs - self.moving_mean) / ops.sqrt(self.moving_variance + self.epsilon) + self.beta
    return ops.relu(outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--batches", type=int, default=4, help="batches per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per form, alternating (order flips each round)")
    parser.add_argument("--grappler", choices=["on", "off"], default=None)
    args = parser.parse_args()
    rewrites = tensorflow_graph_rewrites(None if args.grappler is None else args.grappler == "on")
    grappler = "n/a" if rewrites is None else "on" if rewrites else "off"
    if WEIGHTS_ENV_VAR not in os.environ and SHARED_WEIGHTS.exists():
        os.environ[WEIGHTS_ENV_VAR] = str(SHARED_WEIGHTS)

    batch = args.batch_size
    images = np.random.default_rng(0).integers(0, 256, (args.batches * batch, 28, 28, 1)).astype("uint8")
    folded_call = inception.ConvBatchNormReLU.call
    extractors = {}
    for name, call in [("four passes", four_pass_call), ("folded", folded_call)]:
        inception.ConvBatchNormReLU.call = call  # read when the extractor's function is traced, just below
        extractors[name] = inception.InceptionFeatures(batch_size=batch)
        extractors[name](images[:batch])
    inception.ConvBatchNormReLU.call = folded_call

    print(f"{cpu_description()}; {keras.backend.backend()} backend, batch {batch}, grappler {grappler}")
    features = {}
    for round_ in range(args.rounds):
        for name in list(extractors)[:: 1 if round_ % 2 == 0 else -1]:
            start = time.perf_counter()
            features[name] = extractors[name](images)
            print(f"round {round_}  {name:<12} {len(images) / (time.perf_counter() - start):6.1f} img/s", flush=True)
    difference = np.abs(features["four passes"] - features["folded"]).max()
    print(f"largest feature difference between the two forms: {difference:.2g}")


if __name__ == "__main__":
    main()
