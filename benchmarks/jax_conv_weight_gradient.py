"""JAX only: the weight gradient of a 3x3 convolution, XLA's against formulations of our own.

Usage (it does not import keras_diffusion, so XLA_FLAGS is yours):
    python benchmarks/jax_conv_weight_gradient.py        # jaxlib's default: YNNPACK convolutions
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution \
        python benchmarks/jax_conv_weight_gradient.py    # XLA's Eigen convolutions (keras_diffusion's choice)

On XLA:CPU the training step's gap to TensorFlow is in the convolutions'
gradients. This times, at the probe U-Net's sizes (batch 128, NHWC, "SAME"
padding), the weight gradient as XLA computes it (`xla`, `jax.vjp` of the
convolution) against three rewrites: nine matmuls of shifted input slices
with the output gradient (`taps`), one matmul of the im2col patches
(`im2col`), a convolution that contracts over the batch axis
(`asconv`) and XLA's own over two halves of the batch, summed (`split2`:
does a smaller contraction parallelise better?); and, for reference, the input gradient (`xgrad`) and the
forward convolution (`fwd`). Each rewrite is checked against XLA's result.
Best of 3 runs of 5 calls, after two warm-up calls; GFLOP/s counts the
convolution's 2·MACs.
"""

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


BATCH = 128
SIZES = [(28, 32, 32), (28, 96, 32), (14, 128, 64), (7, 64, 64)]  # (side, input channels, output channels)


def best_milliseconds(function, *args, number=5, repeats=3):
    for _ in range(2):
        jax.block_until_ready(function(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            out = function(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / number)
    return 1000 * best


def conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def weight_gradient_xla(x, kernel, upstream):
    return jax.vjp(lambda k: conv(x, k), kernel)[1](upstream)[0]


def input_gradient_xla(x, kernel, upstream):
    return jax.vjp(lambda inputs: conv(inputs, kernel), x)[1](upstream)[0]


def shifted_inputs(x):
    """The nine (dy, dx) shifts of the zero-padded input that a 3x3 "SAME" convolution reads."""
    height, width = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return [padded[:, i : i + height, j : j + width, :] for i in range(3) for j in range(3)]


def weight_gradient_taps(x, kernel, upstream):
    """dK[i, j] = Σ_{b,h,w} x[b, h+i-1, w+j-1, :]ᵀ · dy[b, h, w, :]: nine matmuls."""
    flat_upstream = upstream.reshape(-1, upstream.shape[-1])
    taps = [shifted.reshape(-1, x.shape[-1]).T @ flat_upstream for shifted in shifted_inputs(x)]
    return jnp.stack(taps).reshape(kernel.shape)


def weight_gradient_im2col(x, kernel, upstream):
    """The same as one matmul of the (batch·H·W, 9·C_in) patches with dy."""
    patches = jnp.concatenate(shifted_inputs(x), axis=-1).reshape(-1, 9 * x.shape[-1])
    return (patches.T @ upstream.reshape(-1, upstream.shape[-1])).reshape(kernel.shape)


def weight_gradient_as_convolution(x, kernel, upstream):
    """The same as a "VALID" convolution of the padded input with dy that contracts over the batch axis."""
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return lax.conv_general_dilated(padded, upstream, (1, 1), "VALID", dimension_numbers=("CHWN", "IHWO", "HWNC"))


def weight_gradient_split(x, kernel, upstream, parts=2):
    """XLA's weight gradient over `parts` slices of the batch, summed."""
    return sum(weight_gradient_xla(*args) for args in zip(jnp.split(x, parts), [kernel] * parts, jnp.split(upstream, parts)))


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print(f"jax {jax.__version__}, {len(os.sched_getaffinity(0))} CPUs usable, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; batch {BATCH}")
    rng = np.random.default_rng(0)
    cases = {
        "xla": weight_gradient_xla, "taps": weight_gradient_taps, "im2col": weight_gradient_im2col,
        "asconv": weight_gradient_as_convolution, "split2": weight_gradient_split, "xgrad": input_gradient_xla,
        "fwd": lambda x, kernel, upstream: conv(x, kernel),
    }  # fmt: skip
    for side, c_in, c_out in SIZES:
        x = jnp.asarray(rng.normal(size=(BATCH, side, side, c_in)).astype("float32"))
        kernel = jnp.asarray(rng.normal(size=(3, 3, c_in, c_out)).astype("float32") * 0.1)
        upstream = jnp.asarray(rng.normal(size=(BATCH, side, side, c_out)).astype("float32"))
        reference = jax.jit(weight_gradient_xla)(x, kernel, upstream)
        gflop = 2 * BATCH * side * side * c_in * c_out * 9 / 1e9
        figures = []
        for name, function in cases.items():
            compiled = jax.jit(function)
            if name in ("taps", "im2col", "asconv", "split2"):
                np.testing.assert_allclose(compiled(x, kernel, upstream), reference, rtol=1e-3, atol=1e-2, err_msg=name)
            milliseconds = best_milliseconds(compiled, x, kernel, upstream)
            figures.append(f"{name} {milliseconds:.1f} ms ({gflop / milliseconds * 1e3:.0f} GFLOP/s)")
        print(f"{side}x{side} {c_in}->{c_out}: " + "  ".join(figures))


if __name__ == "__main__":
    main()
