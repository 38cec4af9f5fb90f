"""FID and class accuracy against training updates and seconds, per training recipe (MNIST, conditional).

Usage:
    python benchmarks/recipes.py --recipes epsilon v min_snr --updates 800 --every 400 --out runs/recipes

Each recipe trains the same class-conditional U-Net from the same seed on the
MNIST training split, with `FIDCallback(every_n_updates=...)` scoring FID
(N generated against the first --num-real test digits, one fixed sampler, w = 0) and the class
accuracy of the samples (`kd.metrics.mnist_classifier()`). The recipes that
change only the loss (ε, v, min-SNR) cost the same per update, so their
curves against updates are also curves against seconds; each point also
carries the training seconds measured by a `TrainingClock` (time inside the
training batches, evaluations excluded), which are only comparable between
recipes run on an otherwise idle machine.

With `--seconds S` each recipe instead trains for about S seconds: its updates come from a
timed probe of 40 updates (all probes run first, back to back; an idle machine), and it is evaluated once at the end;
that is how networks of different cost (`narrow`, `wide`, ...) are compared at equal compute.

Writes `<out>/recipes.csv` (one row per evaluation) and `<out>/recipes.png`
(FID against updates and seconds), and prints the table with the CPU's
description.
"""

import argparse
import csv
import os
import time

import keras

import keras_diffusion as kd
from keras_diffusion.runtime import cpu_description

NETWORKS = {
    # UNet.preset("tiny"), 1.06 M parameters: one residual block per level, attention only in the middle (7x7).
    "small": ("tiny", {}),
    # The main job's earlier network: the same with attention after every 7x7 block (1.11 M).
    "small_attention": ("tiny", dict(attention_resolutions=(7,))),
    "mnist": ("mnist", {}),  # UNet.mnist(): 3.9 M parameters, two blocks per level, dropout 0.1
    # Width and depth of the tiny network, to compare at equal seconds (--seconds).
    # tiny at widths 16-32-32 with DDPM's upsampling: UNet.preset("micro") as measured until its upsampling changed.
    "narrow": ("micro", dict(upsampling="nearest_conv")),
    "medium": ("tiny", dict(widths=(24, 48, 48))),
    "wide": ("tiny", dict(widths=(48, 96, 96))),
    "two_levels": ("tiny", dict(widths=(32, 64))),  # 28 → 14 only
    "two_blocks": ("tiny", dict(num_res_blocks=2)),
    # 2x2 pixel patches as channels (patch_size=2): two levels at 14x14 and 7x7, a quarter of the positions.
    "patch2": ("micro", dict(patch_size=2, widths=(32, 32), upsampling="nearest_conv")),
    "patch2_32_64": ("micro", dict(patch_size=2, widths=(32, 64), upsampling="nearest_conv")),
    "patch2_64_64": ("micro", dict(patch_size=2, widths=(64, 64), upsampling="nearest_conv")),
    # The decoder's upsampling (UNet(upsampling=...)): the 3x3 convolution before the nearest-neighbour x2, or a
    # pixel shuffle to the next level's width, instead of DDPM's convolution at the higher resolution.
    "micro_conv_nearest": ("micro", dict(upsampling="conv_nearest")),
    "micro_pixel_shuffle": ("micro", dict(upsampling="pixel_shuffle")),
}

