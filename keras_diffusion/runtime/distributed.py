"""Training in several processes (several hosts) on the engines' own runtimes.

One `fit` script runs unchanged in N processes: JAX connects them with
`jax.distributed.initialize` and trains one program over every device of
every process (`keras.distribution.DataParallel`); TensorFlow connects them
with `tf.distribute.MultiWorkerMirroredStrategy` (a gRPC ring described by
`TF_CONFIG`). This module starts either one (`initialize`), says which
process this is (`process_index`, `is_chief`), and builds the input every
process must see (`global_batches`).

Each process reads its own rows of every global batch; the noise, timesteps
and dropout masks are drawn for the global batch (`backend.draw_for_global_batch`),
the loss is averaged over it, and every process ends each step with the same
weights and EMA. Only the chief writes files (`keras_diffusion.data.files`): the
others run the same code, so that collective operations stay in step, and
drop what they would have written.
"""

import contextlib
import json
import os
import socket
import threading
import time

import keras
import numpy as np

# What `initialize` started: the distribution behind `scope` and TensorFlow's gathers.
_STATE: dict = {}


def initialize(
    addresses: str | list[str] | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout: float = 300.0,
):
    """Connects this process to the others and returns the data-parallel distribution over all of them.

    Call it at the top of the script, in every process, before any model is
    built (TensorFlow must not have run anything yet). With no arguments the
    engine reads its own environment: `TF_CONFIG` on TensorFlow; on JAX,
    `jax.distributed.initialize()`'s auto-detection (Slurm, Cloud TPU, Open
    MPI, Kubernetes).

    Args:
        addresses: "host:port" of every process, process 0 first, as a list or
            a comma-separated string. JAX needs only the first (the
            coordinator, which process 0 serves); TensorFlow needs all, since
            each process serves gRPC at its own address. None: the
            environment's.
        num_processes: how many processes take part (default: len(addresses)).
        process_id: this process's index, 0 .. num_processes - 1; 0 is the chief.
        timeout: seconds to wait for every process to connect.

    Returns:
        The distribution: a `keras.distribution.DataParallel` (JAX, set as
        the global distribution too) or a `tf.distribute.MultiWorkerMirroredStrategy`.
        Build, compile and fit inside `scope()` (JAX: the global distribution
        already applies).

    Raises:
        ValueError: inconsistent arguments (named in the message).
        TimeoutError: the others did not connect within `timeout` seconds.

    Example:
    >>> import keras_diffusion as kd  # doctest: +SKIP
    >>> kd.distributed.initialize("node0:1234,node1:1234", process_id=int(os.environ["RANK"]))  # doctest: +SKIP
    """
    if _STATE:
        raise RuntimeError("keras_diffusion.runtime.distributed.initialize() was already called in this process.")
    if isinstance(addresses, str):
        addresses = [address.strip() for address in addresses.split(",") if address.strip()]
    addresses = list(addresses or [])
    if num_processes is None and addresses and (len(addresses) > 1 or keras.backend.backend() == "tensorflow"):
        num_processes = len(addresses)
    _check_arguments(addresses, num_processes, process_id, timeout)
    backend = keras.backend.backend()
    if backend == "jax":
        distribution = _initialize_jax(addresses[0] if addresses else None, num_processes, process_id, timeout)
    elif backend == "tensorflow":
        distribution = _initialize_tensorflow(addresses, process_id, timeout)
    else:
        raise ValueError(f"Multi-process training needs the JAX or TensorFlow backend, not {backend!r}.")
    _STATE["distribution"] = distribution
    return distribution


