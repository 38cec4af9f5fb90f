"""The machine's measured float32 matmul peak (GFLOP/s) on numpy, the Keras backend in use, and torch.

Usage: KERAS_BACKEND=jax python benchmarks/matmul_peak.py [--size 2048] [--repeats 5]

Times large square float32 matmuls C = A·B (n×n, 2·n³ FLOPs: one multiply-add
counts as 2 FLOPs) and prints the best of several repeats for each library,
after one untimed call. The best, not the mean, estimates what the hardware
can do when the machine is not busy with other work; `vs_diffusers.py` divides
training FLOP/s by it. torch is measured only when it is installed (the
`bench` extra).
"""

import argparse
import importlib.util
import time

import numpy as np


def _numpy_matmul(a, b):
    return lambda: a @ b


def _keras_matmul(a, b):
    import keras

    a, b = keras.ops.convert_to_tensor(a), keras.ops.convert_to_tensor(b)
    if keras.backend.backend() == "jax":
        import jax

        matmul = jax.jit(lambda x, y: x @ y)
        return lambda: matmul(a, b).block_until_ready()
    # TensorFlow eager runs one matmul kernel; reading one element waits for it.
    return lambda: keras.ops.convert_to_numpy(keras.ops.matmul(a, b)[0, 0])


def _torch_matmul(a, b):
    import torch

    a, b = torch.from_numpy(a), torch.from_numpy(b)

    def run():
        with torch.no_grad():
            return a @ b

    return run


LIBRARIES = {"numpy": _numpy_matmul, "keras": _keras_matmul, "torch": _torch_matmul}


def matmul_peak_gflops(library: str = "numpy", size: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul throughput of `library` over `repeats` timed n×n products.

    Args:
        library: "numpy", "keras" (the Keras backend in use) or "torch".
        size: n of the n×n matrices.
        repeats: timed products; the fastest one counts.

    Returns:
        GFLOP/s, with 2·n³ FLOPs per product.

    Example:
    >>> matmul_peak_gflops("numpy", size=64, repeats=2) > 0
    True
    """
    if library not in LIBRARIES:
        raise ValueError(f"`library` must be one of {sorted(LIBRARIES)}; received {library!r}.")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    run = LIBRARIES[library](a, b)
    run()  # compiles (JAX) or warms up the thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def measured_peaks(size: int = 2048, repeats: int = 5) -> dict[str, float]:
    """GFLOP/s of every available library (torch only when installed), keyed by library name."""
    names = ["numpy", "keras"] + (["torch"] if importlib.util.find_spec("torch") else [])
    return {name: matmul_peak_gflops(name, size, repeats) for name in names}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="n of the n x n float32 matrices")
    parser.add_argument("--repeats", type=int, default=5, help="timed products; the best counts")
    args = parser.parse_args()

    import keras

    peaks = measured_peaks(args.size, args.repeats)
    print(f"float32 matmul {args.size}x{args.size}, best of {args.repeats} (1 multiply-add = 2 FLOPs)")
    for name, gflops in peaks.items():
        label = f"keras ({keras.backend.backend()})" if name == "keras" else name
        print(f"  {label:<18} {gflops:8.1f} GFLOP/s")
    print(f"  {'machine peak':<18} {max(peaks.values()):8.1f} GFLOP/s (the best of these)")


if __name__ == "__main__":
    main()
