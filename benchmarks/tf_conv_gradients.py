"""TensorFlow only: a 3x3 convolution's forward pass, input gradient and weight gradient, timed apart.

Usage:
    python benchmarks/tf_conv_gradients.py

The counterpart of `jax_conv_weight_gradient.py` for TensorFlow: at the
probe U-Net's sizes (batch 128, NHWC, "SAME" padding) it times
`tf.nn.conv2d` (`fwd`), `Conv2DBackpropInput` (`xgrad`) and
`Conv2DBackpropFilter` (`wgrad`), each in its own `tf.function` without
XLA (what the training step runs: oneDNN kernels on a CPU). Best of 3 runs
of 10 calls after a warm-up call; GFLOP/s counts the convolution's 2·MACs.
"""

import argparse
import os
import time

import numpy as np
import tensorflow as tf

BATCH = 128
SIZES = [(28, 32, 32), (28, 96, 32), (14, 128, 64), (7, 64, 64)]  # (side, input channels, output channels)


def best_milliseconds(function, *args, number=10, repeats=3):
    function(*args).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            out = function(*args)
        out.numpy()
        best = min(best, (time.perf_counter() - start) / number)
    return 1000 * best


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print(f"tensorflow {tf.__version__}, {len(os.sched_getaffinity(0))} CPUs usable; batch {BATCH}")
    rng = np.random.default_rng(0)
    for side, c_in, c_out in SIZES:
        x = tf.constant(rng.normal(size=(BATCH, side, side, c_in)).astype("float32"))
        kernel = tf.constant(rng.normal(size=(3, 3, c_in, c_out)).astype("float32") * 0.1)
        upstream = tf.constant(rng.normal(size=(BATCH, side, side, c_out)).astype("float32"))
        strides = [1, 1, 1, 1]
        cases = {
            "fwd": (tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "SAME")), (x, kernel)),
            "xgrad": (tf.function(lambda k, dy: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=x.shape, filter=k, out_backprop=dy, strides=strides, padding="SAME")), (kernel, upstream)),
            "wgrad": (tf.function(lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=kernel.shape, out_backprop=dy, strides=strides, padding="SAME")), (x, upstream)),
        }  # fmt: skip
        gflop = 2 * BATCH * side * side * c_in * c_out * 9 / 1e9
        figures = []
        for name, (function, args) in cases.items():
            milliseconds = best_milliseconds(function, *args)
            figures.append(f"{name} {milliseconds:.1f} ms ({gflop / milliseconds * 1e3:.0f} GFLOP/s)")
        print(f"{side}x{side} {c_in}->{c_out}: " + "  ".join(figures), flush=True)


if __name__ == "__main__":
    main()
