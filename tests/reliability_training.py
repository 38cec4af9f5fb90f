"""A tiny, fully deterministic training run for tests/test_reliability.py, run as a subprocess.

    python tests/reliability_training.py OUT.npz [--checkpoint DIR] [--save-freq N] [--kill-at-step K]

Trains a small conditional denoiser (with dropout, so a layer's seed generator matters) for EPOCHS epochs of BATCHES batches (shuffle=False) and writes every
model weight (EMA, seed states and optimizer variables included) to OUT.npz. With --kill-at-step K
the process sends itself SIGKILL just before training batch K (1-based, counted across epochs):
nothing after the last checkpoint survives, exactly as if the machine had killed it.
"""

import argparse
import os
import signal
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
import keras_diffusion as kd  # noqa: E402
from keras_diffusion.callbacks.checkpoint import TrainingCheckpoint  # noqa: E402
from keras_diffusion.data.files import save_npz_atomically  # noqa: E402

EPOCHS, BATCHES, BATCH_SIZE = 3, 4, 4


class KillAtStep(keras.callbacks.Callback):
    """SIGKILLs this process at the start of global batch `step` (1-based)."""

    def __init__(self, step):
        super().__init__()
        self.step, self.seen = step, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def training_data():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (BATCHES * BATCH_SIZE, 8, 8, 1)).astype("float32")
    return images, np.arange(len(images)) % 3


def small_denoiser(num_classes=3):
    """denoiser([x_t, t, labels]): two convolutions around a time and class embedding, with dropout.

    Much quicker to compile than a U-Net, which keeps the subprocess runs of the test short.
    """
    x = keras.Input((8, 8, 1))
    t = keras.Input(())
    labels = keras.Input((), dtype="int32")
    time = keras.layers.Dense(8)(keras.layers.Reshape((1,))(t) / 100.0)
    label = keras.layers.Embedding(num_classes + 1, 8)(labels)
    h = keras.layers.Conv2D(8, 3, padding="same")(x)
    h = h + keras.layers.Reshape((1, 1, 8))(time + label)
    h = keras.layers.Dropout(0.2)(keras.layers.Activation("silu")(h))
    return keras.Model([x, t, labels], keras.layers.Conv2D(1, 3, padding="same")(h))


def new_model():
    keras.utils.set_random_seed(0)  # the same initial weights in every process
    model = kd.DiffusionModel(small_denoiser(), timesteps=100, num_classes=3, seed=21)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    return model


def all_weights(model):
    """Every variable of the model and its optimizer, by position, and every seed generator's state."""
    variables = list(model.weights) + list(model.optimizer.variables)
    # By position: paths and optimizer-slot names carry uniquified layer names ("dense_746") that differ between
    # processes; the order of model.weights and optimizer.variables is fixed by the model's structure.
    arrays = {f"{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(variables)}
    for i, generator in enumerate(model._all_seed_generators()):
        arrays[f"seed_state_{i}"] = keras.ops.convert_to_numpy(generator.state)
    return arrays


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("output")
    parser.add_argument("--checkpoint")
    parser.add_argument("--save-freq", default="epoch")
    parser.add_argument("--kill-at-step", type=int)
    args = parser.parse_args()

    model = new_model()
    callbacks = []
    if args.checkpoint:
        save_freq = args.save_freq if args.save_freq == "epoch" else int(args.save_freq)
        callbacks.append(TrainingCheckpoint(args.checkpoint, save_freq=save_freq))
    if args.kill_at_step:
        callbacks.append(KillAtStep(args.kill_at_step))
    images, labels = training_data()
    model.fit(images, labels, batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
    save_npz_atomically(args.output, all_weights(model))


if __name__ == "__main__":
    main()
