"""The one place where keras_diffusion looks at the Keras backend.

Everything else is written with `keras.ops` and `keras.random`; only turning a
pure function into a compiled one, the replicas of a data-parallel step, one
XLA:CPU setting, the persistent compilation cache and max pooling's form
(JAX) and Grappler's graph rewriting (TensorFlow) differ between backends.
"""

import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Callable, Mapping, MutableMapping

import keras

# The XLA:CPU option that sends convolutions to Eigen instead of YNNPACK, and the jaxlib releases
# whose XLA knows it and its value (read from the 0.8.1-0.10.2 wheels: 0.8.1 lacks the value). XLA
# aborts the process on an unknown flag or value, so it is set only where it is known to exist.
XLA_CPU_CONVOLUTION_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_JAXLIB_RANGE = ((0, 8, 2), (0, 10, 2))


def _release(version: str) -> tuple[int, ...]:
    """(0, 10, 2) for "0.10.2", "0.10.2.dev1" or "0.10.2+cuda"; () without three leading numbers."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(part) for part in match.groups()) if match else ()


def usable_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def use_multithreaded_xla_cpu_convolutions(
    environ: MutableMapping[str, str] = os.environ, jaxlib_version: str | None = None, cpus: int | None = None
) -> bool:
    """Makes XLA:CPU run convolutions on all cores (JAX backend; called on import).

    Since jaxlib 0.8 XLA:CPU hands single convolutions to YNNPACK, which runs
    each on one thread: on a 2-core CPU the U-Net's convolutions ran no faster
    than on one core, and JAX trained 2.0x slower than TensorFlow. With
    `XLA_CPU_CONVOLUTION_FLAG` XLA uses its multithreaded Eigen convolutions
    instead (the probe U-Net's training step 1.4x faster on 2 cores;
    `docs/benchmarks.md`). The flag is added to `XLA_FLAGS` only when the
    Keras backend is JAX, the process may use more than one CPU (on one,
    YNNPACK was as fast or up to 8 % faster), the installed jaxlib is one whose
    XLA knows the flag (XLA aborts on an unknown one) and `XLA_FLAGS` does not
    set `xla_cpu_experimental_ynn_fusion_type` already (yours wins). It takes
    effect if JAX has not run anything yet in this process, the case when
    `keras_diffusion` is imported before any JAX computation. It changes
    nothing on GPUs or TPUs.

    Args:
        environ: the environment to change (`os.environ`).
        jaxlib_version: the installed jaxlib's version; None to look it up.
        cpus: the CPUs this process may use; None for `usable_cpus()`.

    Returns:
        Whether the flag was added.

    Example:
    >>> environ = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    >>> added = use_multithreaded_xla_cpu_convolutions(environ, jaxlib_version="0.10.2", cpus=2)
    >>> added == (keras.backend.backend() == "jax")
    True
    """
    if keras.backend.backend() != "jax" or (usable_cpus() if cpus is None else cpus) < 2:
        return False
    flags = environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return False
    if jaxlib_version is None:
        try:
            jaxlib_version = importlib.metadata.version("jaxlib")
        except importlib.metadata.PackageNotFoundError:
            return False
    lowest, highest = _FLAG_JAXLIB_RANGE
    if not lowest <= _release(jaxlib_version) <= highest:
        return False
    environ["XLA_FLAGS"] = f"{flags} {XLA_CPU_CONVOLUTION_FLAG}".strip()
    return True


CACHE_SUBDIR = "keras_diffusion"  # under keras_home(): FID weights and statistics, the digit classifier, JAX's cache
JAX_CACHE_ENV = "KERAS_DIFFUSION_JAX_CACHE"
JAX_CACHE_MAX_BYTES = 2**30  # JAX evicts the least recently used programs beyond this (needs `filelock`)


def keras_home() -> str:
    """The Keras cache root that `keras.utils.get_file` uses by default.

    Returns:
        `$KERAS_HOME` if set, else `~/.keras`.

    Example:
    >>> keras_home().endswith(".keras") or "KERAS_HOME" in os.environ
    True
    """
    return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))


def use_persistent_compilation_cache(environ: Mapping[str, str] = os.environ) -> str | None:
    """Keeps JAX's compiled programs on disk, so a later run skips compiling them (JAX backend; called on import).

    On JAX the first `fit` step and the first `generate` call compile an XLA
    program, which took most of the first step: the 2.7 M-parameter U-Net's
    first `fit` step 10.6-11.7 s in a fresh process, 3.7-4.3 s when the
    program came from this cache (first `generate` 9.5-10.6 s against
    7.0-8.4 s; AVX-512 CPU, `benchmarks/first_step.py`, docs/benchmarks.md). A script run again, or
    the same model trained or sampled again in a new process, then skips
    those compilations. JAX caches only programs that took at least
    `jax_persistent_cache_min_compile_time_secs` (1 s) to compile, and keys
    them by the program, the XLA flags and the jaxlib version, so a changed
    model or setting compiles afresh.

    The cache is `<keras_home()>/keras_diffusion/jax_cache` (created for the
    user alone: JAX trusts what it finds there), bounded to
    `JAX_CACHE_MAX_BYTES` where the `filelock` package lets JAX evict. It is
    not set when the backend is not JAX, when JAX already has a cache folder
    (`JAX_COMPILATION_CACHE_DIR` or `jax.config`: yours wins), when the folder
    cannot be written, or when `KERAS_DIFFUSION_JAX_CACHE=off`;
    `KERAS_DIFFUSION_JAX_CACHE=<folder>` puts it elsewhere (`on` or unset: the
    default folder). It takes effect when `keras_diffusion` is imported before
    JAX has compiled anything.

    Args:
        environ: where to read `KERAS_DIFFUSION_JAX_CACHE` (`os.environ`).

    Returns:
        The cache folder this call gave JAX, or None where it left JAX alone.

    Example:
    >>> use_persistent_compilation_cache({"KERAS_DIFFUSION_JAX_CACHE": "off"}) is None
    True
    """
    choice = environ.get(JAX_CACHE_ENV, "").strip()
    if choice.lower() == "off" or keras.backend.backend() != "jax":
        return None
    import jax

    if jax.config.jax_compilation_cache_dir:
        return None
    if choice.lower() in ("", "on"):
        folder = os.path.join(keras_home(), CACHE_SUBDIR, "jax_cache")
    else:
        folder = os.path.abspath(os.path.expanduser(choice))
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    if getattr(jax.config, "jax_compilation_cache_max_size", None) == -1 and importlib.util.find_spec("filelock"):
        jax.config.update("jax_compilation_cache_max_size", JAX_CACHE_MAX_BYTES)
    return folder


GRAPPLER_ENV = "KERAS_DIFFUSION_GRAPPLER"


def tensorflow_graph_rewrites(enabled: bool | None = None) -> bool | None:
    """Reads, or sets and reads, whether TensorFlow's Grappler rewrites traced graphs (its meta-optimizer).

    Args:
        enabled: True or False to set it for the whole process; None only reads it.

    Returns:
        Whether Grappler is on; None on the other backends, which do not have it.

    Example:
    >>> tensorflow_graph_rewrites() in (True, False, None)
    True
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if enabled is not None:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not enabled})
    return not tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"]


