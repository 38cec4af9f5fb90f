"""Every private part of Keras that keras_diffusion touches, in one module, with a check that they still exist.

Keras 3 has no public way to do a few things the library needs: to list a
layer's seed generators and own variables (to save seed states with a model),
to start `fit` at a resumed epoch and skip the batches a checkpoint already
trained, to make a model trace its steps again, and to work around two steps
of Keras' TensorFlow trainer that fail under a multi-worker strategy
(tensorflow issue #72388). Each such use is a function here; `missing()` lists
the attributes that a new Keras no longer has, and the test suite fails loudly
on any (tests/test_keras_internals.py).
"""

import keras

from keras_diffusion.runtime.distributed import multi_worker_strategy

#: (where, attribute, the backends whose Keras has it) of every private part of Keras used here.
TOUCHED = (
    ("keras.layers.Layer", "_flatten_layers", None),
    ("keras.layers.Layer", "_seed_generators", None),
    ("keras.layers.Layer", "_trainable_variables", None),
    ("keras.layers.Layer", "_non_trainable_variables", None),
    ("keras.Model", "_initial_epoch", None),
    ("keras.Model", "train_function", None),
    ("keras.Model", "_maybe_symbolic_build", ("tensorflow",)),  # its TensorFlow trainer's only
)


def missing() -> list[str]:
    """The entries of `TOUCHED` that a fresh Keras layer or compiled model lacks on this backend.

    Returns:
        Their names, e.g. `["keras.Model._initial_epoch"]`; empty while Keras still has them all.

    Example:
    >>> missing()
    []
    """
    layer, model = keras.layers.Layer(), keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    owners = {"keras.layers.Layer": layer, "keras.Model": model}
    backend = keras.backend.backend()
    return [
        f"{where}.{name}"
        for where, name, backends in TOUCHED
        if (backends is None or backend in backends) and not hasattr(owners[where], name)
    ]


def flatten_layers(layer: keras.layers.Layer, include_self: bool = True) -> list:
    """`layer` and every layer inside it, depth first, as Keras tracks them."""
    return list(layer._flatten_layers(include_self=include_self))


def seed_generators(layer: keras.layers.Layer) -> list:
    """The seed generators that `layer` itself owns (not those of its sublayers)."""
    return list(layer._seed_generators)


def own_variables(layer: keras.layers.Layer) -> list:
    """The variables `layer.save_own_variables` stores: its own trainable, then non-trainable ones."""
    return list(layer._trainable_variables) + list(layer._non_trainable_variables)


def set_initial_epoch(model: keras.Model, epoch: int | None) -> None:
    """Makes the next `fit` start at `epoch` (what `keras.callbacks.BackupAndRestore` sets); None clears it."""
    model._initial_epoch = epoch


def train_function(model: keras.Model):
    """The compiled training step `fit` calls once per batch (None before `fit` made one)."""
    return model.train_function


def set_train_function(model: keras.Model, function) -> None:
    """Replaces the step `fit` calls for the next batches (e.g. one that skips a batch)."""
    model.train_function = function


def retrace_steps(model: keras.Model) -> None:
    """Drops the model's compiled train, test and predict steps, so that the next call traces them anew."""
    model.train_function = model.test_function = model.predict_function = None


# ------------------------------------------------ Keras 3 with TensorFlow's MultiWorkerMirroredStrategy
#
# Keras 3's TensorFlow trainer has two steps that fail under a multi-worker strategy (tensorflow
# issue #72388): it reduces each scalar log with `strategy.reduce("MEAN", value, axis=0)`, which a
# 0-d tensor does not have, and, before the first step, it reduces the whole (x, y) batch with one
# `strategy.reduce`, which the strategy refuses for a nest. `OwnLossModel` routes both through the two functions below.


def reducible_logs(logs: dict) -> dict:
    """The step's logs with every scalar as a 1-vector inside a multi-worker TensorFlow replica; else `logs`.

    The strategy then averages the workers' values along that axis, which
    gives the scalar the logs should have.
    """
    if multi_worker_strategy() is None:
        return logs
    import tensorflow as tf

    if tf.distribute.in_cross_replica_context():
        return logs
    return {name: tf.reshape(value, (1,)) if len(value.shape) == 0 else value for name, value in logs.items()}


def placeholder_batch(epoch_iterator):
    """Zeros shaped like one batch (its shapes build the model) under a multi-worker strategy; else None.

    Keras reads a real batch there, which starts an extra pass over the
    dataset, and a shuffled dataset reshuffles on every pass: the placeholder
    keeps the batches those of one process given the same dataset.
    """
    if multi_worker_strategy() is None or epoch_iterator is None:
        return None
    import tensorflow as tf

    specification = epoch_iterator.data_adapter.get_tf_dataset().element_spec
    return tf.nest.map_structure(lambda spec: tf.zeros([size or 1 for size in spec.shape], spec.dtype), specification)
