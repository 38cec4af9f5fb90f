"""Per-block CPU timings of the probe U-Net, to compare the JAX and TensorFlow backends.

Usage:
    KERAS_BACKEND=jax python benchmarks/jax_cpu_profile.py [--batch 128] [--only conv groupnorm unet]
    KERAS_BACKEND=tensorflow python benchmarks/jax_cpu_profile.py [--tf-xla]
    XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution KERAS_BACKEND=jax python ...

Run it once per backend (alternating, on a quiet machine) and divide the
JAX figure by the TensorFlow one for each row. Every case is a pure function
of (parameters, inputs) written with `keras.ops` or a `keras_diffusion` /
Keras layer called through `stateless_call`, compiled with `jax.jit` on JAX
and `tf.function` on TensorFlow (`jit_compile=False`, what TensorFlow uses on
a CPU; `--tf-xla` compiles with XLA instead, which tells apart "XLA:CPU is
slow" from "the JAX program is slow").

For every case it prints one line:

    name  fwd ms  fwd GFLOP/s  fwd+bwd ms  fwd+bwd GFLOP/s

for these cases (`--only` keeps the cases whose name contains one of its words):
3x3 convolutions at the probe net's sizes (Keras Conv2D channels-last, the
same with channels-first, and an im2col matmul), 1x1 convolutions (Conv2D
against a matmul with the same kernel, as ResidualBlock's shortcut computes
it), GroupNormalization (Keras' layer, a one-pass E[x], E[x²] version, and
`kd.models.GroupNormalization` with its hand-written gradient, which the U-Net uses),
SiLU, the attention block, two residual blocks, the time embedding and the
whole U-Net ("unet"),
where `fwd` is one forward call and `fwd+bwd` one call of the gradient of
mean(output²) with respect to the parameters and the float inputs (what a
training step does per block; for the whole U-Net, the parameters only). Times are the best of `--repeats` runs of
`--number` calls after two warm-up calls. GFLOP/s is shown for convolutions
and the attention matmuls (counted analytically: 2·MACs forward, 3x that for
forward+backward); `-` elsewhere. The probe net is the 1.4 M-parameter U-Net
of `train_throughput.py --preset probe` (widths 32, 64, 64; attention at 7x7).
"""

import argparse
import os
import platform
import time

import keras
import numpy as np
from keras import layers, ops

import keras_diffusion as kd
from keras_diffusion.models.networks.layers import AttentionBlock, ResidualBlock, SinusoidalEmbedding


