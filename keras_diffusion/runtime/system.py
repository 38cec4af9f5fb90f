"""Facts about the machine and the user's folders: usable CPUs, the CPU's description, the Keras cache root."""

import os

def usable_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


CACHE_SUBDIR = "keras_diffusion"  # under keras_home(): FID weights and statistics, the digit classifier, JAX's cache


def keras_home() -> str:
    """The Keras cache root that `keras.utils.get_file` uses by default.

    Returns:
        `$KERAS_HOME` if set, else `~/.keras`.

    Example:
    >>> keras_home().endswith(".keras") or "KERAS_HOME" in os.environ
    True
    """
    return os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))


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
