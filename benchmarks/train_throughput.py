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
from keras_diffusion.runtime import cpu_description, tensorflow_graph_rewrites

PRESETS = {
    "mnist": lambda **overrides: kd.models.UNet.preset("mnist", **overrides),
    # The main job's network (0.30 M; 0.27 M with --upsampling nearest_conv, its upsampling until 2026-12-02).
    "micro": lambda **overrides: kd.models.UNet.preset("micro", **overrides),
    "tiny": lambda **overrides: kd.models.UNet.preset("tiny", **overrides),  # the CLI's default (1.06 M)
    # The 1.4 M-parameter net the project's first CPU measurements used.
    "probe": lambda **overrides: kd.models.UNet(
        image_shape=(28, 28, 1), widths=(32, 64, 64), num_res_blocks=2, attention_resolutions=(7,),
        num_classes=10, norm_groups=8, **overrides,
    ),  # fmt: skip
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="mnist")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--upsampling", choices=kd.models.networks.unet.UPSAMPLING, default=None,
                        help="the decoder's upsampling (UNet's `upsampling`); default: the preset's")  # fmt: skip
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--grappler", choices=["on", "off"], default=None,
                        help="TensorFlow only: Grappler's rewriting of every traced graph; default: the library's "
                        "choice (off without a GPU, kd.runtime.skip_tensorflow_graph_rewrites)")  # fmt: skip
    args = parser.parse_args()
    rewrites = tensorflow_graph_rewrites(None if args.grappler is None else args.grappler == "on")
    grappler = "n/a" if rewrites is None else "on" if rewrites else "off"

    unet = PRESETS[args.preset](**({"upsampling": args.upsampling} if args.upsampling else {}))
    model = kd.DiffusionModel(unet, seed=0)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    model.compile(optimizer=kd.optimizers.Adam(2e-4), jit_compile=jit)
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

    print(f"backend      {keras.backend.backend()} (jit_compile={args.jit_compile}, grappler {grappler})")
    print(f"machine      {cpu_description()}")
    print(f"model        UNet preset {args.preset!r} ({unet.upsampling} upsampling), {unet.count_params():,} parameters")
    print(f"batch        {args.batch} x 28x28x1, {args.steps} timed steps after {args.warmup} warm-up steps")
    print(f"throughput   {args.batch * args.steps / seconds:.1f} img/s ({seconds / args.steps * 1000:.0f} ms/step)")


if __name__ == "__main__":
    main()
