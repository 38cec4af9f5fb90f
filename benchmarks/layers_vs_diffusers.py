"""Where our training step gains or loses against diffusers': every block of the two U-Nets, timed side by side.

Usage:
    pip install -e ".[bench]"          # torch (CPU wheel) and diffusers
    KERAS_BACKEND=tensorflow python benchmarks/layers_vs_diffusers.py [--batch 128] [--only resblock]
    KERAS_BACKEND=jax python benchmarks/layers_vs_diffusers.py
    # an AVX2 machine, emulated (caps all three libraries; see ../shared/MACHINES.md for how far to trust it)
    ONEDNN_MAX_CPU_ISA=AVX2 XLA_FLAGS=--xla_cpu_max_isa=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        ATEN_CPU_CAPABILITY=avx2 python benchmarks/layers_vs_diffusers.py

`vs_diffusers.py` compares the two training steps whole; this splits them.
It builds the same pair of networks (the probe U-Net: widths 32, 64, 64, two
residual blocks per level, GroupNorm with 8 groups, one-head attention at
7x7 and in the middle, DDPM's nearest-neighbour upsampling and 3x3
convolution; `--preset`, `--widths`, `--attention` etc. as there, without
dropout), walks both in the same order, and pairs each of our layers with its diffusers module: residual blocks
(`ResnetBlock2D`), attention (`Attention`), the stride-2 downsampling
convolution (`Downsample2D`), the upsampling (`Upsample2D`), the skip
concatenations (`torch.cat`), the first convolution, the time embedding and
the output head (GroupNorm, SiLU, convolution), and finally the whole network.
Blocks of the same kind and shape are timed once and counted.

Each block is timed forward (no gradients: what `generate` runs) and forward
+ backward (the gradient of mean(output²) with respect to the parameters and
the float inputs, what a training step runs; for the whole network, the
parameters only). Ours is the Keras layer called statelessly and compiled
as in `jax_cpu_profile.py` (`jax.jit`, or `tf.function` without XLA);
theirs is the eager torch module on diffusers' NCHW layout (torch's CPU
build, OMP_WAIT_POLICY=PASSIVE unless set, as in `vs_diffusers.py`). Timed
runs of `--number` calls alternate between the two, the order flipping every
run, and the best of `--repeats` runs per side is kept.

It prints one row per kind of block: how many the network has, our and
diffusers' milliseconds per call, their ratio (theirs ÷ ours: above 1 we are
faster), and the network's total for that kind (count × ms) on each side,
sorted by how many milliseconds we lose there; then the sums against the
whole network, and the CPU's instruction-set extensions.
"""

import argparse
import importlib.metadata
import os
import time

import keras
import numpy as np
from jax_cpu_profile import compile_pair
from keras import ops
from vs_diffusers import add_network_arguments, build_diffusers, network_from_arguments

import keras_diffusion as kd


def keras_input_shapes(layer, batch):
    """The shapes `layer` was called with in the functional U-Net, batch filled in."""
    inputs = layer.input if isinstance(layer.input, list) else [layer.input]
    return [(batch,) + tuple(tensor.shape[1:]) for tensor in inputs]


def keras_chain(layers_):
    """function(params, *inputs): the layers applied in turn (the first to all inputs), called statelessly."""
    sizes = [len(layer.trainable_variables) for layer in layers_]

    def function(params, *inputs):
        start = 0
        x = inputs[0] if len(inputs) == 1 else list(inputs)
        for layer, size in zip(layers_, sizes):
            non_trainable = [v.value for v in layer.non_trainable_variables]
            x, _ = layer.stateless_call(params[start : start + size], non_trainable, x)
            start += size
        return x

    return function, [v.value for layer in layers_ for v in layer.trainable_variables]


def block_pairs(ours, theirs, widths, num_res_blocks, attends, torch):
    """(name, [our layers], their torch module or None for a concatenation) per block of the two networks, in order."""
    pairs = []

    def add(name, our_layers, their_module):
        pairs.append((name, our_layers, their_module))

    get = ours.get_layer
    levels = len(widths)
    add("time embedding", [get("time_sinusoidal"), get("time_dense_1"), get("time_dense_2")],
        torch.nn.Sequential(theirs.time_proj, theirs.time_embedding))  # fmt: skip
    add("conv_in", [get("conv_in")], theirs.conv_in)
    for level in range(levels):
        down = theirs.down_blocks[level]
        for block in range(num_res_blocks):
            add("resblock", [get(f"down_{level}_res_{block}")], down.resnets[block])
            if attends[level]:
                add("attention", [get(f"down_{level}_attention_{block}")], down.attentions[block])
        if level < levels - 1:
            add("downsample (3x3, stride 2)", [get(f"down_{level}_downsample")], down.downsamplers[0])
    middle = theirs.mid_block
    add("resblock", [get("middle_res_0")], middle.resnets[0])
    add("attention", [get("middle_attention")], middle.attentions[0])
    add("resblock", [get("middle_res_1")], middle.resnets[1])
    for index, level in enumerate(reversed(range(levels))):
        up = theirs.up_blocks[index]
        for block in range(num_res_blocks + 1):
            add("concat", [get(f"up_{level}_concat_{block}")], None)
            add("resblock", [get(f"up_{level}_res_{block}")], up.resnets[block])
            if attends[level]:
                add("attention", [get(f"up_{level}_attention_{block}")], up.attentions[block])
        if level > 0:
            add("upsample (nearest, 3x3)", [get(f"up_{level}_upsample"), get(f"up_{level}_upsample_conv")],
                up.upsamplers[0])  # fmt: skip
    add("head (norm, SiLU, 3x3)", [get("norm_out"), get("silu_out"), get("conv_out")],
        torch.nn.Sequential(theirs.conv_norm_out, theirs.conv_act, theirs.conv_out))  # fmt: skip
    return pairs


