"""Random draws and loss means over the global batch, as one device would compute them, under data parallelism.

Under `tf.distribute` every replica runs the training step on its own rows with
the same seed state; JAX compiles one program over the global batch and needs
nothing here.
"""

from collections.abc import Callable

import keras


def _replica_context():
    """The TensorFlow replica context of a step run by a `tf.distribute` strategy with >1 replica, else None.

    JAX data parallelism (`keras.distribution.DataParallel`) compiles one
    program over the global batch, so a step there never sees a replica.
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def _replica_rows(local_batch_size):
    """(first row of this replica's part of the global batch, global batch size), or None without replicas."""
    context = _replica_context()
    if context is None:
        return None
    import tensorflow as tf

    # Gathered rather than local_batch_size * replicas: the last batch of an epoch may split unevenly.
    sizes = context.all_gather(tf.reshape(tf.cast(local_batch_size, "int32"), (1,)), axis=0)
    start = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
    return start, tf.reduce_sum(sizes)


def draw_for_global_batch(draw: Callable, local_batch_size):
    """Random numbers for this replica's rows of the global batch: `draw(global_batch_size)[rows]`.

    Under `tf.distribute` every replica runs the training step on its own part
    of the batch with the same seed state, so drawing `local_batch_size` rows
    would repeat the same noise on every replica. Drawing for the whole global
    batch and keeping this replica's rows gives every example the numbers that
    a single device would have drawn for it. Without replicas (one device, or
    JAX, which compiles the global batch as one program) it is `draw(local_batch_size)`.

    Args:
        draw: a function of a batch size returning a tensor whose first axis
            is that batch size, e.g. `lambda n: keras.random.normal((n, 8))`.
        local_batch_size: this replica's batch size (`ops.shape(x)[0]`).

    Returns:
        The tensor of draw(...) restricted to this replica's rows.

    Example:
    >>> seed = keras.random.SeedGenerator(0)
    >>> tuple(draw_for_global_batch(lambda n: keras.random.normal((n, 3), seed=seed), 2).shape)
    (2, 3)
    """
    rows = _replica_rows(local_batch_size)
    if rows is None:
        return draw(local_batch_size)
    import tensorflow as tf

    start, global_batch_size = rows
    return tf.gather(draw(global_batch_size), tf.range(start, start + tf.cast(local_batch_size, "int32")))


def mean_over_global_batch(values):
    """This replica's share of the mean of per-example `values` over the global batch.

    Summed over replicas (as `tf.distribute` sums gradients) the shares give
    the mean over the global batch, as one device computes it; Keras' own
    losses are scaled the same way. Without replicas it is `ops.mean(values)`.

    Args:
        values: float tensor of shape (local_batch_size,).

    Returns:
        A scalar of `values`' dtype.

    Example:
    >>> float(mean_over_global_batch(keras.ops.convert_to_tensor([1.0, 2.0, 6.0])))
    3.0
    """
    rows = _replica_rows(keras.ops.shape(values)[0])
    if rows is None:
        return keras.ops.mean(values)
    import tensorflow as tf

    return tf.reduce_sum(values) / tf.cast(rows[1], values.dtype)