def _check_arguments(addresses, num_processes, process_id, timeout):
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"Address {address!r} is not 'host:port', e.g. 'node0:1234'.")
    if num_processes is not None and (not isinstance(num_processes, int) or num_processes < 1):
        raise ValueError(f"`num_processes` must be a positive integer; received {num_processes!r}.")
    if len(addresses) > 1 and num_processes != len(addresses):
        raise ValueError(f"{len(addresses)} addresses for num_processes={num_processes}: give one address per process.")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(f"`process_id` must be in 0..{num_processes - 1}; received {process_id!r}.")
    if len(addresses) == 1 and num_processes is None:
        raise ValueError("With only the coordinator's address, give `num_processes` too.")
    if (addresses or num_processes) and process_id is None:
        raise ValueError("Give `process_id` (this process's index, 0 for the chief) with the addresses.")
    if not timeout > 0:
        raise ValueError(f"`timeout` must be a positive number of seconds; received {timeout!r}.")


def _initialize_jax(coordinator, num_processes, process_id, timeout):
    import jax

    # CPU devices of different processes talk through gloo; GPUs and TPUs use their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator is not None and process_id:
        # JAX ends the whole process (no exception) when the coordinator does not answer in time.
        _wait_for([coordinator], timeout, process_id)
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        initialization_timeout=max(1, int(timeout)),
    )
    distribution = keras.distribution.DataParallel()
    keras.distribution.set_distribution(distribution)
    return distribution


def _initialize_tensorflow(addresses, process_id, timeout):
    import tensorflow as tf

    if addresses:
        if len(addresses) == 1:
            raise ValueError(
                "TensorFlow's processes each serve gRPC at their own address: give every process's "
                "'host:port' (comma-separated, process 0 first), not only the coordinator's."
            )
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": int(process_id)}}
        )
    elif not os.environ.get("TF_CONFIG"):
        raise ValueError("Give the processes' addresses, or set TF_CONFIG, for multi-process TensorFlow.")
    own, addresses = _tensorflow_task()[1:]
    others = [address for index, address in enumerate(addresses) if index != own]
    _wait_for(others, timeout, own, listen_on=addresses[own])
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=None)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _wait_for(addresses, timeout, own_index, listen_on=None):
    """Waits until every address accepts TCP connections; TimeoutError naming the ones that did not.

    The engines' own connection attempts either retry for a long time without
    a word (TensorFlow) or end the process (JAX). With `listen_on`, this
    process answers on its own address meanwhile (its gRPC server takes the
    port over afterwards), so that peers waiting for it see it.
    """
    deadline = time.monotonic() + timeout
    missing = list(addresses)
    listener = _listen_briefly(listen_on) if listen_on else (lambda: None)
    try:
        while missing and time.monotonic() < deadline:
            missing = [address for address in missing if not _accepts(address)]
            if missing:
                time.sleep(0.2)
        if not missing:
            time.sleep(1.0)  # still listening, so that a peer that checks last sees this process too
    finally:
        listener()
    if missing:
        raise TimeoutError(
            f"Process {own_index} waited {timeout:g} s for {', '.join(missing)} to accept connections. "
            "Start every process with the same addresses, each with its own process_id, and check that "
            "the ports are open between the hosts."
        )


def _listen_briefly(address):
    """Listens on `address`'s port in a thread until the returned function is called."""
    port = int(address.rpartition(":")[2])
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("", port))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            with contextlib.suppress(OSError):
                connection, _ = server.accept()
                connection.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()

    def close():
        stop.set()
        thread.join()
        server.close()

    return close


def _accepts(address) -> bool:
    host, _, port = address.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1.0):
        return True
    return False


def _tensorflow_task():
    """(number of processes, this process's index, addresses) from TF_CONFIG."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    cluster, task = config.get("cluster", {}), config.get("task", {})
    addresses = list(cluster.get("chief", [])) + list(cluster.get("worker", []))
    if not addresses:
        return 1, 0, []
    index = int(task.get("index", 0)) + (len(cluster.get("chief", [])) if task.get("type") == "worker" else 0)
    return len(addresses), index, addresses


def process_index() -> int:
    """This process's index among the training processes: 0 (the chief) .. process_count() - 1.

    Example:
    >>> process_index()
    0
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_index()
    if keras.backend.backend() == "tensorflow":
        return _tensorflow_task()[1]
    return 0


