"""Checkpoint and resume: a SIGKILLed run resumes to the uninterrupted weights; writes are atomic; NaN stops."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest
import reliability_training as run

import keras_diffusion as kd
from keras_diffusion.callbacks.checkpoint import TrainingCheckpoint
from keras_diffusion.training.nan_guard import NaNGuard, NonFiniteLossError

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reliability_training.py")


def start_training(output, *arguments):
    """The helper script in a new process, on the backend under test (it inherits KERAS_BACKEND)."""
    return subprocess.Popen(
        [sys.executable, SCRIPT, str(output), *map(str, arguments)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def finish(process):
    output, _ = process.communicate(timeout=600)
    return process.returncode, output[-3000:]


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_weights(tmp_path):
    checkpoint = tmp_path / "checkpoint"
    # 3 epochs of 4 batches, a checkpoint every 3 batches; SIGKILL before batch 7 = epoch 2, batch 3.
    killed = start_training(tmp_path / "never.npz", "--checkpoint", checkpoint, "--save-freq", 3, "--kill-at-step", 7)

    reference = run.new_model()  # the uninterrupted run, here while the other process trains
    images, labels = run.training_data()
    reference.fit(images, labels, batch_size=run.BATCH_SIZE, epochs=run.EPOCHS, shuffle=False, verbose=0)
    expected = run.all_weights(reference)

    returncode, output = finish(killed)
    assert returncode == -signal.SIGKILL, output
    assert not (tmp_path / "never.npz").exists()
    pointer = json.loads((checkpoint / "checkpoint.json").read_text())
    assert (pointer["epoch"], pointer["batch"], pointer["global_step"]) == (1, 2, 6)  # mid-epoch

    returncode, output = finish(start_training(tmp_path / "resumed.npz", "--checkpoint", checkpoint, "--save-freq", 3))
    assert returncode == 0, output
    resumed = np.load(tmp_path / "resumed.npz")
    assert sorted(resumed.files) == sorted(expected)  # weights, EMA, optimizer and seed states
    for name, value in expected.items():
        np.testing.assert_allclose(resumed[name], value, atol=1e-5, rtol=0, err_msg=name)


@pytest.fixture()
def saved_checkpoint(tmp_path):
    """A model whose optimizer is built and a TrainingCheckpoint holding one saved state."""
    model = run.new_model()
    model.optimizer.build(model.trainable_variables)
    checkpoint = TrainingCheckpoint(tmp_path / "checkpoint")
    checkpoint.set_model(model)
    assert checkpoint.save(epoch=1, batch=0)
    return model, checkpoint


def snapshot(directory):
    return {os.path.basename(p): hashlib.sha256(open(p, "rb").read()).hexdigest() for p in glob.glob(f"{directory}/*")}


def files_after_a_failed_save(model, checkpoint, monkeypatch, fail):
    """Advances the model, makes one save fail at the `fail` point, and returns the folder's files."""
    model.denoiser.trainable_variables[0].assign(model.denoiser.trainable_variables[0] + 1.0)
    with monkeypatch.context() as patch:
        fail(patch)
        with pytest.raises(OSError, match="simulated crash"):
            checkpoint._global_step += 1
            checkpoint.save(epoch=2, batch=0)
    return snapshot(checkpoint.directory)


def crash(*args, **kwargs):
    raise OSError("simulated crash")


def test_a_crash_while_writing_the_weights_leaves_the_previous_checkpoint_intact(saved_checkpoint, monkeypatch):
    model, checkpoint = saved_checkpoint
    before = snapshot(checkpoint.directory)

    def half_written_weights(patch):
        def write_half_then_crash(self, filepath, overwrite=True, **kwargs):
            with open(filepath, "wb") as file:
                file.write(b"\x89HDF\r\n half a file")
            raise OSError("simulated crash")

        patch.setattr(keras.Model, "save_weights", write_half_then_crash)

    assert files_after_a_failed_save(model, checkpoint, monkeypatch, half_written_weights) == before