def torch_pair(module, inputs, gradient_inputs, torch):
    """(forward, forward+backward) callables of an eager torch module on fixed inputs.

    forward+backward is the gradient of mean(output²) for the module's parameters and `gradient_inputs`
    (some of `inputs`).
    """
    params = [p for p in module.parameters() if p.requires_grad] if hasattr(module, "parameters") else []
    for x in gradient_inputs:
        x.requires_grad_(True)

    def output():
        out = module(*inputs)
        return out.sample if hasattr(out, "sample") else out

    def forward():
        with torch.no_grad():
            return output()

    def forward_backward():
        return torch.autograd.grad(output().square().mean(), params + list(gradient_inputs))

    return forward, forward_backward


def time_pair(ours, theirs, number, repeats):
    """Best seconds per call of each, timed runs alternating (order flipped every run) after two warm-up calls."""

    def run_ours():
        keras.tree.map_structure(lambda a: np.asarray(a).ravel()[:1], ours())  # wait for the device

    for _ in range(2):
        run_ours()
        theirs()
    best = {"ours": float("inf"), "theirs": float("inf")}
    for index in range(repeats):
        order = [("ours", run_ours), ("theirs", theirs)]
        for side, run in order if index % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            for _ in range(number):
                run()
            best[side] = min(best[side], (time.perf_counter() - start) / number)
    return best["ours"], best["theirs"]


def describe(name, layer, shapes):
    """A row's label, 'resblock 28x28 96->32'-style, from the first input's NHWC shape."""
    _, height, width, channels = shapes[0]
    if name == "concat":
        return f"concat {height}x{width} {channels}+{shapes[1][-1]}"
    if name == "resblock":
        return f"resblock {height}x{width} {channels}->{layer.filters}"
    return f"{name} {height}x{width}x{channels}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--number", type=int, default=5, help="calls per timed run")
    parser.add_argument("--repeats", type=int, default=4, help="timed runs per side, alternating; the best is kept")
    parser.add_argument("--only", nargs="*", default=[], help="substrings of block names to time (and 'unet')")
    args = parser.parse_args()
    image_shape, widths, res_blocks, norm_groups, attention, dropout = network_from_arguments(args)
    if dropout:
        raise SystemExit("layers_vs_diffusers.py times networks without dropout: add --dropout 0")

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as vs_diffusers.py: before torch loads
    try:
        import torch
    except ImportError as error:
        raise SystemExit('layers_vs_diffusers.py needs torch and diffusers: pip install -e ".[bench]"') from error

    ours = kd.models.UNet(image_shape=image_shape, widths=widths, num_res_blocks=res_blocks,
                          attention_resolutions=attention, norm_groups=norm_groups)  # fmt: skip
    torch.manual_seed(0)
    theirs = build_diffusers(image_shape, widths, res_blocks, norm_groups, attention, 0.0)
    attends = [image_shape[0] // 2**level in attention for level in range(len(widths))]
    rng = np.random.default_rng(0)

    rows = {}  # label -> [count, ours fwd, theirs fwd, ours fwd+bwd, theirs fwd+bwd]
    for name, our_layers, their_module in block_pairs(ours, theirs, widths, res_blocks, attends, torch):
        if name == "time embedding":
            shapes = [(args.batch,)]
            label = name
        else:
            shapes = keras_input_shapes(our_layers[0], args.batch)
            label = describe(name.split(" (")[0], our_layers[0], shapes)
        if args.only and not any(word in label for word in args.only):
            continue
        if label in rows:
            rows[label][0] += 1
            continue
        if name == "time embedding":
            t = rng.integers(0, 1000, args.batch)
            our_inputs, our_const = [], [t.astype("float32")]
            their_inputs = [torch.from_numpy(t)]
        else:
            arrays = [rng.standard_normal(shape).astype("float32") for shape in shapes]
            if name == "resblock":  # the time embedding is an input of the block, without gradient on either side
                our_inputs, our_const = arrays[:1], arrays[1:]
            else:
                our_inputs, our_const = arrays, []
            their_inputs = [
                torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2) if a.ndim == 4 else a)) for a in arrays
            ]
        function, params = keras_chain(our_layers)
        if name == "resblock":  # stateless_call takes [x, embedding]; our_const holds the embedding
            chained = function
            function = lambda params, embedding, x: chained(params, x, embedding)  # noqa: E731
        module = their_module if their_module is not None else (lambda *xs: torch.cat(xs, dim=1))
        gradient_inputs = their_inputs[:1] if name == "resblock" else [x for x in their_inputs if x.is_floating_point()]
        their_forward, their_forward_backward = torch_pair(module, their_inputs, gradient_inputs, torch)
        times = time_block(function, params, our_inputs, our_const, their_forward, their_forward_backward, args)
        rows[label] = [1, *times]
        print(f"  timed {label}", flush=True)

    whole = None
    if not args.only or "unet" in args.only:
        x = rng.standard_normal((args.batch,) + image_shape).astype("float32")
        t = rng.integers(0, 1000, args.batch)

        def unet(params, t, x):
            outputs, _ = ours.stateless_call(params, [], [x, t])
            return outputs

        their_x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        their_forward, their_forward_backward = torch_pair(theirs, [their_x, torch.from_numpy(t)], [], torch)
        whole = time_block(unet, [v.value for v in ours.trainable_variables], [], [t.astype("float32"), x],
                           their_forward, their_forward_backward, args)  # fmt: skip

    report(rows, whole, args, torch)


