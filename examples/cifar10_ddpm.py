"""The thesis' CIFAR-10 application (section 4.2): a DDPM with attention.

A U-Net with residual, attention, down- and up-sampling blocks is trained on
CIFAR-10 with the simplified ε-loss; loss and FID are logged every epoch, a
grid of samples over real images is saved every epoch, and the final model
draws the denoising sequence of the thesis: airplanes (class 0) from pure noise
x_T to x_0 along the full ancestral DDPM chain, as one figure.

Full settings (the defaults): thesis 4.2, whose hyper-parameter table (batch
size, β initial/final, feature map size, groups, heads, blocks, learning rate,
epochs, T) names the settings of the code it builds on,
pjborowiecki/COMP3547-Deep-Learning `ddpm/config.py`: batch 64, β linear from
1e-4 to 0.01, T = 1000, learning rate 2e-5 (Adam), feature maps 64 multiplied
by (1, 2, 2, 4) per level, i.e. widths 64, 128, 256, 1024, one residual block
per level, attention at the lowest (4×4) level, 32 GroupNorm groups, one head,
dropout 0.1 (140 M parameters in this library's U-Net); 100 epochs (the
thesis' second run, 4.2.2; its first ran 20). `--preset ddpm` uses DDPM's own
CIFAR-10 network instead (`UNet.cifar10()`, 35.7 M parameters). Unlike the
thesis' unconditional model, this one is class-conditional (class dropout 0.1,
sampled with w = 0 unless --guidance-scale is given), so that the airplane class
can be asked for. Grids and FID (2,048 generated images against the 10,000 test
images, every epoch) use 100 DDIM steps to keep per-epoch evaluation
affordable; the denoising sequence uses all T ancestral steps.

Writes to --out (default runs/cifar10_ddpm):
  grids/epoch_NNNN.png    every epoch: one row per class (airplane, automobile,
                          bird, cat) over 4 rows of real images (thesis Figs. 18-20, 25-30)
  curves.png              loss and FID per epoch (thesis Figs. 15-17, 21-24)
  denoising_airplane.png  x_T -> x_0 snapshots of airplane samples (thesis Figs. 31-36)
  history.json            loss, FID per epoch
  model.keras             the trained model (EMA weights included)

--quick runs the same pipeline at a tiny size (256 images, 2 epochs, a 16-32-32
U-Net, 10 DDIM steps for grids, a 20-step DDPM chain for the sequence, FID
from 32 vs 128 images: far too few for a meaningful value) in minutes on a CPU.
Any option given explicitly overrides the --quick or full default.

Data: CIFAR-10 from $KERAS_DIFFUSION_DATA_DIR/cifar10.npz (or --data-dir),
else tensorflow-datasets, else keras.datasets (both download about 170 MB).

Example:
    python examples/cifar10_ddpm.py --quick --out runs/cifar_quick
    python examples/cifar10_ddpm.py --epochs 20          # the thesis' first run
"""

import argparse
import io
import json
import math
import os
import time

