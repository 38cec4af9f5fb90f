"""The main job: train a small class-conditional MNIST diffusion model.

Writes to --out (default runs/mnist):
  samples.png          10 rows (digits 0-9) of guided samples (w = 2) of the final model
  grids/epoch_*.png    a grid per epoch, generated rows over real rows
  curves.png           the loss curve (against updates and training seconds)
  model.keras          the saved model (EMA weights included)
and prints the FID of --eval-samples generated digits against as many MNIST
test digits, and their class accuracy (the share that a digit classifier,
`kd.metrics.mnist_classifier()`, trained and cached on first use, assigns to
the requested digit).

The default budget (3,000 updates of batch 64 over 48,000 digits, the 0.30 M-
parameter `UNet.preset("micro")`, v-prediction, the cosine noise schedule, Adam
warming up to 1e-2 and decaying to 0 by the last update: the network and recipe
that won in docs/lab_notes.md) takes 11-14 minutes of training on a 2-core
AVX-512 CPU, plus the evaluation (3 minutes; the first run also trains the digit
classifier and computes the test statistics once, about 4 minutes more), and
reached FID 11.86 and 13.13 (N = 2048, two training seeds) with 97.0 and 97.7 %
class accuracy (a peak of 7e-3: 12.36 and 13.37; 3e-3: 13.96 and 14.49).
`--preset mnist --epochs 30 --limit 0 --batch-size 128 --learning-rate 2e-4`
is the thesis-sized run (hours on a CPU, minutes on a GPU).

Data: MNIST comes from $KERAS_DIFFUSION_DATA_DIR/mnist.npz when set (or
--data-dir), else from tensorflow-datasets / keras.datasets (downloads).

Example:
    python examples/train_mnist.py --epochs 3 --out runs/mnist
"""

import argparse
import os
import time
import warnings

import keras
import numpy as np

import keras_diffusion as kd


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/mnist", help="output folder")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--limit", type=int, default=48000, help="training digits to use (0: all 60,000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam's peak learning rate (default: the preset's measured one, 1e-2 for micro, 2e-3 "
                        "for tiny, else 2e-4; kd.training.peak_learning_rate)")  # fmt: skip
    parser.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                        help="cosine: 5 %% warm-up, then cosine decay to 0 at the last update")  # fmt: skip
    parser.add_argument("--schedule", choices=["cosine", "linear"], default="cosine", help="noise schedule, T = 1000")
    parser.add_argument(
        "--preset", choices=["micro", "tiny", "mnist"], default="micro", help="kd.models.UNet.preset name"
    )
    parser.add_argument("--guidance-scale", type=float, default=2.0, help="w of the final sample grid")
    parser.add_argument("--sampler", choices=kd.samplers.available(), default=kd.samplers.RECOMMENDED,
                        help="sampler of the grids")  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="sampler steps of the grids (default: the sampler's)")
    parser.add_argument("--data-dir", default=None, help="folder with mnist.npz (default $KERAS_DIFFUSION_DATA_DIR)")
    parser.add_argument("--eval-samples", type=int, default=2048, help="samples for the final FID (0: no evaluation)")
    parser.add_argument("--eval-sampler", choices=kd.samplers.available(), default=kd.samplers.RECOMMENDED)
    parser.add_argument("--eval-steps", type=int, default=10, help="sampler steps of the evaluated samples")
    parser.add_argument("--eval-guidance-scale", type=float, default=0.0, help="w of the evaluated samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or args.limit < 0 or (args.steps or 1) < 1 or args.eval_steps < 1:
        parser.error("--epochs, --batch-size, --steps and --eval-steps must be >= 1 and --limit >= 0")
    if args.eval_samples < 0 or args.eval_samples == 1:
        parser.error("--eval-samples must be 0 (no evaluation) or >= 2")
    return args


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    images, labels = kd.datasets.load("mnist", split="train", data_dir=args.data_dir, limit=args.limit or None)
    real_images, _ = kd.datasets.load("mnist", split="test", data_dir=args.data_dir, limit=32)

    unet = kd.models.UNet.preset(args.preset)
    model = kd.DiffusionModel(
        unet, schedule=args.schedule, timesteps=1000, ema_decay=0.999, class_dropout=0.1, seed=args.seed
    )
    updates = args.epochs * -(-len(images) // args.batch_size)
    model.compile(optimizer=kd.training.optimizer_for_run(updates, args.preset, args.learning_rate, args.lr_schedule))
    print(f"Training a {unet.count_params():,}-parameter U-Net on {len(images):,} digits for {args.epochs} epochs "
          f"({keras.backend.backend()} backend).")  # fmt: skip
    callbacks = [
        kd.callbacks.ImageGridCallback(
            os.path.join(args.out, "grids"), labels=[0, 1, 2, 3], real_images=real_images,
            sampling=kd.samplers.Sampling(args.sampler, steps=args.steps, guidance_scale=args.guidance_scale),
        ),  # fmt: skip
        kd.callbacks.TrainingCurvesCallback(os.path.join(args.out, "curves.png")),
    ]
    start = time.perf_counter()
    model.fit(images, labels, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, callbacks=callbacks, verbose=2)
    print(f"Trained in {time.perf_counter() - start:.0f} s.")

    samples = model.generate(
        80, sampler=args.sampler, steps=args.steps,
        labels=np.repeat(np.arange(10), 8), guidance_scale=args.guidance_scale, seed=args.seed,
    )  # fmt: skip
    grid_path = os.path.join(args.out, "samples.png")
    kd.callbacks.save_image_atomically(grid_path, kd.callbacks.make_image_grid(samples, columns=8))
    model_path = os.path.join(args.out, "model.keras")
    kd.data.files.save_model_atomically(model, model_path)  # never a half-written model.keras
    print(f"Wrote {grid_path} and {model_path}.")
    if args.eval_samples:
        evaluate(model, args)


def evaluate(model, args, feature_extractor=None, classifier=None):
    """Prints the FID of `args.eval_samples` samples against as many test digits, and their class accuracy.

    `feature_extractor` and `classifier` default to the FID Inception network
    and `kd.metrics.mnist_classifier()` (trained and cached on first use).
    """
    start = time.perf_counter()
    test_images, _ = kd.datasets.load("mnist", split="test", data_dir=args.data_dir, limit=args.eval_samples)
    # Cached on disk (~/.keras/keras_diffusion/fid_stats), so later runs skip the real half of the work.
    real = kd.metrics.FID(feature_extractor).real_statistics(
        test_images, dataset_name="mnist", split="test", verbose=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # N < 2048 only when asked for
        fid = kd.callbacks.FIDCallback(
            real, num_samples=args.eval_samples, feature_extractor=feature_extractor,
            sampling=kd.samplers.Sampling(
                args.eval_sampler, steps=args.eval_steps, guidance_scale=args.eval_guidance_scale
            ),
            classifier=(
                classifier if classifier is not None else kd.metrics.mnist_classifier(data_dir=args.data_dir, verbose=1)
            ),
            seed=args.seed, verbose=2,
        )  # fmt: skip
    fid.set_model(model)
    results = fid.evaluate()
    print(
        f"FID {results['fid']:.2f} (N = {args.eval_samples} generated vs {len(test_images)} MNIST test digits; "
        f"{args.eval_sampler}, {args.eval_steps} steps, w = {args.eval_guidance_scale:g}), class accuracy "
        f"{results['class_accuracy']:.1%}; evaluated in {time.perf_counter() - start:.0f} s on "
        f"{kd.runtime.cpu_description()}."
    )
    return results


if __name__ == "__main__":
    main()