def skip_tensorflow_graph_rewrites(environ: Mapping[str, str] = os.environ) -> bool:
    """Turns off Grappler, TensorFlow's graph rewriter, where no GPU or TPU is visible (called on import).

    TensorFlow rewrites every traced graph before its first run. On our 2-core
    CPUs that took 1.3-6.6 s of the first `fit` step (the 2.7 M-parameter
    U-Net's: 15.0 s on against 12.0 s off, means of three interleaved pairs on
    an AVX-512 CPU; 25.5 s against 18.9 s on an AVX2 one), and the rewritten
    training graphs ran no faster (the main job's step 247 ms on, 222 ms off);
    the FID Inception's inference graph runs about 6 % slower without them
    (`docs/benchmarks.md`). With a GPU or TPU visible Grappler stays on (its
    layout and fusion rewrites serve those devices);
    `KERAS_DIFFUSION_GRAPPLER=on` keeps it on anywhere and `=off` turns it off
    even there. The setting is TensorFlow's, for the whole process
    (`tensorflow_graph_rewrites`); it changes how graphs run, not what they
    compute (up to rounding in fused kernels).

    Args:
        environ: where to read `KERAS_DIFFUSION_GRAPPLER` (`os.environ`).

    Returns:
        Whether Grappler was turned off.

    Example:
    >>> skip_tensorflow_graph_rewrites({"KERAS_DIFFUSION_GRAPPLER": "on"})
    False
    """
    choice = environ.get(GRAPPLER_ENV, "").strip().lower()
    if choice not in ("", "on", "off"):
        raise ValueError(f"{GRAPPLER_ENV} must be 'on' (TensorFlow's graph rewriting kept) or 'off'; "
                         f"received {environ[GRAPPLER_ENV]!r}.")  # fmt: skip
    if keras.backend.backend() != "tensorflow" or choice == "on":
        return False
    import tensorflow as tf

    accelerator = tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
    if accelerator and choice != "off":
        return False
    tensorflow_graph_rewrites(False)
    return True


