"""Data-parallel scaling: training images/s of DiffusionModel on 1..N devices.

Usage:
    KERAS_BACKEND=jax python benchmarks/scaling.py --devices 1 2 4 8          # GPUs/TPUs
    KERAS_BACKEND=jax python benchmarks/scaling.py --devices 1 2 --cpu-devices 2
    KERAS_BACKEND=tensorflow python benchmarks/scaling.py --devices 1 2 --cpu-devices 2

Each device count trains the same model with the same batch per device (so
the global batch grows with the devices) through the backend's own data
parallelism: `keras.distribution.DataParallel` on JAX,
`tf.distribute.MirroredStrategy` on TensorFlow. Images/s are measured over
`--steps` batches of `fit` after `--warmup` batches (compilation). With
`--cpu-devices K` the CPU poses as K devices, which checks the machinery
but measures no speed-up: the K devices share the same cores.
"""

import argparse
import os
import platform
import sys
import time


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2], help="device counts to measure")
    parser.add_argument("--cpu-devices", type=int, default=0, help="split the CPU into this many devices")
    parser.add_argument("--batch-per-device", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches (compilation)")
    parser.add_argument("--preset", choices=["tiny", "mnist"], default="tiny")
    parser.add_argument("--policy", default="float32", help="e.g. mixed_bfloat16, mixed_float16")
    return parser.parse_args()


ARGS = parse_arguments()
if ARGS.cpu_devices and os.environ.get("KERAS_BACKEND", "tensorflow") == "jax":
    # Must happen before JAX starts.
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={ARGS.cpu_devices}"

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
import keras_diffusion as kd  # noqa: E402

PRESETS = {
    "tiny": lambda: kd.models.UNet(image_shape=(16, 16, 1), widths=(16, 32), num_res_blocks=1, norm_groups=4),
    "mnist": lambda: kd.models.UNet.mnist(),
}


def accelerator_devices(count):
    """The first `count` devices of the fastest kind present, as the backend names them."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        for kind in ("TPU", "GPU", "CPU"):
            devices = [device.name for device in tf.config.list_logical_devices(kind)]
            if devices:
                return devices[:count]
    return keras.distribution.list_devices()[:count]


def distribution_scope(devices):
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.distribute.MirroredStrategy(devices).scope()
    return keras.distribution.DataParallel(devices=devices).scope()


class BatchTimes(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def measure(device_count):
    """Training images/s on `device_count` devices, or None if there are not that many."""
    devices = accelerator_devices(device_count)
    if len(devices) < device_count:
        return None
    global_batch = ARGS.batch_per_device * device_count
    with distribution_scope(devices):
        keras.utils.set_random_seed(0)
        model = kd.DiffusionModel(PRESETS[ARGS.preset](), seed=0)
        model.compile(optimizer=kd.optimizers.Adam(2e-4))
        rng = np.random.default_rng(0)
        count = global_batch * (ARGS.warmup + ARGS.steps)
        images = rng.uniform(0, 1, (count,) + model.image_shape).astype("float32")
        num_classes = model.denoiser.num_classes  # the mnist preset is class-conditional
        labels = rng.integers(0, num_classes, count).astype("int32") if num_classes else None
        timer = BatchTimes()
        model.fit(images, labels, batch_size=global_batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
    seconds = timer.times[-1] - timer.times[ARGS.warmup - 1]
    return global_batch * ARGS.steps / seconds


def main():
    if ARGS.warmup < 1:
        raise SystemExit("--warmup must be >= 1: the first batch compiles the step.")
    if ARGS.cpu_devices and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * ARGS.cpu_devices)
    keras.mixed_precision.set_global_policy(ARGS.policy)
    print(
        f"backend={keras.backend.backend()} machine={platform.processor() or platform.machine()} "
        f"cpus={os.cpu_count()} preset={ARGS.preset} policy={ARGS.policy} batch/device={ARGS.batch_per_device}"
    )
    baseline = None
    for count in ARGS.devices:
        rate = measure(count)
        if rate is None:
            print(f"devices={count}: skipped, only {len(accelerator_devices(count))} available")
            continue
        baseline = baseline or rate / count
        print(f"devices={count}: {rate:.1f} img/s, scaling efficiency {rate / (count * baseline):.2f}")


if __name__ == "__main__":
    main()