def process_count() -> int:
    """How many processes train together (1 without `initialize` or `TF_CONFIG`).

    Example:
    >>> process_count()
    1
    """
    if keras.backend.backend() == "jax":
        import jax

        return jax.process_count()
    if keras.backend.backend() == "tensorflow":
        return _tensorflow_task()[0]
    return 1


def is_chief() -> bool:
    """Whether this process writes files: process 0 (always true in a single process).

    Example:
    >>> is_chief()
    True
    """
    return process_index() == 0


def scope():
    """A context manager for building, compiling and fitting under `initialize`'s distribution.

    Without `initialize` it does nothing, so one script serves one process and many.

    Example:
    >>> with scope():
    ...     pass
    """
    distribution = _STATE.get("distribution")
    if distribution is None:
        return contextlib.nullcontext()
    return distribution.scope()


def global_batches(images, labels=None, batch_size: int = 32, shuffle: bool = True, seed: int = 0):
    """A `tf.data.Dataset` of global batches, the same on every process; each process trains on its rows.

    Both engines split every global batch of a dataset between the processes
    (JAX through Keras' `distribute_dataset`, TensorFlow's strategy by data
    sharding), so all processes must iterate the same batches in the same
    order: the shuffle is seeded and identical everywhere (a new order every
    epoch). Its seed combines with TensorFlow's global seed
    (`keras.utils.set_random_seed`), so build the dataset at the same point
    of the script in every process, as one script run N times does. In
    several processes the last partial batch is dropped: JAX needs equal
    shards.

    Args:
        images: array (N, H, W, C).
        labels: optional array (N,).
        batch_size: the global batch size; a multiple of `process_count()`.
        shuffle: reshuffle every epoch (the same order on every process).
        seed: the shuffle's seed; give every process the same.

    Returns:
        A batched `tf.data.Dataset` of images or (images, labels).

    Raises:
        ValueError: if `batch_size` does not divide between the processes.

    Example:
    >>> dataset = global_batches(np.zeros((10, 4, 4, 1), "float32"), batch_size=4)
    >>> [tuple(batch.shape) for batch in dataset]
    [(4, 4, 4, 1), (4, 4, 4, 1), (2, 4, 4, 1)]
    """
    import tensorflow as tf

    processes = process_count()
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1 or batch_size % processes:
        raise ValueError(
            f"The global batch size {batch_size!r} must be a positive multiple of the {processes} processes: "
            f"each takes batch_size / {processes} rows of every batch. Use e.g. batch_size="
            f"{max(processes, int(batch_size) // processes * processes if isinstance(batch_size, int) else 0)}."
        )
    data = images if labels is None else (images, labels)
    dataset = tf.data.Dataset.from_tensor_slices(data)
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    return dataset.batch(int(batch_size), drop_remainder=processes > 1).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------ sharing work outside the training step


def local_rows(batch_size: int) -> slice:
    """This process's rows of a batch split evenly between the processes (all of them in one process).

    Example:
    >>> local_rows(8)
    slice(0, 8, None)
    """
    count = process_count()
    share = batch_size // count
    if share * count != batch_size:
        raise ValueError(f"A batch of {batch_size} does not split evenly between {count} processes.")
    index = process_index()
    return slice(index * share, (index + 1) * share)


