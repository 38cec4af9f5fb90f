"""The main job: train a small class-conditional MNIST diffusion model.

Writes to --out (default runs/mnist):
  samples.png          10 rows (digits 0-9) of guided DDIM samples, the final model
  grids/epoch_*.png    a grid per epoch, generated rows over real rows
  curves.png           the loss curve
  model.keras          the saved model (EMA weights included)

The default budget (3 epochs over 12,000 digits, batch 32, a 1.1 M-parameter
U-Net: about 1,100 updates) takes about 15 minutes on a 2-core CPU and gives
rough digits; `--preset mnist --epochs 30 --limit 0 --batch-size 128` is the
thesis-sized run (hours on a CPU, minutes on a GPU).

Data: MNIST comes from $KERAS_DIFFUSION_DATA_DIR/mnist.npz when set (or
--data-dir), else from tensorflow-datasets / keras.datasets (downloads).

Example:
    python examples/train_mnist.py --epochs 3 --out runs/mnist
"""

import argparse
import os
import time

import keras
import numpy as np

import keras_diffusion as kd

PRESETS = {
    # Small enough for a CPU: one residual block per level.
    "quick": dict(widths=(32, 64, 64), num_res_blocks=1, attention_resolutions=(7,), norm_groups=8, dropout=0.0),
    # The library's MNIST application preset (kd.models.UNet.mnist()).
    "mnist": {},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/mnist", help="output folder")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=12000, help="training digits to use (0: all 60,000)")
    parser.add_argument("--batch-size", type=int, default=32, help="small batches: more updates in a short budget")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    parser.add_argument("--guidance-scale", type=float, default=2.0, help="w of the final sample grid")
    parser.add_argument("--sampler", choices=kd.samplers.available(), default="ddim", help="sampler of the final grid")
    parser.add_argument("--eta", type=float, default=1.0, help="DDIM's eta for the final grid (1: stochastic)")
    parser.add_argument("--steps", type=int, default=50, help="sampler steps of the sample grids")
    parser.add_argument("--data-dir", default=None, help="folder with mnist.npz (default $KERAS_DIFFUSION_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.limit < 0 or args.steps < 1:
        parser.error("--epochs, --batch-size and --steps must be >= 1 and --limit >= 0")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    images, labels = kd.datasets.load("mnist", split="train", data_dir=args.data_dir, limit=args.limit or None)
    real_images, _ = kd.datasets.load("mnist", split="test", data_dir=args.data_dir, limit=32)

    unet = kd.models.UNet.mnist(**PRESETS[args.preset])
    model = kd.DiffusionModel(unet, schedule="linear", timesteps=1000, ema_decay=0.999, class_dropout=0.1, seed=args.seed)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
    print(f"Training a {unet.count_params():,}-parameter U-Net on {len(images):,} digits for {args.epochs} epochs "
          f"({keras.backend.backend()} backend).")  # fmt: skip
    callbacks = [
        kd.callbacks.ImageGridCallback(
            os.path.join(args.out, "grids"), labels=[0, 1, 2, 3], real_images=real_images, steps=args.steps,
            guidance_scale=args.guidance_scale, eta=args.eta,
        ),  # fmt: skip
        kd.callbacks.TrainingCurvesCallback(os.path.join(args.out, "curves.png")),
    ]
    start = time.perf_counter()
    model.fit(images, labels, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, callbacks=callbacks, verbose=2)
    print(f"Trained in {time.perf_counter() - start:.0f} s.")

    samples = model.generate(
        80, sampler=args.sampler, steps=args.steps, eta=args.eta if args.sampler == "ddim" else 0.0,
        labels=np.repeat(np.arange(10), 8), guidance_scale=args.guidance_scale, seed=args.seed,
    )  # fmt: skip
    grid_path = os.path.join(args.out, "samples.png")
    kd.callbacks.save_image_atomically(grid_path, kd.callbacks.make_image_grid(samples, columns=8))
    model_path = os.path.join(args.out, "model.keras")
    kd.metrics.atomic_files.save_model_atomically(model, model_path)  # never a half-written model.keras
    print(f"Wrote {grid_path} and {model_path}.")


if __name__ == "__main__":
    main()