# name: (DiffusionModel arguments, optimizer arguments); every recipe starts from BASE.
BASE = dict(
    model=dict(prediction="epsilon"), learning_rate=1e-3, batch_size=64, network="small", beta_2=0.999,
    lr_schedule="constant", ema_decay=None,
)  # fmt: skip
ADOPTED = dict(model=dict(prediction="v", schedule="cosine"), lr_schedule="cosine", learning_rate=2e-3)
RECIPES = {
    "epsilon": {},
    "v": dict(model=dict(prediction="v")),
    "min_snr": dict(model=dict(prediction="epsilon", min_snr_gamma=5.0)),
    "v_min_snr": dict(model=dict(prediction="v", min_snr_gamma=5.0)),
    "lr_2e-3": dict(learning_rate=2e-3),
    "lr_5e-4": dict(learning_rate=5e-4),
    "batch_128": dict(batch_size=128),
    "batch_32": dict(batch_size=32),
    "beta2_0.99": dict(beta_2=0.99),
    "attention": dict(network="small_attention"),
    "v_lr_2e-3": dict(model=dict(prediction="v"), learning_rate=2e-3),
    "v_batch_32": dict(model=dict(prediction="v"), batch_size=32),
    "v_cosine_noise": dict(model=dict(prediction="v", schedule="cosine")),  # Nichol & Dhariwal's ᾱ(t)
    "v_cosine_noise_cosine_lr_2e-3": ADOPTED,  # the library's defaults since 2026-12-01
    # EDM (Karras et al. 2022) on top of the adopted recipe: its preconditioning (σ_data = 0.5) and its
    # log-normal training levels, together and each alone; and Adam's β₂.
    "edm": {**ADOPTED, "model": dict(prediction="edm", schedule="cosine", timestep_sampling="log_normal")},
    "edm_uniform_t": {**ADOPTED, "model": dict(prediction="edm", schedule="cosine")},
    "v_log_normal_t": {**ADOPTED, "model": dict(prediction="v", schedule="cosine", timestep_sampling="log_normal")},
    "adopted_beta2_0.99": {**ADOPTED, "beta_2": 0.99},
    "narrow": {**ADOPTED, "network": "narrow"},
    "medium": {**ADOPTED, "network": "medium"},
    "tiny": ADOPTED,  # the adopted recipe under its network's name, for tables of networks
    "wide": {**ADOPTED, "network": "wide"},
    "two_levels": {**ADOPTED, "network": "two_levels"},
    "two_blocks": {**ADOPTED, "network": "two_blocks"},
    "patch2": {**ADOPTED, "network": "patch2"},
    "patch2_32_64": {**ADOPTED, "network": "patch2_32_64"},
    "patch2_64_64": {**ADOPTED, "network": "patch2_64_64"},
    # micro at its peak until 2026-12-02 (3e-3; kd.training.PEAK_LEARNING_RATES), its upsampling variants the same.
    "micro_3e-3": {**ADOPTED, "network": "narrow", "learning_rate": 3e-3},
    "conv_nearest_3e-3": {**ADOPTED, "network": "micro_conv_nearest", "learning_rate": 3e-3},
    "pixel_shuffle_3e-3": {**ADOPTED, "network": "micro_pixel_shuffle", "learning_rate": 3e-3},
    "v_cosine_noise_cosine_lr_2e-3_batch_32": dict(model=dict(prediction="v", schedule="cosine"), lr_schedule="cosine",
                                                   learning_rate=2e-3, batch_size=32),  # fmt: skip
    "v_cosine_noise_cosine_lr_4e-3": dict(model=dict(prediction="v", schedule="cosine"), lr_schedule="cosine",
                                          learning_rate=4e-3),  # fmt: skip
    # Cosine decay of the learning rate to 0 over the run, after a linear warm-up (5 % of the updates).
    "v_cosine": dict(model=dict(prediction="v"), lr_schedule="cosine"),
    "v_cosine_lr_2e-3": dict(model=dict(prediction="v"), lr_schedule="cosine", learning_rate=2e-3),
    "v_cosine_lr_4e-3": dict(model=dict(prediction="v"), lr_schedule="cosine", learning_rate=4e-3),
    "v_min_snr_cosine": dict(model=dict(prediction="v", min_snr_gamma=5.0), lr_schedule="cosine"),
    "v_cosine_batch_32": dict(model=dict(prediction="v"), lr_schedule="cosine", batch_size=32),
    "v_cosine_batch_128": dict(model=dict(prediction="v"), lr_schedule="cosine", batch_size=128, learning_rate=2e-3),
    "v_cosine_ema_0.995": dict(model=dict(prediction="v"), lr_schedule="cosine", ema_decay=0.995),
    "v_cosine_beta2_0.99": dict(model=dict(prediction="v"), lr_schedule="cosine", beta_2=0.99),
}


def learning_rate(settings: dict, updates: int):
    """The recipe's learning rate: a constant, or `kd.learning_rates.warmup_cosine` (5 % warm-up, cosine to 0)."""
    if settings["lr_schedule"] == "constant":
        return settings["learning_rate"]
    return kd.learning_rates.warmup_cosine(settings["learning_rate"], updates, warmup=0.05)


