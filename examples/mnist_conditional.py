"""The thesis' MNIST application (section 4.1): a class-conditional DDPM with guidance.

A U-Net conditioned on the digit is trained with class dropout (the null class
for classifier-free guidance), its loss and FID are logged every epoch, a grid
is saved every epoch, and the final model is sampled at the guidance weights
w = 0, 0.5 and 2 of the thesis, from the same noise, into one figure.

Three presets (--preset; any option given explicitly overrides them):

thesis (the default; thesis 4.1 and the code it builds on,
TeaPearce/ConditionalDiffusionMNIST): 20 epochs over all 60,000 digits,
batch 256, Adam with learning rate 1e-4 decayed linearly to 0, T = 400 with
β linear from 1e-4 to 0.02, class dropout 0.1, w ∈ {0, 0.5, 2}, grids and
FID with the ancestral DDPM sampler over all T steps and w = 0 (as the
thesis' figures), FID of 2,048 generated digits against the 10,000 test
digits every epoch. The U-Net is the library's MNIST preset
(`UNet.mnist()`: widths 32, 64, 128, attention at 7×7, 3.9 M parameters);
the thesis' ContextUnet used 128 features. About an hour on one GPU.

cpu: the library's measured recipe (v-prediction, the cosine noise schedule
with T = 1000, Adam warming up to 2e-3 over 5 % of the updates and decaying
to 0 on a cosine; docs/lab_notes.md) on the main job's 1.06 M-parameter
U-Net (32-64-64, attention only at 7×7 in the middle), 8 epochs of batch 64
(7,504 updates), FID (N = 1024) every 15 training minutes, grids, FID and
the sweep with the library's default sampler (`dpmpp_2m_sde`, 10 steps).
FID 4.09 at N = 10,000 (docs/lab_notes.md). About 1 h 40 min on 2 idle
AVX-512 cores, the evaluation below included (projected from the idle speed;
measured: 2 h 30 min on a CPU shared with test runs).

quick: the same pipeline at a tiny size (512 digits, 2 epochs, a 16-32-32
U-Net, 10 DDIM steps, FID from 64 vs 256 images: far too few for a
meaningful value) in a few minutes on a CPU; CI runs it.

After training, the thesis and cpu presets measure the final FID of 10,000
generated digits (w = 0) against the 10,000 test digits, and the guidance
sweep: FID (N = 2048) and class accuracy (`kd.metrics.mnist_classifier()`,
trained and cached on first use) at each w. An EMA of the weights (decay
0.999) is used for sampling.

Writes to --out (default runs/mnist_conditional):
  grids/epoch_NNNN.png   every epoch: 4 rows of generated digits, one digit 0-9
                         per column, over 4 rows of real digits (thesis Figs. 11-12)
  curves.png             loss and FID against updates and training seconds
                         (thesis Figs. 9-10 and 13-14)
  guidance_sweep.png     the final model at w = 0, 0.5 and 2, same noise, one
                         figure, with each w's FID and class accuracy
  history.json           loss (and FID when per epoch) per epoch
  results.json           every FID with its updates, seconds and N; the final
                         FID; the guidance sweep; the machine
  model.keras            the trained model (EMA weights included)

Data: MNIST from $KERAS_DIFFUSION_DATA_DIR/mnist.npz (or --data-dir), else
tensorflow-datasets / keras.datasets. FID needs the Inception weights
($KERAS_DIFFUSION_FID_WEIGHTS, or a download converted once with PyTorch).

Example:
    python examples/mnist_conditional.py --quick --out runs/mnist_quick
    python examples/mnist_conditional.py --preset cpu    # converged on a 2-core CPU
    python examples/mnist_conditional.py                 # the thesis-sized run
"""

import argparse
import io
import json
import math
import os
import time
import warnings

import keras
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import keras_diffusion as kd
from keras_diffusion.data.files import save_model_atomically, write_bytes_atomically

