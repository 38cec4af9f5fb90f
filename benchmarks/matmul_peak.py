"""The machine's measured matmul peak (GFLOP/s) on numpy, the Keras backend in use, and torch.

Usage: KERAS_BACKEND=jax python benchmarks/matmul_peak.py [--size 2048] [--repeats 5]
       [--dtype float32|bfloat16] [--torch-device cpu|cuda]

Times large square matmuls C = A·B (n×n, 2·n³ FLOPs: one multiply-add counts
as 2 FLOPs) and prints the best of several repeats for each library, after one
untimed call. The best, not the mean, estimates what the hardware can do when
the machine is not busy with other work; `vs_diffusers.py` divides training
FLOP/s by it. torch is measured only when it is installed (the `bench` extra).

On a GPU, JAX (hence Keras on JAX) runs on it by default and torch when
`--torch-device cuda`; numpy stays on the CPU. Each library runs float32 at its
default precision: JAX's lets the GPU's tensor cores use TF32 for float32,
torch's matmul does not (`torch.backends.cuda.matmul.allow_tf32` is off), so
their float32 peaks differ by design; bfloat16 runs on the tensor cores for both.
"""

import argparse
import importlib.util
import time

import numpy as np


def _numpy_matmul(a, b, device):
    if a.dtype != np.float32:
        raise ValueError("numpy has no bfloat16 matmul; measure numpy with dtype='float32'.")
    return lambda: a @ b


def _keras_matmul(a, b, device):
    import keras

    dtype = "bfloat16" if a.dtype != np.float32 else "float32"
    a, b = keras.ops.convert_to_tensor(a, dtype), keras.ops.convert_to_tensor(b, dtype)
    if keras.backend.backend() == "jax":
        import jax

        matmul = jax.jit(lambda x, y: x @ y)
        return lambda: matmul(a, b).block_until_ready()
    # TensorFlow eager runs one matmul kernel; reading one element waits for it.
    return lambda: keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.matmul(a, b)[0, 0], "float32"))


def _torch_matmul(a, b, device):
    import torch

    dtype = torch.bfloat16 if a.dtype != np.float32 else torch.float32
    a, b = (torch.from_numpy(m.astype(np.float32)).to(device=device, dtype=dtype) for m in (a, b))

    def run():
        with torch.no_grad():
            c = a @ b
        if c.is_cuda:
            torch.cuda.synchronize()
        return c

    return run


LIBRARIES = {"numpy": _numpy_matmul, "keras": _keras_matmul, "torch": _torch_matmul}


def matmul_peak_gflops(
    library: str = "numpy", size: int = 2048, repeats: int = 5, dtype: str = "float32", torch_device: str = "cpu"
) -> float:
    """Best matmul throughput of `library` over `repeats` timed n×n products.

    Args:
        library: "numpy", "keras" (the Keras backend in use) or "torch".
        size: n of the n×n matrices.
        repeats: timed products; the fastest one counts.
        dtype: "float32" or "bfloat16" (not for numpy).
        torch_device: where torch multiplies ("cpu", "cuda"); the others ignore it.

    Returns:
        GFLOP/s, with 2·n³ FLOPs per product.

    Example:
    >>> matmul_peak_gflops("numpy", size=64, repeats=2) > 0
    True
    """
    if library not in LIBRARIES:
        raise ValueError(f"`library` must be one of {sorted(LIBRARIES)}; received {library!r}.")
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"`dtype` must be 'float32' or 'bfloat16'; received {dtype!r}.")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if dtype == "bfloat16":
        import ml_dtypes

        a, b = a.astype(ml_dtypes.bfloat16), b.astype(ml_dtypes.bfloat16)
    run = LIBRARIES[library](a, b, torch_device)
    run()  # compiles (JAX) or warms up the thread pool
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def measured_peaks(
    size: int = 2048, repeats: int = 5, dtype: str = "float32", torch_device: str = "cpu", with_numpy: bool = True
) -> dict[str, float]:
    """GFLOP/s of every available library (torch only when installed; numpy for float32 only), by name."""
    names = (["numpy"] if with_numpy and dtype == "float32" else []) + ["keras"]
    names += ["torch"] if importlib.util.find_spec("torch") else []
    return {name: matmul_peak_gflops(name, size, repeats, dtype, torch_device) for name in names}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="n of the n x n matrices")
    parser.add_argument("--repeats", type=int, default=5, help="timed products; the best counts")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--torch-device", default="cpu", help="torch's device: cpu or cuda")
    args = parser.parse_args()

    import keras

    peaks = measured_peaks(args.size, args.repeats, args.dtype, args.torch_device)
    print(f"{args.dtype} matmul {args.size}x{args.size}, best of {args.repeats} (1 multiply-add = 2 FLOPs)")
    for name, gflops in peaks.items():
        label = f"keras ({keras.backend.backend()})" if name == "keras" else name
        print(f"  {label:<18} {gflops:8.1f} GFLOP/s")
    print(f"  {'machine peak':<18} {max(peaks.values()):8.1f} GFLOP/s (the best of these)")


if __name__ == "__main__":
    main()