def recipe(name: str) -> dict:
    settings = {**BASE, **RECIPES[name]}
    settings["model"] = {**BASE["model"], **RECIPES[name].get("model", {})}
    return settings


def build(settings: dict, args, updates: int) -> kd.DiffusionModel:
    """The recipe's model and optimizer, from the run's seed."""
    keras.utils.set_random_seed(args.seed)
    preset, overrides = NETWORKS[settings["network"]]
    unet = kd.models.UNet.preset(preset, **overrides)
    ema_decay = settings["ema_decay"] or args.ema_decay
    model = kd.DiffusionModel(unet, ema_decay=ema_decay, seed=args.seed, **settings["model"])
    model.compile(optimizer=kd.optimizers.Adam(learning_rate(settings, updates), beta_2=settings["beta_2"]))
    return model


def seconds_per_update(settings: dict, args, images, labels, probe: int = 40) -> float:
    """Seconds of one update of the recipe's model, timed over `probe` updates after 10 that compile and warm up."""
    model = build(settings, args, probe + 10)
    marks = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: marks.append(time.perf_counter()))
    count = (probe + 10) * settings["batch_size"]
    model.fit(images[:count], labels[:count], batch_size=settings["batch_size"], epochs=1, callbacks=[clock],
              verbose=0, nan_guard=False)  # fmt: skip
    return (marks[-1] - marks[9]) / (len(marks) - 10)


def run(name: str, args, images, labels, classifier, statistics, per_update: float | None = None) -> list[dict]:
    settings = recipe(name)
    # Recipes of another batch size train for the same number of images, not updates.
    updates = args.updates * BASE["batch_size"] // settings["batch_size"]
    if args.seconds:
        updates = int(args.seconds / per_update)
        print(f"--- {name}: {per_update:.3f} s per update → {updates} updates in {args.seconds:g} s", flush=True)
    every = updates if args.seconds else args.every * BASE["batch_size"] // settings["batch_size"]
    model = build(settings, args, updates)
    unet = model.denoiser
    fid = kd.callbacks.FIDCallback(
        statistics, num_samples=args.num_samples, every_n_updates=every,
        sampling=kd.samplers.Sampling(args.sampler, steps=args.steps), classifier=classifier, seed=args.seed, verbose=1,
    )  # fmt: skip
    batch_size = settings["batch_size"]
    epochs = -(-updates * batch_size // len(images))
    stop = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: setattr(model, "stop_training", fid.clock.updates >= updates)
    )
    print(f"--- {name}: {settings}, {unet.count_params():,} parameters", flush=True)
    model.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True, callbacks=[fid, stop], verbose=0)
    return [{"recipe": name, **row, "images": row["updates"] * batch_size} for row in fid.history]


