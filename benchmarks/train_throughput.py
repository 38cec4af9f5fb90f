"""Training throughput (images/s) of DiffusionModel on the backend in use.

Usage: KERAS_BACKEND=jax python benchmarks/train_throughput.py [--preset mnist|micro|tiny|probe] [--batch 128]

Prints the parameter count, the machine and img/s over timed steps after a
warm-up (the first steps include compilation and are not counted).
"""

import argparse
import time

import keras
import numpy as np

import keras_diffusion as kd
from keras_diffusion.backend import cpu_description

PRESETS = {
    "mnist": lambda: kd.models.UNet.mnist(),
    "micro": lambda: kd.models.UNet.preset("micro"),  # the main job's network (0.27 M)
    "tiny": lambda: kd.models.UNet.preset("tiny"),  # the CLI's default (1.06 M)
    # The 1.4 M-parameter net the project's first CPU measurements used.
    "probe": lambda: kd.models.UNet(
        image_shape=(28, 28, 1), widths=(32, 64, 64), num_res_blocks=2, attention_resolutions=(7,),
        num_classes=10, norm_groups=8,
    ),  # fmt: skip
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--grappler", choices=["on", "off"], default="on",
                        help="TensorFlow only: off skips Grappler's rewriting of every traced graph (as the tests do)")  # fmt: skip
    args = parser.parse_args()
    if args.grappler == "off" and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

    unet = PRESETS[args.preset]()
    model = kd.DiffusionModel(unet, seed=0)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(optimizer=keras.optimizers.Adam(2e-4), jit_compile=jit)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.batch, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, args.batch).astype("int32")

    for _ in range(args.warmup):
        model.train_on_batch(images, labels)
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = model.train_on_batch(images, labels)
    float(loss)  # wait for the device
    seconds = time.perf_counter() - start

    print(f"backend      {keras.backend.backend()} (jit_compile={args.jit_compile}, grappler {args.grappler})")
    print(f"machine      {cpu_description()}")
    print(f"model        UNet preset {args.preset!r}, {unet.count_params():,} parameters")
    print(f"batch        {args.batch} x 28x28x1, {args.steps} timed steps after {args.warmup} warm-up steps")
    print(f"throughput   {args.batch * args.steps / seconds:.1f} img/s ({seconds / args.steps * 1000:.0f} ms/step)")


if __name__ == "__main__":
    main()