def time_block(function, params, inputs, const, their_forward, their_forward_backward, args):
    params = [ops.convert_to_tensor(p) for p in params]
    inputs = [ops.convert_to_tensor(i) for i in inputs]
    const = [ops.convert_to_tensor(c) for c in const]
    forward, forward_backward = compile_pair(function, params, inputs, const, tf_xla=False)
    ours_forward, theirs_forward = time_pair(lambda: forward(params, inputs, const), their_forward,
                                             args.number, args.repeats)  # fmt: skip
    ours_step, theirs_step = time_pair(lambda: forward_backward(params, inputs, const), their_forward_backward,
                                       args.number, args.repeats)  # fmt: skip
    return ours_forward * 1e3, theirs_forward * 1e3, ours_step * 1e3, theirs_step * 1e3


def report(rows, whole, args, torch):
    backend = keras.backend.backend()
    versions = {name: importlib.metadata.version(name) for name in ("keras", "torch", "diffusers")}
    print(f"machine   {kd.runtime.cpu_description()}")
    print(f"software  keras {versions['keras']} on {backend}; torch {versions['torch']} "
          f"({torch.get_num_threads()} threads), diffusers {versions['diffusers']}; batch {args.batch}, float32; "
          f"best of {args.repeats} runs of {args.number} calls per side, alternating")  # fmt: skip
    header = (f"{'block':28s} {'n':>3s} | {'fwd ms ours':>11s} {'theirs':>7s} {'÷':>5s} | "
              f"{'fwd+bwd ms ours':>15s} {'theirs':>7s} {'÷':>5s} | {'n x fwd+bwd ours':>16s} {'theirs':>7s} "
              f"{'lost':>7s}")  # fmt: skip
    print(header)
    totals = np.zeros(4)
    for label, (count, of, tf_, ob, tb) in sorted(rows.items(), key=lambda r: r[1][0] * (r[1][4] - r[1][3])):
        totals += count * np.array([of, tf_, ob, tb])
        print(f"{label:28s} {count:3d} | {of:11.2f} {tf_:7.2f} {tf_ / of:5.2f} | {ob:15.2f} {tb:7.2f} {tb / ob:5.2f} | "
              f"{count * ob:16.1f} {count * tb:7.1f} {count * (ob - tb):7.1f}")  # fmt: skip
    of, tf_, ob, tb = totals
    print(f"{'sum of the blocks':28s} {'':3s} | {of:11.1f} {tf_:7.1f} {tf_ / of:5.2f} | {ob:15.1f} {tb:7.1f} "
          f"{tb / ob:5.2f} |")  # fmt: skip
    if whole is not None:
        of, tf_, ob, tb = whole
        print(f"{'whole network':28s} {'':3s} | {of:11.1f} {tf_:7.1f} {tf_ / of:5.2f} | {ob:15.1f} {tb:7.1f} "
              f"{tb / ob:5.2f} |  (parameter gradients only)")  # fmt: skip
    print("÷ = theirs / ours: above 1 ours is faster. lost = n x (ours - theirs) ms, forward + backward.")


if __name__ == "__main__":
    main()
