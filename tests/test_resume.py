"""Resuming an interrupted `fit` with keras.callbacks.BackupAndRestore."""

import keras
import numpy as np
import pytest
from reliability_training import new_model



class Interrupt(Exception):
    pass


class InterruptAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt()


def test_a_run_resumed_after_an_interruption_ends_with_the_uninterrupted_weights(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.uniform(0, 1, (32, 8, 8, 1)).astype("float32"), np.arange(32) % 3
    fit = dict(batch_size=8, epochs=3, shuffle=False, verbose=0)

    reference = new_model()
    reference.fit(images, labels, **fit)

    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(Interrupt):
        new_model().fit(images, labels, callbacks=[backup, InterruptAfterEpoch(1)], **fit)
    resumed = new_model()  # a fresh process would build the model anew
    history = resumed.fit(images, labels, callbacks=[backup], **fit)

    assert len(history.history["loss"]) == 1  # only the third epoch ran again
    for a, b in zip(reference.weights, resumed.weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-5)