import keras
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import keras_diffusion as kd
from keras_diffusion.data.files import save_model_atomically, write_bytes_atomically

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
AIRPLANE = 0
PRESETS = {
    # The thesis' network (its base code's EpsilonTheta sizes).
    "thesis": dict(widths=(64, 128, 256, 1024), num_res_blocks=1, attention_resolutions=(4,), norm_groups=32, dropout=0.1),
    # DDPM's CIFAR-10 network, kd.models.UNet.cifar10().
    "ddpm": dict(widths=(128, 256, 256, 256), num_res_blocks=2, attention_resolutions=(16,), norm_groups=32, dropout=0.1),
    "quick": dict(widths=(16, 32, 32), num_res_blocks=1, attention_resolutions=(8,), norm_groups=8, dropout=0.0),
}
FULL = dict(
    epochs=100, batch_size=64, learning_rate=2e-5, timesteps=1000, beta_end=0.01, limit=0, preset="thesis",
    steps=100, sequence_steps=1000, fid_samples=2048, fid_real=10000,
)  # fmt: skip
QUICK = dict(
    epochs=2, batch_size=32, learning_rate=1e-3, timesteps=1000, beta_end=0.01, limit=256, preset="quick",
    steps=10, sequence_steps=20, fid_samples=32, fid_real=128,
)  # fmt: skip


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a CPU / CI run")
    parser.add_argument("--out", default="runs/cifar10_ddpm", help="output folder")
    parser.add_argument("--epochs", type=int, help="full 100 (the thesis' second run; 20 for its first)")
    parser.add_argument("--batch-size", type=int, help="full 64")
    parser.add_argument("--learning-rate", type=float, help="Adam learning rate (full 2e-5)")
    parser.add_argument("--timesteps", type=int, help="T (full 1000)")
    parser.add_argument("--beta-end", type=float, help="β_T of the linear schedule from β_1 = 1e-4 (full 0.01)")
    parser.add_argument("--limit", type=int, help="training images (0: all 50,000)")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="U-Net (full: thesis)")
    parser.add_argument("--steps", type=int, help="DDIM steps of grids and FID (full 100)")
    parser.add_argument("--sequence-steps", type=int, help="DDPM steps of the denoising sequence (full 1000 = T)")
    parser.add_argument("--snapshots", type=int, default=8, help="columns of the denoising sequence")
    parser.add_argument("--sequence-rows", type=int, default=4, help="airplanes in the denoising sequence")
    parser.add_argument("--fid-samples", type=int, help="generated images per FID evaluation (full 2048; 0: no FID)")
    parser.add_argument("--fid-real", type=int, help="test images for FID (full 10000)")
    parser.add_argument("--guidance-scale", type=float, default=0.0, help="w of grids, FID and the sequence")
    parser.add_argument("--data-dir", default=None, help="folder with cifar10.npz (default $KERAS_DIFFUSION_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.epochs, args.batch_size, args.steps, args.sequence_steps, args.snapshots, args.sequence_rows) < 1:
        parser.error("--epochs, --batch-size, --steps, --sequence-steps, --snapshots, --sequence-rows must be >= 1")
    if max(args.steps, args.sequence_steps) > args.timesteps or args.snapshots > args.sequence_steps:
        parser.error("--steps and --sequence-steps must be <= --timesteps, and --snapshots <= --sequence-steps")
    return args


def denoising_sequence(model, num_images, steps, snapshots, label, guidance_scale, seed):
    """Snapshots of x_t along one ancestral DDPM run, from the noisiest level to x_0.

    Uses `generate`'s per-step callback; the columns are evenly spaced steps
    of the chain, the first right after the first step from x_T and the last
    the sample x_0.

    Returns:
        (images (snapshots, num_images, H, W, C) in [0, 1], their timestep labels).
    """
    timesteps = kd.schedules.timestep_sequence(model.timesteps, steps)
    keep = set(np.round(np.linspace(0, steps - 1, snapshots)).astype(int).tolist())
    frames, names = [], []

    def record(index, x):
        if index in keep:
            frames.append(model.decode_samples(x))
            # After the step from (0-based) timestep t, x is the thesis' x_t (1-based; x_0 the data).
            names.append(f"x_{timesteps[index]}")

    model.generate(
        num_images, sampler="ddpm", steps=steps, labels=[label] * num_images, guidance_scale=guidance_scale,
        seed=seed, callback=record,
    )  # fmt: skip
    return np.stack(frames), names


def save_denoising_figure(path, frames, names, title):
    snapshots, rows = frames.shape[:2]
    figure = Figure(figsize=(1.1 * snapshots, 1.1 * rows + 0.5), dpi=150)
    FigureCanvasAgg(figure)
    for column in range(snapshots):
        for row in range(rows):
            axes = figure.add_subplot(rows, snapshots, row * snapshots + column + 1)
            axes.imshow(frames[column, row])
            axes.axis("off")
            if row == 0:
                axes.set_title(names[column], fontsize=8)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomically(path, buffer.getvalue())


def main(argv=None, feature_extractor=None):
    """Runs the application and returns the trained model.

    `feature_extractor` replaces the Inception network of FID (the tests pass a cheap one).
    """
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    images, labels = kd.datasets.load("cifar10", split="train", data_dir=args.data_dir, limit=args.limit or None)
    test_images, _ = kd.datasets.load("cifar10", split="test", data_dir=args.data_dir, limit=max(args.fid_real, 32))

    config = dict(PRESETS[args.preset])
    config["norm_groups"] = math.gcd(config["norm_groups"], *config["widths"])
    unet = kd.models.UNet(image_shape=(32, 32, 3), num_classes=len(CLASS_NAMES), **config)
    schedule = kd.schedules.LinearSchedule(args.timesteps, beta_start=1e-4, beta_end=args.beta_end)
    model = kd.DiffusionModel(unet, schedule=schedule, ema_decay=0.999, class_dropout=0.1, seed=args.seed)
    model.compile(optimizer=kd.optimizers.Adam(args.learning_rate))
    sampling = kd.samplers.Sampling("ddim", steps=args.steps, guidance_scale=args.guidance_scale)
    callbacks = []
    if args.fid_samples:
        callbacks.append(
            kd.callbacks.FIDCallback(
                test_images[: args.fid_real], num_samples=args.fid_samples, feature_extractor=feature_extractor,
                verbose=1, sampling=sampling, seed=args.seed,
            )  # fmt: skip
        )
    callbacks += [
        kd.callbacks.ImageGridCallback(
            os.path.join(args.out, "grids"), labels=[0, 1, 2, 3], columns=8, real_images=test_images[:32],
            sampling=sampling, seed=args.seed,
        ),
        kd.callbacks.TrainingCurvesCallback(os.path.join(args.out, "curves.png"), metrics=["loss", "fid"]),
    ]
    print(f"Training a {unet.count_params():,}-parameter U-Net ({args.preset}) on {len(images):,} CIFAR-10 images for "
          f"{args.epochs} epochs, batch {args.batch_size}, T = {args.timesteps} ({keras.backend.backend()} backend).")  # fmt: skip
    start = time.perf_counter()
    history = model.fit(
        images, labels, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, callbacks=callbacks, verbose=2
    )
    print(f"Trained in {time.perf_counter() - start:.0f} s.")

    frames, names = denoising_sequence(
        model, args.sequence_rows, args.sequence_steps, args.snapshots, AIRPLANE, args.guidance_scale, args.seed
    )
    sequence_path = os.path.join(args.out, "denoising_airplane.png")
    title = f"Denoising sequence, class airplane: {args.sequence_steps} ancestral DDPM steps from x_T to x_0"
    save_denoising_figure(sequence_path, frames, names, title)
    values = {name: [float(v) for v in series] for name, series in history.history.items()}
    write_bytes_atomically(os.path.join(args.out, "history.json"), json.dumps(values, indent=1).encode())
    save_model_atomically(model, os.path.join(args.out, "model.keras"))
    print(f"Wrote grids/, curves.png, {os.path.basename(sequence_path)}, history.json and model.keras in {args.out}.")
    return model


if __name__ == "__main__":
    main()