def share(count: int) -> slice:
    """This process's contiguous share of `count` items split as evenly as possible between the processes.

    Example:
    >>> share(10)
    slice(0, 10, None)
    """
    size = -(-count // process_count())
    start = min(count, process_index() * size)
    return slice(start, min(count, start + size))


def local_value(value):
    """`value` as an array on this process's own device, if it is a JAX array spread over several processes.

    Work that each process does on its own share (sampling, features) must
    not touch arrays that belong to every process's devices: JAX would run
    it as one program over all processes. Elsewhere `value` itself.
    """
    if getattr(value, "is_fully_addressable", True):
        return value
    return value.addressable_data(0)


def gather_rows(local: np.ndarray) -> np.ndarray:
    """Every process's `local` rows, concatenated in process order (a collective; `local` itself in one process).

    The shapes must agree except along the first axis.

    Example:
    >>> gather_rows(np.arange(3)).tolist()
    [0, 1, 2]
    """
    if process_count() == 1:
        return local
    local = np.asarray(local)
    if keras.backend.backend() == "jax":
        from jax.experimental import multihost_utils

        sizes = np.asarray(multihost_utils.process_allgather(np.array([len(local)], np.int32))).reshape(-1)
        padded = np.zeros((int(sizes.max()),) + local.shape[1:], local.dtype)
        padded[: len(local)] = local
        gathered = np.asarray(multihost_utils.process_allgather(padded))
        return np.concatenate([rows[:size] for rows, size in zip(gathered, sizes)])
    import tensorflow as tf

    strategy = _STATE.get("distribution") or multi_worker_strategy()
    if strategy is None:
        raise RuntimeError("Several TensorFlow processes but no strategy: call this inside the strategy's scope().")
    per_process = strategy.num_replicas_in_sync // process_count()

    def value(context):  # one copy per process: its first replica's
        first = context.replica_id_in_sync_group % per_process == 0
        return tf.constant(local if first else local[:0])

    return strategy.gather(strategy.experimental_distribute_values_from_function(value), axis=0).numpy()


def multi_worker_strategy():
    """The running TensorFlow MultiWorkerMirroredStrategy with several workers, else None."""
    if keras.backend.backend() != "tensorflow" or process_count() == 1:
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return None
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    return strategy


def fit_arguments(model, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """`fit`'s arguments, with arrays replaced by `global_batches` when several processes train.

    Keras shards only datasets between processes (JAX refuses arrays there,
    and TensorFlow would shuffle them differently in every process), so
    arrays become the seeded dataset of global batches every process shares.
    """
    if process_count() == 1:
        return args, kwargs
    import inspect

    bound = inspect.signature(keras.Model.fit).bind(model, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    arguments.update(arguments.pop("kwargs", {}))
    try:
        configuration = model.get_config()
    except NotImplementedError:  # a subclass without get_config: its weights' shapes stand for it
        configuration = [type(model).__name__, [tuple(w.shape) for w in model.weights]]
    check_same_everywhere(
        json.dumps([configuration, arguments.get("batch_size"), arguments.get("epochs")], sort_keys=True, default=str),
        "the model's configuration, batch_size or epochs",
    )
    x = arguments.get("x")
    if not isinstance(x, np.ndarray) and not hasattr(x, "__array__"):
        return args, kwargs
    if arguments.get("sample_weight") is not None or arguments.get("validation_split"):
        raise ValueError(
            "In a multi-process run fit() turns arrays into one dataset of global batches; "
            "sample_weight and validation_split need arrays. Pass validation_data instead."
        )
    arguments["x"] = global_batches(
        np.asarray(x),
        None if arguments.get("y") is None else np.asarray(arguments["y"]),
        batch_size=arguments.get("batch_size") or 32,
        shuffle=bool(arguments.get("shuffle", True)),
    )
    arguments.update(y=None, batch_size=None, shuffle=False)
    return (), arguments


def check_same_everywhere(text: str, what: str) -> None:
    """Raises ValueError on every process unless all processes passed the same `text` (a collective).

    Processes that build different models or batches would otherwise train
    on, exchanging gradients of mismatched shapes or hanging.
    """
    if process_count() == 1:
        return
    import hashlib

    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=np.uint8).astype(np.int32)
    if keras.backend.backend() == "jax":
        from jax.experimental import multihost_utils

        digests = np.asarray(multihost_utils.process_allgather(digest))
    else:
        strategy = _STATE.get("distribution") or multi_worker_strategy()
        if strategy is None:
            return  # no strategy: the engine will not exchange anything either
        import tensorflow as tf

        values = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(digest[None]))
        digests = strategy.gather(values, axis=0).numpy()
    differing = [index for index, row in enumerate(digests) if not np.array_equal(row, digests[0])]
    if differing:
        raise ValueError(
            f"The processes disagree on {what}: process(es) {differing} differ from process 0. Start every "
            "process with the same script, arguments and data."
        )
