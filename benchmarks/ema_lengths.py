"""FID and class accuracy against the EMA length, from one training run (EDM2's post-hoc EMA, MNIST conditional).

Usage:
    python benchmarks/ema_lengths.py --updates 1500 --stds 0.02,0.05,0.10,0.20 --out runs/ema_lengths

Trains one recipe of `benchmarks/recipes.py` (default: the library's defaults, as the main job
trains them) with `DiffusionModel(ema_std=(0.05, 0.10))` and `kd.callbacks.EMASnapshots`, and
beside it the library's default EMA (`ema_decay=0.999` with its warm-up, mirrored in NumPy on
the same weights). After training, each σ_rel of --stds is reconstructed from the snapshots
(`kd.ema.reconstruct`), and every candidate (raw weights, the 0.999 EMA, each σ_rel) is scored
with the same FID (N = --num-samples against the first --num-real test digits, one sampler, w = 0,
the same sampling seed) and class accuracy (`kd.metrics.mnist_classifier()`). The raw weights'
trajectory is that of the recipe in `recipes.py`: the EMAs do not change the training.

Writes `<out>/ema_lengths.csv` and prints the table with the CPU's description.
"""

import argparse
import csv
import os
import time

import keras
import recipes  # benchmarks/: the recipes, their networks and their optimizer
from sampler_accuracy import parse_sampler  # benchmarks/: `name`, `name:spacing` or `name:setting=value`

import keras_diffusion as kd
from keras_diffusion.runtime import cpu_description


class ExponentialEMA(keras.callbacks.Callback):
    """The library's `ema_decay` EMA, in NumPy: decay min(d, (1 + k)/(10 + k)) after k updates.

    Like the model's, it folds in the weights each update starts from (the model updates its EMAs
    inside the training step, before the optimizer's update).
    """

    def __init__(self, decay: float):
        super().__init__()
        self.decay = decay
        self.updates = 0
        self.weights = None

    def on_train_begin(self, logs=None):
        # As the model's EMA variables start: a copy of the initial weights.
        self.weights = [keras.ops.convert_to_numpy(v).copy() for v in self.model.denoiser.trainable_variables]

    def on_train_batch_begin(self, batch, logs=None):
        current = [keras.ops.convert_to_numpy(v) for v in self.model.denoiser.trainable_variables]
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        for average, weight in zip(self.weights, current):
            average += (1.0 - decay) * (weight - average)
        self.updates += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="v_cosine_noise_cosine_lr_2e-3", choices=sorted(recipes.RECIPES))
    parser.add_argument("--updates", type=int, default=1500, help="optimizer updates (the main job's 1,500)")
    parser.add_argument("--snapshot-every", type=int, default=50, help="updates between EMA snapshots")
    parser.add_argument("--stds", default="0.02,0.05,0.10,0.20", help="σ_rel values to reconstruct and score")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="the exponential EMA scored beside them")
    parser.add_argument("--num-samples", type=int, default=2048)
    parser.add_argument("--num-real", type=int, default=2048, help="test digits behind the real statistics")
    parser.add_argument("--sampler", default="dpmpp_2m_sde", help="name, name:spacing or name:setting=value")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/ema_lengths")
    args = parser.parse_args()
    stds = [float(s) for s in args.stds.split(",")]
    sampler = parse_sampler(args.sampler)[1]  # a clear error for a bad sampler, before training
    for std in stds:
        kd.ema.std_to_exponent(std)  # a clear error for an out-of-range σ_rel, before training
    os.makedirs(args.out, exist_ok=True)

    print(f"{cpu_description()}; {keras.backend.backend()} backend", flush=True)
    images, labels = kd.datasets.load("mnist", split="train")
    test_images, _ = kd.datasets.load("mnist", split="test", limit=args.num_real)
    classifier = kd.metrics.mnist_classifier(verbose=1)
    statistics = kd.metrics.FID().real_statistics(test_images, dataset_name="mnist", split="test")

    settings = recipes.recipe(args.recipe)
    settings["model"] = {**settings["model"], "ema_std": (0.05, 0.10)}
    model = recipes.build(settings, args, args.updates)
    snapshots_dir = os.path.join(args.out, "snapshots")
    snapshots = kd.callbacks.EMASnapshots(snapshots_dir, every_n_updates=args.snapshot_every)
    exponential = ExponentialEMA(args.ema_decay)
    clock = kd.callbacks.TrainingClock()
    clock_callback = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: clock.batch_begin(),
        on_train_batch_end=lambda batch, logs: clock.batch_end(),
    )
    stop = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: setattr(model, "stop_training", exponential.updates >= args.updates)
    )
    batch_size = settings["batch_size"]
    epochs = -(-args.updates * batch_size // len(images))
    print(f"--- {args.recipe}: {settings}, {args.updates} updates", flush=True)
    model.fit(images, labels, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
              callbacks=[exponential, clock_callback, snapshots, stop])  # fmt: skip
    print(f"trained {exponential.updates} updates in {clock.seconds:.0f} s", flush=True)

    raw = [keras.ops.convert_to_numpy(v) for v in model.denoiser.trainable_variables]
    saved = kd.callbacks.read_ema_snapshots(snapshots_dir)
    candidates = [("raw weights", raw), (f"ema_decay={args.ema_decay:g}", exponential.weights)]
    candidates += [(f"sigma_rel={std:g}", kd.ema.reconstruct(saved, target_std=std)) for std in stds]
    scorer = kd.callbacks.FIDCallback(
        statistics, num_samples=args.num_samples, sampling=kd.samplers.Sampling(sampler, steps=args.steps),
        classifier=classifier, seed=args.seed,
    )  # fmt: skip
    scorer.set_model(model)
    rows = []
    for name, weights in candidates:
        start = time.perf_counter()
        model.set_ema_weights(weights)
        result = scorer.evaluate()
        rows.append({"ema": name, "updates": exponential.updates, "seconds": round(clock.seconds, 1),
                     "fid": result["fid"], "class_accuracy": result["class_accuracy"]})  # fmt: skip
        print(f"{name:<18} FID {result['fid']:7.2f}  accuracy {result['class_accuracy']:.3f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)  # fmt: skip
        with open(os.path.join(args.out, "ema_lengths.csv"), "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"\nFID (N = {args.num_samples} vs {len(test_images)} test digits), {args.sampler} {args.steps} steps, "
          f"w = 0, after {exponential.updates} updates of {args.recipe}")  # fmt: skip


if __name__ == "__main__":
    main()