def conv_flops(batch, size, c_in, c_out, kernel=3, stride=1):
    return 2 * batch * (size // stride) ** 2 * c_in * c_out * kernel * kernel


def hand_group_norm(groups, epsilon=1e-5):
    """GroupNorm with one pass over the data for E[x] and E[x²] (params: gamma, beta)."""

    def apply(params, x):
        gamma, beta = params
        batch, height, width, channels = x.shape
        grouped = ops.reshape(x, (-1, height * width, groups, channels // groups))
        mean = ops.mean(grouped, axis=(1, 3), keepdims=True)
        mean_square = ops.mean(ops.square(grouped), axis=(1, 3), keepdims=True)
        inv = ops.rsqrt(ops.maximum(mean_square - ops.square(mean), 0.0) + epsilon)
        normalized = ops.reshape((grouped - mean) * inv, (-1, height, width, channels))
        return normalized * gamma + beta

    return apply


def im2col_conv(params, x):
    """3x3 'same' convolution as one matmul over the 9 shifted copies of the input."""
    kernel, bias = params
    height, width = x.shape[1], x.shape[2]
    padded = ops.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    patches = ops.concatenate(
        [padded[:, i : i + height, j : j + width, :] for i in range(3) for j in range(3)], axis=-1
    )
    return ops.matmul(patches, ops.reshape(kernel, (-1, kernel.shape[-1]))) + bias


def pointwise_matmul(params, x):
    """1x1 convolution as a matmul over the channel axis."""
    kernel, bias = params
    return ops.matmul(x, ops.reshape(kernel, kernel.shape[-2:])) + bias


def layer_case(layer, input_shapes):
    """(function, params, inputs) for a Keras layer called statelessly."""
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape).astype("float32") for shape in input_shapes]
    layer.build(input_shapes[0] if len(input_shapes) == 1 else input_shapes)
    for variable in layer.trainable_variables:  # no zero kernels: keep every path busy
        variable.assign(rng.standard_normal(variable.shape).astype("float32") * 0.05)
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def function(params, *args):
        outputs, _ = layer.stateless_call(params, non_trainable, args[0] if len(args) == 1 else list(args))
        return outputs

    return function, [v.value for v in layer.trainable_variables], inputs


def build_cases(batch, only):
    b = batch
    cases = []  # (name, function, params, float inputs, const inputs, fwd flops)

    def add(name, function, params, inputs, flops=None, const=()):
        if not only or any(word in name for word in only):
            cases.append((name, function, params, inputs, list(const), flops))

    for size, c_in, c_out, stride in [(28, 1, 32, 1), (28, 32, 32, 1), (28, 96, 32, 1), (28, 32, 32, 2),
                                      (14, 128, 64, 1), (14, 64, 64, 1), (7, 64, 64, 1), (7, 128, 64, 1)]:  # fmt: skip
        conv = layers.Conv2D(c_out, 3, strides=stride, padding="same")
        add(f"conv3x3 {size}x{size} {c_in}->{c_out} s{stride}", *layer_case(conv, [(b, size, size, c_in)]),
            conv_flops(b, size, c_in, c_out, stride=stride))  # fmt: skip
    for size, c_in, c_out in [(28, 32, 32), (14, 128, 64)]:
        conv = layers.Conv2D(c_out, 3, padding="same", data_format="channels_first")
        add(f"conv3x3 NCHW {size}x{size} {c_in}->{c_out}", *layer_case(conv, [(b, c_in, size, size)]),
            conv_flops(b, size, c_in, c_out))  # fmt: skip
        _, params, inputs = layer_case(layers.Conv2D(c_out, 3, padding="same"), [(b, size, size, c_in)])
        add(f"conv3x3 im2col {size}x{size} {c_in}->{c_out}", im2col_conv, params, inputs,
            conv_flops(b, size, c_in, c_out))  # fmt: skip
    for size, c_in, c_out in [(28, 96, 32), (14, 128, 64)]:
        conv = layers.Conv2D(c_out, 1)
        add(f"conv1x1 {size}x{size} {c_in}->{c_out}", *layer_case(conv, [(b, size, size, c_in)]),
            conv_flops(b, size, c_in, c_out, kernel=1))  # fmt: skip
        _, params, inputs = layer_case(layers.Conv2D(c_out, 1), [(b, size, size, c_in)])
        add(f"conv1x1 as matmul {size}x{size} {c_in}->{c_out}", pointwise_matmul, params, inputs,
            conv_flops(b, size, c_in, c_out, kernel=1))  # fmt: skip
    for size, channels in [(28, 32), (14, 64), (7, 64)]:
        add(f"groupnorm keras {size}x{size}x{channels}",
            *layer_case(layers.GroupNormalization(8, epsilon=1e-5), [(b, size, size, channels)]))  # fmt: skip
        _, params, inputs = layer_case(layers.GroupNormalization(8, epsilon=1e-5), [(b, size, size, channels)])
        add(f"groupnorm hand {size}x{size}x{channels}", hand_group_norm(8), params, inputs)
        add(f"groupnorm ours {size}x{size}x{channels}",
            *layer_case(kd.models.GroupNormalization(8, epsilon=1e-5), [(b, size, size, channels)]))  # fmt: skip
    add("silu 28x28x32", lambda params, x: ops.silu(x), [], [np.ones((b, 28, 28, 32), "float32")])
    attention_flops = 2 * b * 49 * 64 * 64 * 4 + 2 * 2 * b * 49 * 49 * 64
    add("attention block 7x7x64", *layer_case(AttentionBlock(norm_groups=8), [(b, 7, 7, 64)]), attention_flops)
    add("resblock 28x28 32->32", *layer_case(ResidualBlock(32, norm_groups=8), [(b, 28, 28, 32), (b, 128)]),
        2 * conv_flops(b, 28, 32, 32))  # fmt: skip
    add("resblock 14x14 128->64", *layer_case(ResidualBlock(64, norm_groups=8), [(b, 14, 14, 128), (b, 128)]),
        conv_flops(b, 14, 128, 64) + conv_flops(b, 14, 64, 64) + conv_flops(b, 14, 128, 64, kernel=1))  # fmt: skip

    sinusoidal, dense_1, dense_2 = SinusoidalEmbedding(32), layers.Dense(128, activation="silu"), layers.Dense(128)
    dense_1.build((b, 32))
    dense_2.build((b, 128))

    def time_embedding(params, t):
        h, _ = dense_1.stateless_call(params[:2], [], sinusoidal(t))
        h, _ = dense_2.stateless_call(params[2:], [], h)
        return h

    add("time embedding", time_embedding, [v.value for v in dense_1.weights + dense_2.weights], [],
        const=[np.arange(b, dtype="float32")])  # fmt: skip

    if not only or any(word in "unet probe" for word in only):
        unet = kd.models.UNet(image_shape=(28, 28, 1), widths=(32, 64, 64), num_res_blocks=2,
                              attention_resolutions=(7,), num_classes=10, norm_groups=8)  # fmt: skip
        rng = np.random.default_rng(0)
        for variable in unet.trainable_variables:
            variable.assign(rng.standard_normal(variable.shape).astype("float32") * 0.05)

        def unet_forward(params, t, labels, x):
            outputs, _ = unet.stateless_call(params, [], [x, t, labels])
            return outputs

        x = rng.standard_normal((b, 28, 28, 1)).astype("float32")
        t = rng.integers(0, 1000, b).astype("float32")
        labels = rng.integers(0, 10, b).astype("int32")
        params = [v.value for v in unet.trainable_variables]
        add("unet probe (full net)", unet_forward, params, [], const=[t, labels, x])
    return cases


def compile_pair(function, params, inputs, const, tf_xla):
    """(forward, forward+backward) compiled callables taking (params, inputs, const) and returning arrays."""
    if keras.backend.backend() == "jax":
        import jax

        def loss(params, inputs, const):
            return ops.mean(ops.square(function(params, *const, *inputs)))

        forward = jax.jit(lambda params, inputs, const: function(params, *const, *inputs))
        return forward, jax.jit(jax.grad(loss, argnums=(0, 1)))
    import tensorflow as tf

    @tf.function(jit_compile=tf_xla)
    def forward(params, inputs, const):
        return function(params, *const, *inputs)

    @tf.function(jit_compile=tf_xla)
    def forward_backward(params, inputs, const):
        with tf.GradientTape() as tape:
            tape.watch(params)
            tape.watch(inputs)
            loss = ops.mean(ops.square(function(params, *const, *inputs)))
        return tape.gradient(loss, (params, inputs))

    return forward, forward_backward


def time_call(callable_, args, number, repeats):
    def run():
        result = callable_(*args)
        keras.tree.map_structure(lambda a: np.asarray(a).ravel()[:1], result)  # wait for the device

    run()
    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            run()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--number", type=int, default=5, help="calls per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is shown")
    parser.add_argument("--only", nargs="*", default=[], help="substrings of case names to run")
    parser.add_argument("--tf-xla", action="store_true", help="TensorFlow: compile with XLA (jit_compile=True)")
    args = parser.parse_args()

    backend = keras.backend.backend()
    mode = {"jax": "jax.jit", "tensorflow": "tf.function" + (" + XLA" if args.tf_xla else " (no XLA)")}[backend]
    print(f"backend  {backend}, {mode}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    print(f"machine  {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs usable; batch {args.batch}")
    print(f"{'case':38s} {'fwd ms':>9s} {'GFLOP/s':>8s} {'fwd+bwd ms':>11s} {'GFLOP/s':>8s}")
    for name, function, params, inputs, const, flops in build_cases(args.batch, args.only):
        params = [ops.convert_to_tensor(p) for p in params]
        inputs = [ops.convert_to_tensor(i) for i in inputs]
        const = [ops.convert_to_tensor(c) for c in const]
        forward, forward_backward = compile_pair(function, params, inputs, const, args.tf_xla)
        fwd = time_call(forward, (params, inputs, const), args.number, args.repeats)
        bwd = time_call(forward_backward, (params, inputs, const), args.number, args.repeats)
        rate = (lambda s, k: f"{k * flops / s / 1e9:8.1f}") if flops else (lambda s, k: f"{'-':>8s}")
        print(f"{name:38s} {fwd * 1e3:9.2f} {rate(fwd, 1)} {bwd * 1e3:11.2f} {rate(bwd, 3)}", flush=True)


if __name__ == "__main__":
    main()