def test_a_crash_while_renaming_leaves_the_previous_checkpoint_intact(saved_checkpoint, monkeypatch):
    model, checkpoint = saved_checkpoint
    before = snapshot(checkpoint.directory)
    assert files_after_a_failed_save(model, checkpoint, monkeypatch, lambda p: p.setattr(os, "replace", crash)) == before


def test_a_crash_before_the_pointer_moves_keeps_pointing_at_the_previous_weights(saved_checkpoint, monkeypatch):
    model, checkpoint = saved_checkpoint
    before = snapshot(checkpoint.directory)
    saved_kernel = keras.ops.convert_to_numpy(model.denoiser.trainable_variables[0])
    replace = os.replace

    def fail_on_pointer(patch):
        patch.setattr(os, "replace", lambda src, dst: crash() if dst.endswith("checkpoint.json") else replace(src, dst))

    after = files_after_a_failed_save(model, checkpoint, monkeypatch, fail_on_pointer)
    assert {name: after[name] for name in before} == before  # the old pointer and weights, unchanged
    assert not any(name.startswith(".tmp-") for name in after)

    fresh = run.new_model()  # restoring now gives the state of the previous, complete save
    restorer = TrainingCheckpoint(checkpoint.directory)
    restorer.set_model(fresh)
    restorer.on_train_begin()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(fresh.denoiser.trainable_variables[0]), saved_kernel)
    assert fresh._initial_epoch == 1


def test_temporary_files_of_a_killed_write_are_removed_on_the_next_start(saved_checkpoint):
    model, checkpoint = saved_checkpoint
    leftover = os.path.join(checkpoint.directory, ".tmp-abc123.weights.h5")
    open(leftover, "wb").write(b"partial")
    checkpoint.on_train_begin()
    assert not os.path.exists(leftover)


class NaNAfter(keras.utils.PyDataset):
    """Labelled batches of random images; from batch `bad` on, the images are NaN."""

    def __init__(self, bad, batches=5):
        super().__init__()
        self.bad, self.batches = bad, batches
        self.images, self.labels = run.training_data()

    def __len__(self):
        return self.batches

    def __getitem__(self, index):
        images = self.images[:4].copy()
        if index >= self.bad:
            images[:] = np.nan
        return images, self.labels[:4]


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    model = run.new_model()
    # The checkpoint runs before the guard, so it meets the NaN itself and must refuse to save.
    checkpoint = TrainingCheckpoint(tmp_path / "checkpoint", save_freq=1)
    with pytest.warns(RuntimeWarning, match="not saving"):
        with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 4 \(optimizer step 4\).*learning rate.*NaN or inf in the training data"):
            model.fit(NaNAfter(bad=3), epochs=2, shuffle=False, verbose=0, callbacks=[checkpoint, NaNGuard()])
    pointer = checkpoint.latest()
    assert (pointer["epoch"], pointer["batch"], pointer["global_step"]) == (0, 3, 3)
    assert [os.path.basename(p) for p in glob.glob(str(tmp_path / "checkpoint" / "*.h5"))] == [pointer["weights"]]

    restored = run.new_model()
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(tmp_path / "checkpoint" / pointer["weights"])
    assert all(np.all(np.isfinite(keras.ops.convert_to_numpy(v))) for v in restored.weights)


def test_the_nan_message_puts_float16_first_when_the_model_computes_in_float16():
    from keras_diffusion.training.nan_guard import non_finite_loss_message

    model = kd.DiffusionModel(run.small_denoiser(), timesteps=10, num_classes=3, dtype="mixed_float16")
    model.compile(optimizer=keras.optimizers.SGD(0.5))  # Keras wraps it in a LossScaleOptimizer
    message = non_finite_loss_message(model, float("inf"), epoch=2, batch=9)
    assert "loss became inf at epoch 3, batch 10" in message
    assert "(1) float16 overflow despite loss scaling (dtype policy 'mixed_float16')" in message
    assert "(2) the learning rate is too high (it is 0.5;" in message

    model.optimizer = keras.optimizers.SGD(0.5)
    assert "(1) float16 without loss scaling" in non_finite_loss_message(model, float("nan"), epoch=0, batch=0)
