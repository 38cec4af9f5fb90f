"""What importing keras_diffusion changes in the engines, and the one switch that turns it all off.

On import the library sets three engine options that our measurements showed
to help on CPUs (`apply_engine_defaults`): XLA:CPU's multithreaded convolutions
and a persistent compilation cache on JAX, and no Grappler graph rewriting on
a CPU-only TensorFlow. Each leaves a setting of the user's alone;
`KERAS_DIFFUSION_ENGINE_DEFAULTS=off` skips all three.
"""

import importlib.metadata
import importlib.util
import os
import re
from collections.abc import Mapping, MutableMapping

import keras

from keras_diffusion.runtime.system import CACHE_SUBDIR, keras_home, usable_cpus

# The XLA:CPU option that sends convolutions to Eigen instead of YNNPACK, and the jaxlib releases
# whose XLA knows it and its value (read from the 0.8.1-0.10.2 wheels: 0.8.1 lacks the value). XLA
# aborts the process on an unknown flag or value, so it is set only where it is known to exist.
XLA_CPU_CONVOLUTION_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_FLAG_JAXLIB_RANGE = ((0, 8, 2), (0, 10, 2))


def _release(version: str) -> tuple[int, ...]:
    """(0, 10, 2) for "0.10.2", "0.10.2.dev1" or "0.10.2+cuda"; () without three leading numbers."""
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(part) for part in match.groups()) if match else ()


def use_multithreaded_xla_cpu_convolutions(
    environ: MutableMapping[str, str] = os.environ, jaxlib_version: str | None = None, cpus: int | None = None
) -> bool:
    """Makes XLA:CPU run convolutions on all cores (JAX backend; called on import).

    Since jaxlib 0.8 XLA:CPU hands single convolutions to YNNPACK, which runs
    each on one thread: on a 2-core CPU the U-Net's convolutions ran no faster
    than on one core, and JAX trained 2.0x slower than TensorFlow. With
    `XLA_CPU_CONVOLUTION_FLAG` XLA uses its multithreaded Eigen convolutions
    instead (the probe U-Net's training step 1.4x faster on 2 cores;
    `docs/lab_notes.md`). The flag is added to `XLA_FLAGS` only when the
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


JAX_CACHE_ENV = "KERAS_DIFFUSION_JAX_CACHE"
JAX_CACHE_MAX_BYTES = 2**30  # JAX evicts the least recently used programs beyond this (needs `filelock`)


def use_persistent_compilation_cache(environ: Mapping[str, str] = os.environ) -> str | None:
    """Keeps JAX's compiled programs on disk, so a later run skips compiling them (JAX backend; called on import).

    On JAX the first `fit` step and the first `generate` call compile an XLA
    program, which is most of the first step's time; with this cache a script
    run again, or the same model trained or sampled again in a new process,
    skips those compilations (the first step about 2.7× faster, see
    "First-call latency" in docs/lab_notes.md). JAX caches only programs that
    took at least `jax_persistent_cache_min_compile_time_secs` (1 s) to compile, and keys
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

    TensorFlow rewrites every traced graph before its first run. On 2-core
    CPUs that cost seconds of the first `fit` step, and the rewritten training
    graphs ran no faster; only the FID Inception's inference runs a few per cent
    slower without them ("First-call latency" in docs/lab_notes.md). With a
    GPU or TPU visible Grappler stays on (its layout and fusion rewrites serve
    those devices);
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




ENGINE_DEFAULTS_ENV = "KERAS_DIFFUSION_ENGINE_DEFAULTS"


def apply_engine_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, object]:
    """Applies the three engine defaults (called once, on import), unless `KERAS_DIFFUSION_ENGINE_DEFAULTS=off`.

    Args:
        environ: the environment to read the switches from and to add XLA's flag to.

    Returns:
        What each default did: `{"xla_cpu_convolutions": bool, "jax_compilation_cache": folder or None,
        "tensorflow_graph_rewrites_off": bool}`; empty when switched off.

    Example:
    >>> apply_engine_defaults({"KERAS_DIFFUSION_ENGINE_DEFAULTS": "off"})
    {}
    """
    choice = environ.get(ENGINE_DEFAULTS_ENV, "").strip().lower()
    if choice not in ("", "on", "off"):
        raise ValueError(
            f"{ENGINE_DEFAULTS_ENV} must be 'on' (the default) or 'off'; received {environ[ENGINE_DEFAULTS_ENV]!r}."
        )
    if choice == "off":
        return {}
    return {
        "xla_cpu_convolutions": use_multithreaded_xla_cpu_convolutions(environ),
        "jax_compilation_cache": use_persistent_compilation_cache(environ),
        "tensorflow_graph_rewrites_off": skip_tensorflow_graph_rewrites(environ),
    }
