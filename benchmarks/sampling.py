"""Sampling cost: `generate` wall time against `steps` x one compiled forward pass.

Usage: KERAS_BACKEND=jax python benchmarks/sampling.py [--batch 64] [--steps 10 50]

For each sampler and step count it prints the time of one `generate` call
(after a warm-up call that compiles the step) divided by the time of `steps`
back-to-back compiled forward passes of the same network on the same batch
(best of `--repeats` for both). A ratio
near 1 means the loop adds nothing to the network's own cost: no retracing
per step, no Python-side graph rebuilding.
"""

import argparse
import os
import platform
import time

import keras
import numpy as np

import keras_diffusion as kd
from keras_diffusion.runtime import compile_function


def best_of(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    unet = kd.models.UNet.mnist()
    model = kd.DiffusionModel(unet, seed=0)
    denoiser = model.denoiser
    trainable = [keras.ops.convert_to_tensor(v.value) for v in model.weight_averages.sets[0]]
    non_trainable = [keras.ops.convert_to_tensor(v.value) for v in denoiser.non_trainable_variables]
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(rng.standard_normal((args.batch, 28, 28, 1)).astype("float32"))
    t = keras.ops.convert_to_tensor(np.full((args.batch,), 500.0, "float32"))
    labels = keras.ops.convert_to_tensor(rng.integers(0, 10, args.batch).astype("int32"))
    forward = compile_function(lambda w, n, x, t, y: denoiser.stateless_call(w, n, [x, t, y], training=False)[0])

    def forward_passes(count):
        output = x
        for _ in range(count):
            output = forward(trainable, non_trainable, x, t, labels)
        keras.ops.convert_to_numpy(output)

    forward_passes(1)
    print(f"backend {keras.backend.backend()}, {platform.machine()}, {os.cpu_count()} CPUs; "
          f"UNet.mnist() {unet.count_params():,} params, batch {args.batch}")  # fmt: skip
    print(f"{'sampler':8} {'steps':>5} {'generate s':>11} {'steps x forward s':>18} {'ratio':>6}")
    for sampler in ("ddim", "ddpm"):
        for steps in args.steps:
            def run():
                model.generate(args.batch, sampler=sampler, steps=steps, labels=np.arange(args.batch) % 10, seed=0)

            run()  # compiles the step function once for this sampler
            seconds = best_of(run, args.repeats)
            ideal = best_of(lambda: forward_passes(steps), args.repeats)
            print(f"{sampler:8} {steps:5d} {seconds:11.3f} {ideal:18.3f} {seconds / ideal:6.3f}")


if __name__ == "__main__":
    main()
