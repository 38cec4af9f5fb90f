"""The whole training step against the denoiser's forward and forward + backward pass alone.

Usage:
    KERAS_BACKEND=jax taskset -c 1 python benchmarks/step_breakdown.py [--batch 128]
    KERAS_BACKEND=tensorflow taskset -c 1 python benchmarks/step_breakdown.py
    KERAS_BACKEND=tensorflow python benchmarks/step_breakdown.py --preset micro --batch 64   # the main job's

Times, on the probe U-Net of `train_throughput.py --preset probe` (1.6 M
parameters, 28×28, class-conditional) or a `UNet.preset` (`--preset`):

- `step`: `DiffusionModel.train_on_batch` (noising, loss, gradients, Adam,
  EMA: everything `fit` runs per batch);
- `net_fwd_bwd`: the gradient of an ε-MSE through the U-Net alone
  (`stateless_call`, compiled as `compile_function` compiles: `jax.jit` on
  JAX, `tf.function` without XLA on a TensorFlow CPU);
- `net_fwd`: the same loss without the gradient.

If `step` is close to `net_fwd_bwd`, the diffusion wrapper costs nothing
and any difference between backends is the network's; comparing `net_fwd`
with `net_fwd_bwd` across backends tells the forward from the backward pass.
Best of 3 runs of 5 calls, two rounds; run the backends one after the other
on the same core (`taskset`) and divide.
"""

import argparse
import os
import platform
import time

import keras
import numpy as np
from keras import ops

import keras_diffusion as kd
from keras_diffusion.runtime import compile_function


def probe_unet():
    return kd.models.UNet(
        image_shape=(28, 28, 1), widths=(32, 64, 64), num_res_blocks=2, attention_resolutions=(7,),
        num_classes=10, norm_groups=8,
    )  # fmt: skip


def best_seconds(function, number=5, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            function()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--preset", choices=["probe", "micro", "tiny"], default="probe",
                        help="the network: the probe net, or a kd.models.UNet.preset (micro: the main job's)")  # fmt: skip
    parser.add_argument("--dtype-policy", default="float32", help="Keras dtype policy, e.g. mixed_bfloat16")
    args = parser.parse_args()
    keras.config.set_dtype_policy(args.dtype_policy)

    unet = probe_unet() if args.preset == "probe" else kd.models.UNet.preset(args.preset)
    model = kd.DiffusionModel(unet, seed=0)
    model.compile()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.batch, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, args.batch).astype("int32")
    for _ in range(3):  # compiles
        model.train_on_batch(images, labels)

    x_t = ops.convert_to_tensor(rng.normal(size=images.shape).astype("float32"))
    t = ops.convert_to_tensor(rng.integers(0, 1000, args.batch).astype("int32"))
    noise = ops.convert_to_tensor(rng.normal(size=images.shape).astype("float32"))
    conditioning = ops.convert_to_tensor(labels)

    def loss(trainable, non_trainable):
        prediction, _ = unet.stateless_call(trainable, non_trainable, [x_t, t, conditioning], training=True)
        return ops.mean(ops.square(ops.cast(prediction, "float32") - noise))

    forward = compile_function(loss)
    if keras.backend.backend() == "jax":
        import jax

        forward_backward = compile_function(jax.grad(loss))
    else:
        import tensorflow as tf

        def gradient(trainable, non_trainable):
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                value = loss(trainable, non_trainable)
            return tape.gradient(value, trainable)

        forward_backward = compile_function(gradient)

    def variables():  # read afresh: a JAX train step donates the old buffers
        return [v.value for v in unet.trainable_variables], [v.value for v in unet.non_trainable_variables]

    def run(function):
        return lambda: [ops.convert_to_numpy(value) for value in keras.tree.flatten(function(*variables()))]

    for function in (forward, forward_backward):
        run(function)()
    cases = {"step": lambda: model.train_on_batch(images, labels), "net_fwd_bwd": run(forward_backward), "net_fwd": run(forward)}
    times = {name: [] for name in cases}
    for _ in range(2):
        for name, case in cases.items():
            times[name].append(best_seconds(case))
    print(f"{keras.backend.backend()}, batch {args.batch}, {unet.count_params():,} params, {platform.processor() or platform.machine()}, "
          f"{len(os.sched_getaffinity(0))} CPUs, {args.dtype_policy}, load {os.getloadavg()[0]:.1f}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")  # fmt: skip
    for name, values in times.items():
        seconds = min(values)
        print(f"{name:12s} {1000 * seconds:8.0f} ms  {args.batch / seconds:7.1f} img/s")


if __name__ == "__main__":
    main()