def plot(rows: list[dict], path: str, x_axes=("updates", "seconds")) -> None:
    """FID (log scale) and class accuracy of every recipe against each of `x_axes`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    recipes = list(dict.fromkeys(row["recipe"] for row in rows))
    figure = Figure(figsize=(5 * len(x_axes), 7), dpi=100)
    FigureCanvasAgg(figure)
    for row_index, metric in enumerate(("fid", "class_accuracy")):
        for column, axis in enumerate(x_axes):
            axes = figure.add_subplot(2, len(x_axes), row_index * len(x_axes) + column + 1)
            for name in recipes:
                points = [row for row in rows if row["recipe"] == name]
                axes.plot([float(p[axis]) for p in points], [float(p[metric]) for p in points], marker="o", label=name)
            axes.set_xlabel("optimizer updates" if axis == "updates" else "training seconds")
            axes.set_ylabel("FID (N = 2048)" if metric == "fid" else "class accuracy (w = 0)")
            if metric == "fid":
                axes.set_yscale("log")
            axes.grid(alpha=0.3)
            axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def plot_final(rows: list[dict], path: str) -> None:
    """One bar per recipe: its last FID, with the class accuracy written beside it (best at the top)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    last = {row["recipe"]: row for row in rows}
    names = sorted(last, key=lambda name: -float(last[name]["fid"]))
    figure = Figure(figsize=(7, 0.45 * len(names) + 1.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    fids = [float(last[name]["fid"]) for name in names]
    axes.barh(range(len(names)), fids, color="tab:blue")
    for index, name in enumerate(names):
        row = last[name]
        axes.text(fids[index], index, f" {fids[index]:.1f} ({float(row['class_accuracy']):.1%}, {row['images']} images)",
                  va="center", fontsize=8)  # fmt: skip
    axes.set_yticks(range(len(names)), names, fontsize=8)
    axes.set_xlabel("FID (N = 2048 vs 2048 test digits; class accuracy at w = 0 in brackets)")
    axes.set_xlim(0, max(fids) * 1.45)
    figure.tight_layout()
    figure.savefig(path)


def replot(csv_paths: list[str], out: str) -> None:
    """Redraws the figure from the CSVs of earlier runs (a `recipe` may be renamed in the CSV).

    Recipes evaluated once each are drawn as bars (`plot_final`), curves otherwise.
    """
    rows = []
    for csv_path in csv_paths:
        with open(csv_path, newline="") as file:
            rows += list(csv.DictReader(file))
    names = [row["recipe"] for row in rows]
    if len(set(names)) == len(names):
        plot_final(rows, out)
    else:
        plot(rows, out, x_axes=("updates",))
    print(f"Wrote {out} from {len(rows)} rows.")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["epsilon", "v", "min_snr"])
    parser.add_argument("--updates", type=int, default=800, help="optimizer updates per recipe")
    parser.add_argument("--every", type=int, default=400, help="evaluate every this many updates")
    parser.add_argument("--seconds", type=float, default=None, help="instead of --updates: train each recipe for "
                        "about this many seconds (its updates from a timed probe; an idle CPU), evaluated once at the end")  # fmt: skip
    parser.add_argument("--num-samples", type=int, default=2048)
    parser.add_argument("--num-real", type=int, default=2048, help="test digits behind the real statistics")
    parser.add_argument("--sampler", default="ddpm", help="the fixed evaluation sampler")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/recipes")
    parser.add_argument("--replot", nargs="+", metavar="CSV", help="only redraw <out>.png (FID and accuracy against "
                        "updates) from these recipes.csv files")  # fmt: skip
    args = parser.parse_args()
    if args.replot:
        replot(args.replot, args.out if args.out.endswith(".png") else os.path.join(args.out, "recipes.png"))
        return
    os.makedirs(args.out, exist_ok=True)

    print(f"{cpu_description()}; {keras.backend.backend()} backend", flush=True)
    images, labels = kd.datasets.load("mnist", split="train")
    test_images, _ = kd.datasets.load("mnist", split="test", limit=args.num_real)
    start = time.perf_counter()
    classifier = kd.metrics.mnist_classifier(verbose=1)
    statistics = kd.metrics.FID().real_statistics(test_images, dataset_name="mnist", split="test")
    print(f"classifier and test statistics ready in {time.perf_counter() - start:.0f} s", flush=True)

    # With --seconds, every recipe's probe runs first, back to back, so that they share one state of the machine.
    per_update = {}
    for name in args.recipes if args.seconds else []:
        per_update[name] = seconds_per_update(recipe(name), args, images, labels)
    rows, csv_path = [], os.path.join(args.out, "recipes.csv")
    for name in args.recipes:
        rows += run(name, args, images, labels, classifier, statistics, per_update.get(name))
        with open(csv_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot(rows, os.path.join(args.out, "recipes.png"))
    print(f"\nFID (N = {args.num_samples} vs {len(test_images)} test digits), {args.sampler} {args.steps} steps, w = 0")
    print(f"{'recipe':<12} {'updates':>8} {'seconds':>8} {'FID':>8} {'accuracy':>9}")
    for row in rows:
        print(f"{row['recipe']:<12} {row['updates']:>8} {row['seconds']:>8.0f} {row['fid']:>8.2f} "
              f"{row['class_accuracy']:>9.3f}")  # fmt: skip
    print(f"Wrote {csv_path}.")


if __name__ == "__main__":
    main()
