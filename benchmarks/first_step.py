"""First-call latency: how long a new user waits for the first `fit` step and the first `generate`.

Usage: KERAS_BACKEND=tensorflow python benchmarks/first_step.py [--preset small|mnist] [--batch 64]

Each phase runs in a fresh model, so the figures include tracing and compilation:
- `fit, first step`: `model.fit` on one batch (trace + compile + one step), then the second step.
- `generate, first call`: `model.generate(batch, steps=20)` with the default sampler, then again.
Prints the CPU's speed-relevant extensions with every figure (an AVX2-only CPU is 2.5-4x slower).
"""

import argparse
import time

import keras
import numpy as np

import keras_diffusion as kd
from keras_diffusion.runtime import cpu_description, tensorflow_graph_rewrites

PRESETS = {
    # The speed issue's small U-Net: 2.7 M parameters, one res block, attention at 7x7.
    "small": lambda: kd.models.UNet(
        image_shape=(28, 28, 1), widths=(32, 64, 128), num_res_blocks=1, attention_resolutions=(7,),
        num_classes=10,
    ),  # fmt: skip
    "mnist": lambda: kd.models.UNet.mnist(),
}


def seconds(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--generate-steps", type=int, default=20)
    parser.add_argument("--grappler", choices=["on", "off"], default=None,
                        help="TensorFlow only: Grappler's rewriting of every traced graph; default: the library's "
                        "choice (off without a GPU, kd.runtime.skip_tensorflow_graph_rewrites)")  # fmt: skip
    args = parser.parse_args()
    rewrites = tensorflow_graph_rewrites(None if args.grappler is None else args.grappler == "on")
    grappler = "n/a" if rewrites is None else "on" if rewrites else "off"

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.batch, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, args.batch).astype("int32")

    start = time.perf_counter()
    unet = PRESETS[args.preset]()
    model = kd.DiffusionModel(unet, seed=0)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    build = time.perf_counter() - start
    first_fit = seconds(lambda: model.fit(images, labels, batch_size=args.batch, epochs=1, verbose=0))
    second_fit = seconds(lambda: model.fit(images, labels, batch_size=args.batch, epochs=1, verbose=0))

    fresh = kd.DiffusionModel(PRESETS[args.preset](), seed=0)
    sample = lambda: fresh.generate(args.batch, steps=args.generate_steps, labels=labels, seed=0)  # noqa: E731
    first_generate = seconds(sample)
    second_generate = seconds(sample)

    print(f"backend          {keras.backend.backend()}, keras {keras.__version__}, grappler {grappler}")
    print(f"machine          {cpu_description()}")
    print(f"model            UNet preset {args.preset!r}, {unet.count_params():,} parameters, batch {args.batch}")
    print(f"build + compile  {build:6.1f} s (model objects, no tracing)")
    print(f"fit, first step  {first_fit:6.1f} s   (second: {second_fit:.2f} s)")
    print(f"generate, first  {first_generate:6.1f} s   (second: {second_generate:.2f} s, "
          f"{args.generate_steps} steps of {kd.samplers.RECOMMENDED})")  # fmt: skip


if __name__ == "__main__":
    main()