def max_pool_2x2(x):
    """2×2 max pooling with stride 2 of a channels-last batch, the same values as `keras.ops.max_pool(x, 2, 2)`.

    On JAX the windows do not overlap, so the pooling is a reshape and a
    maximum over two axes, whose gradient XLA:CPU computes far faster than
    the select-and-scatter of a pooling window's gradient: the MNIST digit
    classifier's training step (`kd.metrics.build_mnist_classifier`, batch
    128) took 67 ms against 114 ms with `MaxPooling2D`. On TensorFlow that
    form is twice as slow as its pooling kernel (76 against 39 ms), which is
    used there. The gradients differ only between exactly tied maxima (the
    reshape shares the gradient among them, the pooling kernel gives it to
    one).

    Args:
        x: tensor (batch, height, width, channels) with even height and width.

    Returns:
        The pooled tensor (batch, height / 2, width / 2, channels).

    Example:
    >>> x = keras.ops.reshape(keras.ops.arange(16, dtype="float32"), (1, 4, 4, 1))
    >>> keras.ops.convert_to_numpy(max_pool_2x2(x))[0, :, :, 0].tolist()
    [[5.0, 7.0], [13.0, 15.0]]
    """
    if keras.backend.backend() != "jax":
        return keras.ops.max_pool(x, 2, 2)
    _, height, width, channels = x.shape
    windows = keras.ops.reshape(x, (-1, height // 2, 2, width // 2, 2, channels))
    return keras.ops.max(windows, axis=(2, 4))


def compile_function(function: Callable, jit_compile: bool | str = "auto") -> Callable:
    """Compiles a pure function of tensors for the current Keras backend.

    Args:
        function: a function whose arguments and results are (nested) tensors.
            It must not read or write Keras variables except through the
            values it is given (use `Layer.stateless_call`).
        jit_compile: `True` for XLA, `False` for the backend's graph mode
            without XLA, `"auto"` for what runs fastest: XLA on JAX and on
            TensorFlow with a GPU, plain `tf.function` on a TensorFlow CPU.

    Returns:
        A callable with the same signature: `jax.jit(function)` on JAX,
        `tf.function(function)` on TensorFlow, the function itself on torch.

    Example:
    >>> double = compile_function(lambda x: x * 2)
    >>> float(double(keras.ops.ones(())))
    2.0
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        if jit_compile == "auto":
            jit_compile = bool(tf.config.list_physical_devices("GPU"))
        return tf.function(function, jit_compile=bool(jit_compile), reduce_retracing=True)
    return function


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


#: The instruction-set extensions that decide how fast a CPU trains (they set its matmul peak).
SPEED_EXTENSIONS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's model, usable cores and speed-relevant instruction-set extensions, for benchmark output.

    Figures taken on an AVX2-only CPU and on an AVX-512 one differ 2.5-4x, so
    every printed timing should carry this line.

    Args:
        cpuinfo_path: Linux's CPU description (elsewhere only the core count is known).

    Returns:
        e.g. `"AMD EPYC 9B14, 2 usable CPUs, avx2 fma avx512f avx512_bf16"`.

    Example:
    >>> "usable CPUs" in cpu_description()
    True
    """
    model, flags = "unknown CPU", set()
    try:
        with open(cpuinfo_path) as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    extensions = " ".join(name for name in SPEED_EXTENSIONS if name in flags) or "extensions unknown"
    return f"{model}, {usable_cpus()} usable CPUs, {extensions}"