PRESETS = {
    # The thesis' settings (section 4.1); about an hour on one GPU.
    "thesis": dict(
        epochs=20, batch_size=256, learning_rate=1e-4, lr_schedule="linear", schedule="linear", timesteps=400, limit=0, widths=(32, 64, 128), num_res_blocks=2,
        attention=True, sampler="ddpm", steps=400, fid_samples=2048, fid_real=10000, fid_every_minutes=0.0,
        final_fid_samples=10000, sweep_samples=2048,
    ),
    # The converged CPU run of docs/lab_notes.md: the library's measured recipe and the main job's 1.06 M U-Net,
    # 8 epochs of batch 64 (7,504 updates): under 2 hours on 2 cores, evaluation included.
    "cpu": dict(
        epochs=8, batch_size=64, learning_rate=2e-3, lr_schedule="warmup_cosine", schedule="cosine", timesteps=1000,
        limit=0, widths=(32, 64, 64), num_res_blocks=1, attention=False, sampler="dpmpp_2m_sde", steps=10,
        fid_samples=1024, fid_real=10000, fid_every_minutes=15.0, final_fid_samples=10000, sweep_samples=2048,
    ),
    # The same pipeline at a tiny size, for CI.
    "quick": dict(
        epochs=2, batch_size=64, learning_rate=1e-3, lr_schedule="linear", schedule="linear", timesteps=400, limit=512, widths=(16, 32, 32), num_res_blocks=1,
        attention=True, sampler="ddim", steps=10, fid_samples=64, fid_real=256, fid_every_minutes=0.0,
        final_fid_samples=0, sweep_samples=0,
    ),
}  # fmt: skip
FULL, QUICK = PRESETS["thesis"], PRESETS["quick"]
GRID_ROWS = 4  # generated rows over as many real rows, as in the thesis' figures
NUM_CLASSES = 10


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="thesis", help="default settings (see above)")
    parser.add_argument("--quick", action="store_true", help="the same as --preset quick")
    parser.add_argument("--out", default="runs/mnist_conditional", help="output folder")
    parser.add_argument("--epochs", type=int, help="passes over the training digits")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--learning-rate", type=float, help="Adam's initial (linear) or peak (warmup_cosine) rate")
    parser.add_argument("--lr-schedule", choices=["linear", "warmup_cosine"],
                        help="linear: decayed linearly to 0; warmup_cosine: kd.learning_rates.warmup_cosine")
    parser.add_argument("--schedule", choices=["linear", "cosine"], help="noise schedule (linear: β from 1e-4 to 0.02)")
    parser.add_argument("--timesteps", type=int, help="T")
    parser.add_argument("--limit", type=int, help="training digits (0: all 60,000)")
    parser.add_argument("--widths", type=lambda s: tuple(int(w) for w in s.split(",")), help="U-Net channels per level")
    parser.add_argument("--num-res-blocks", type=int, help="residual blocks per U-Net level")
    parser.add_argument("--sampler", choices=kd.samplers.available(), help="sampler of grids, FID and the sweep")
    parser.add_argument("--steps", type=int, help="sampler steps (T: the whole chain)")
    parser.add_argument("--fid-samples", type=int, help="generated digits per FID during training (0: no FID)")
    parser.add_argument("--fid-real", type=int, help="test digits for FID")
    parser.add_argument("--fid-every-minutes", type=float, help="FID every this many training minutes (0: per epoch)")
    parser.add_argument("--final-fid-samples", type=int, help="generated digits of the final FID at w = 0 (0: none)")
    parser.add_argument("--sweep-samples", type=int, help="digits per guidance weight for FID + class accuracy (0: none)")
    parser.add_argument("--guidance-weights", default="0,0.5,2", help="the w of the sweep")
    parser.add_argument("--class-dropout", type=float, default=0.1)
    parser.add_argument("--data-dir", default=None, help="folder with mnist.npz (default $KERAS_DIFFUSION_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        args.preset = "quick"
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    args.guidance_weights = [float(w) for w in args.guidance_weights.split(",")]
    if min(args.epochs, args.batch_size, args.steps, args.timesteps) < 1 or args.limit < 0 or args.steps > args.timesteps:
        parser.error("--epochs, --batch-size, --timesteps and --steps must be >= 1, --steps <= --timesteps, --limit >= 0")
    if min(args.fid_samples, args.final_fid_samples, args.sweep_samples, args.fid_every_minutes) < 0:
        parser.error("--fid-samples, --final-fid-samples, --sweep-samples and --fid-every-minutes must be >= 0")
    if args.final_fid_samples > args.fid_real:
        parser.error(f"--final-fid-samples {args.final_fid_samples} > --fid-real {args.fid_real}: compare equal N")
    return args


def digit_columns(rows: int) -> np.ndarray:
    """Labels of a grid with one digit per column: 0..9 repeated `rows` times."""
    return np.tile(np.arange(NUM_CLASSES), rows)


def real_digit_columns(images: np.ndarray, labels: np.ndarray, rows: int) -> np.ndarray:
    """`rows` real examples of each digit, laid out like `digit_columns(rows)`."""
    per_digit = [images[labels == digit][:rows] for digit in range(NUM_CLASSES)]
    return np.stack(per_digit, axis=1).reshape((rows * NUM_CLASSES,) + images.shape[1:])


class DigitGridCallback(keras.callbacks.Callback):
    """Every epoch: generated digits 0-9 per column over real ones (the thesis' grid layout).

    Args:
        directory: where `epoch_NNNN.png` go.
        real: real images laid out by `real_digit_columns`.
        sampling: the `kd.samplers.Sampling` of the grids.
        seed: the grids' seed, the same every epoch.
    """

    def __init__(self, directory, real, sampling, seed):
        super().__init__()
        self.directory, self.real, self.sampling, self.seed = directory, real, sampling, seed

    def on_epoch_end(self, epoch, logs=None):
        generated = self.model.generate(len(self.real), labels=digit_columns(GRID_ROWS), seed=self.seed, **self.sampling.arguments())
        save_grid_over_real(os.path.join(self.directory, f"epoch_{epoch + 1:04d}.png"), generated, self.real)


def save_grid_over_real(path, generated, real):
    top = kd.callbacks.make_image_grid(generated, NUM_CLASSES)
    band = np.full((4, top.shape[1], top.shape[2]), 0.5, dtype=np.float32)
    kd.callbacks.save_image_atomically(path, np.concatenate([top, band, kd.callbacks.make_image_grid(real, NUM_CLASSES)]))


def save_guidance_sweep(path, model, weights, sampling, seed, scores=()):
    """One figure: the same noise and labels sampled at each guidance weight w."""
    figure = Figure(figsize=(3.2 * len(weights), 1.6), dpi=150)
    FigureCanvasAgg(figure)
    for index, weight in enumerate(weights):
        images = model.generate(GRID_ROWS * NUM_CLASSES, labels=digit_columns(GRID_ROWS), seed=seed,
                                 **sampling.replace(guidance_scale=weight).arguments())
        axes = figure.add_subplot(1, len(weights), index + 1)
        axes.imshow(kd.callbacks.make_image_grid(images, NUM_CLASSES)[..., 0], cmap="gray", vmin=0, vmax=1)
        title = f"w = {weight:g}"
        if scores:
            title += f": FID {scores[index]['fid']:.1f}, {scores[index]['class_accuracy']:.1%} correct"
        axes.set_title(title, fontsize=8)
        axes.axis("off")
    figure.suptitle("Classifier-free guidance: ε̂ = (1 + w) ε(x, c) − w ε(x, ∅)", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomically(path, buffer.getvalue())


def main(argv=None, feature_extractor=None, classifier=None):
    """Runs the application and returns the trained model.

    `feature_extractor` replaces the Inception network of FID and `classifier`
    the digit classifier of the sweep (the tests pass cheap ones).
    """
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    images, labels = kd.datasets.load("mnist", split="train", data_dir=args.data_dir, limit=args.limit or None)
    test_images, test_labels = kd.datasets.load("mnist", split="test", data_dir=args.data_dir)

    unet = kd.models.UNet.mnist(
        widths=args.widths, num_res_blocks=args.num_res_blocks, norm_groups=math.gcd(8, *args.widths),
        **({} if args.attention else dict(attention_resolutions=())),
    )  # fmt: skip
    if args.schedule == "linear":
        schedule = kd.schedules.LinearSchedule(args.timesteps, beta_start=1e-4, beta_end=0.02)
    else:
        schedule = kd.schedules.CosineSchedule(args.timesteps)
    model = kd.DiffusionModel(unet, schedule=schedule, ema_decay=0.999, class_dropout=args.class_dropout, seed=args.seed)
    updates = args.epochs * math.ceil(len(images) / args.batch_size)
    schedule = "linear" if args.lr_schedule == "linear" else "cosine"
    model.compile(optimizer=kd.training.optimizer_for_run(updates, learning_rate=args.learning_rate, schedule=schedule))
    sampling = kd.samplers.Sampling(args.sampler, steps=args.steps)
    real = test_images[: args.fid_real]
    if args.fid_samples or args.final_fid_samples or args.sweep_samples:
        # Computed once here (and cached on disk under the Inception network) for every FID below.
        real = kd.metrics.FID(feature_extractor).real_statistics(
            real, dataset_name=None if feature_extractor else "mnist", split="test"
        )
    callbacks = []
    if args.fid_samples:
        every = dict(every_seconds=60 * args.fid_every_minutes) if args.fid_every_minutes else {}
        fid_callback = kd.callbacks.FIDCallback(
            real, num_samples=args.fid_samples, sampling=sampling, seed=args.seed,
            feature_extractor=feature_extractor, verbose=1, **every,
        )  # fmt: skip
        callbacks.append(fid_callback)
    callbacks += [
        DigitGridCallback(
            os.path.join(args.out, "grids"), real_digit_columns(test_images, test_labels, GRID_ROWS),
            sampling, args.seed,
        ),  # fmt: skip
        kd.callbacks.TrainingCurvesCallback(os.path.join(args.out, "curves.png"), metrics=["loss", "fid"]),
    ]
    print(f"Training a {unet.count_params():,}-parameter conditional U-Net on {len(images):,} digits for "
          f"{args.epochs} epochs ({updates:,} updates of batch {args.batch_size}), T = {args.timesteps} "
          f"({keras.backend.backend()} backend, {kd.runtime.cpu_description()}).")  # fmt: skip
    start = time.perf_counter()
    history = model.fit(
        images, labels, batch_size=args.batch_size, epochs=args.epochs, shuffle=True, callbacks=callbacks, verbose=2
    )
    seconds = time.perf_counter() - start
    print(f"Trained in {seconds:.0f} s.")
    save_model_atomically(model, os.path.join(args.out, "model.keras"))
    values = {name: [float(v) for v in series] for name, series in history.history.items()}
    write_bytes_atomically(os.path.join(args.out, "history.json"), json.dumps(values, indent=1).encode())

    results = dict(
        preset=args.preset, updates=updates, batch_size=args.batch_size, wall_seconds=round(seconds, 1),
        machine=kd.runtime.cpu_description(), backend=keras.backend.backend(), sampler=args.sampler, steps=args.steps,
        curve=fid_callback.history if args.fid_samples else [],
    )  # fmt: skip
    if args.final_fid_samples:
        final = evaluate(model, real, args.final_fid_samples, 0.0, sampling, args.seed, feature_extractor)
        results["final"] = dict(guidance_scale=0.0, num_samples=args.final_fid_samples, num_real=args.fid_real, **final)
        print(f"Final FID {final['fid']:.2f} (N = {args.final_fid_samples} vs {args.fid_real} test digits, w = 0).")
    sweep = []
    if args.sweep_samples:
        classifier = classifier if classifier is not None else kd.metrics.mnist_classifier(data_dir=args.data_dir)
        for weight in args.guidance_weights:
            scores = evaluate(model, real, args.sweep_samples, weight, sampling, args.seed, feature_extractor, classifier)
            sweep.append(dict(guidance_scale=weight, num_samples=args.sweep_samples, num_real=args.fid_real, **scores))
            print(f"w = {weight:g}: FID {scores['fid']:.2f}, class accuracy {scores['class_accuracy']:.1%} "
                  f"(N = {args.sweep_samples} vs {args.fid_real}).")  # fmt: skip
        results["sweep"] = sweep
    sweep_path = os.path.join(args.out, "guidance_sweep.png")
    save_guidance_sweep(sweep_path, model, args.guidance_weights, sampling, args.seed, sweep)
    if args.final_fid_samples or args.sweep_samples or args.fid_samples:
        write_bytes_atomically(os.path.join(args.out, "results.json"), json.dumps(results, indent=1).encode())
    print(f"Wrote grids/, curves.png, {os.path.basename(sweep_path)}, history.json, results.json and model.keras "
          f"in {args.out}.")  # fmt: skip
    return model


def evaluate(model, real, num_samples, guidance_scale, sampling, seed, feature_extractor, classifier=None):
    """FID of `num_samples` balanced-class digits at guidance weight w (and their class accuracy)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # N < 2048 only when asked for
        callback = kd.callbacks.FIDCallback(
            real, num_samples=num_samples, sampling=sampling.replace(guidance_scale=guidance_scale), seed=seed,
            feature_extractor=feature_extractor, classifier=classifier,
        )  # fmt: skip
    callback.set_model(model)
    return {name: float(value) for name, value in callback.evaluate().items()}


if __name__ == "__main__":
    main()
