"""One process of a multi-process training run (or the single-process reference); run by tests/test_multi_process.py.

    KERAS_BACKEND=jax python tests/multi_process_worker.py OUT PROCESS_ID NUM_PROCESSES [ADDRESSES]
    KERAS_BACKEND=jax python tests/multi_process_worker.py mismatched PROCESS_ID ADDRESSES

Every process runs the same script (as users run theirs): `kd.distributed.initialize`
connects them (skipped for one process), then, inside `kd.distributed.scope()`:

1. a class-conditional DiffusionModel whose U-Net has dropout trains on
   shuffled arrays (several processes: `fit` turns them into the shared global
   batches; one process: the same `kd.distributed.global_batches`, given
   explicitly), with a TrainingCheckpoint after every batch in OUT/checkpoint
   (shared), until an exception stops it in the middle of its second epoch, as
   a kill would; `save` writes OUT/process_<id>/model.keras;
2. a fresh model resumes from that checkpoint in the middle of the epoch and
   finishes it, with an ImageGridCallback writing to OUT/process_<id>/, and
   generates images, whose FID a pixel feature extractor scores;
3. a DenoisingAutoencoder trains one SGD step from fixed weights.

Each process writes OUT/result_<id>.npz (with NumPy, not the library, whose
writes only the chief makes): the losses, the weights, the EMA weights and
generated images, which the test compares with the single-process run.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
import keras  # noqa: E402

import keras_diffusion as kd  # noqa: E402

GLOBAL_BATCH = 8
STEPS = 2


def main(out, process_id, num_processes, addresses=None):
    if num_processes > 1:
        kd.distributed.initialize(addresses, num_processes=num_processes, process_id=process_id, timeout=120)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (GLOBAL_BATCH * STEPS, 8, 8, 1)).astype("float32")
    labels = rng.integers(0, 3, GLOBAL_BATCH * STEPS).astype("int32")

    def data():
        """fit's data: arrays in several processes (fit turns them into global batches), those batches in one.

        Made after the model is built, as fit makes them: the shuffle's seed combines with TensorFlow's
        global seed, which building the model sets."""
        if num_processes > 1:
            return dict(x=images, y=labels, batch_size=GLOBAL_BATCH, shuffle=True)
        return dict(x=kd.distributed.global_batches(images, labels, batch_size=GLOBAL_BATCH, shuffle=True))

    own = os.path.join(out, f"process_{process_id}")
    checkpoint = os.path.join(out, "checkpoint")
    results = {}
    with kd.distributed.scope():
        model = build_diffusion_model()
        interrupt = InterruptAfter(STEPS + 1)  # in the middle of the second epoch, after its checkpoint
        try:
            model.fit(**data(), epochs=2, verbose=0, callbacks=[kd.callbacks.TrainingCheckpoint(checkpoint, 1), interrupt])
        except Interrupted:
            pass
        results["loss_1"] = interrupt.loss
        model.save(os.path.join(own, "model.keras"))

        # A fresh model resumes mid-epoch: it loads the checkpoint and skips the batch it had trained.
        resumed = build_diffusion_model()
        grid = kd.callbacks.ImageGridCallback(own, columns=2, sampling=kd.samplers.Sampling(steps=3))  # compiles the sampling step `generate` reuses
        callbacks = [kd.callbacks.TrainingCheckpoint(checkpoint, 1), grid]
        history = resumed.fit(**data(), epochs=2, verbose=0, callbacks=callbacks)
        results["loss_2"] = history.history["loss"][-1]
        results["epochs_run"] = len(history.history["loss"])
        local_rows = []
        results["generated"] = resumed.generate(4, steps=3, seed=0, callback=lambda _, x: local_rows.append(len(x)))
        results["generate_local_rows"] = local_rows[-1]
        seen = []  # images this process's feature extractor saw

        def pixel_features(batch):
            seen.append(len(batch))
            return np.asarray(batch, "float32").reshape(len(batch), -1)

        real = kd.metrics.FeatureStatistics.from_features(images.reshape(len(images), -1))
        results["fid"] = kd.metrics.score_images(results["generated"], real, pixel_features)["fid"]
        results["fid_images_seen"] = sum(seen)
        for index, variable in enumerate(resumed.denoiser.trainable_variables):
            results[f"weight_{index}"] = keras.ops.convert_to_numpy(variable)
        for index, variable in enumerate(resumed.weight_averages.sets[0]):
            results[f"ema_{index}"] = keras.ops.convert_to_numpy(variable)

        autoencoder = kd.models.DenoisingAutoencoder(image_shape=(8, 8, 1), filters=(4, 4), code_channels=2, seed=7)
        autoencoder.set_weights([np.full(w.shape, 0.05, w.dtype) * np.cos(np.arange(w.size)).reshape(w.shape)
                                 for w in autoencoder.get_weights()])  # fmt: skip
        autoencoder.compile(optimizer=keras.optimizers.SGD(0.1))
        dae_data = dict(x=images[:GLOBAL_BATCH], batch_size=GLOBAL_BATCH, shuffle=False)
        if num_processes == 1:
            dae_data = dict(x=kd.distributed.global_batches(images[:GLOBAL_BATCH], batch_size=GLOBAL_BATCH, shuffle=False))
        results["dae_loss"] = autoencoder.fit(**dae_data, epochs=1, verbose=0).history["loss"][-1]
        for index, variable in enumerate(autoencoder.trainable_variables):
            results[f"dae_weight_{index}"] = keras.ops.convert_to_numpy(variable)
    results["process_index"] = kd.distributed.process_index()
    results["process_count"] = kd.distributed.process_count()
    np.savez(os.path.join(out, f"result_{process_id}.npz"), **results)
    return 0


class Interrupted(Exception):
    """What `InterruptAfter` raises: the run stops as if the processes had been killed there."""


class InterruptAfter(keras.callbacks.Callback):
    """Raises `Interrupted` after `updates` training batches, keeping the loss of the last."""

    def __init__(self, updates):
        super().__init__()
        self.updates, self.seen, self.loss = updates, 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.updates:
            self.loss = float(logs["loss"])
            raise Interrupted(f"after {self.updates} updates")


def mismatched(process_id, addresses):
    """Process 1 builds a model with another T: both processes must refuse to train, naming the mismatch."""
    kd.distributed.initialize(addresses, process_id=process_id, timeout=120)
    with kd.distributed.scope():
        model = build_diffusion_model(timesteps=100 + 50 * process_id)
        try:
            model.fit(np.zeros((16, 8, 8, 1), "float32"), np.zeros(16, "int32"), batch_size=8, epochs=1, verbose=0)
        except ValueError as error:
            print(f"refused: {error}")
            return 0
    return 1


def build_diffusion_model(timesteps=100):
    keras.utils.set_random_seed(0)
    unet = kd.models.UNet(
        image_shape=(8, 8, 1), widths=(8, 16), num_res_blocks=1, attention_resolutions=(4,),
        num_classes=3, norm_groups=4, dropout=0.3,
    )  # fmt: skip
    model = kd.DiffusionModel(unet, timesteps=timesteps, ema_decay=0.9, class_dropout=0.3, seed=3)
    model.compile(optimizer=kd.optimizers.Adam(1e-3))
    return model


if __name__ == "__main__":
    if sys.argv[1] == "mismatched":
        sys.exit(mismatched(int(sys.argv[2]), sys.argv[3]))
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None))
