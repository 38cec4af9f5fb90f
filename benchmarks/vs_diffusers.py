"""Training throughput per FLOP of our U-Net against diffusers' UNet2DModel of the same size.

Usage:
    pip install -e ".[bench]"          # torch (CPU wheel) and diffusers
    KERAS_BACKEND=tensorflow python benchmarks/vs_diffusers.py [--image 28x28x1|32x32x3] [--batch 128]
    KERAS_BACKEND=jax python benchmarks/vs_diffusers.py
    # On a GPU: DDPM's CIFAR-10 network (35.7 M parameters), bfloat16 peak for the bf16 run
    KERAS_BACKEND=jax python benchmarks/vs_diffusers.py --preset ddpm-cifar10 --torch-device cuda \
        --dtype-policy mixed_bfloat16 --peak-dtype bfloat16 --peak-size 8192

Both networks have the same layer plan (DDPM's U-Net: `--widths` channels per
level, `--res-blocks` residual blocks per level, GroupNorm with `--norm-groups`
groups, one-head self-attention in the middle and at the sides in
`--attention` (default: the lowest resolution), stride-2 convolutions down,
nearest-neighbour upsampling and a 3×3 convolution up, dropout `--dropout`), so
their parameter counts match; both are printed. `--preset ddpm-cifar10` sets
these to the DDPM paper's CIFAR-10 network (32×32×3, 128 × (1, 2, 2, 2)
channels, attention at 16×16, 32 groups, dropout 0.1). Both train the same
way: images mapped to [-1, 1], t uniform over 1000 steps of the linear β
schedule (1e-4 to 0.02), ε-prediction with mean-square loss, Adam(2e-4), no
EMA unless `--ema` (then 0.999 on both), float32 unless `--dtype-policy
mixed_bfloat16` (then ours under that Keras policy, diffusers' forward pass
under `torch.autocast` to bfloat16; the matmul peak is float32's unless
`--peak-dtype bfloat16`). Ours is `DiffusionModel.train_on_batch` on the Keras
backend in use, on its default device (`--jit-compile` as in `compile`);
diffusers' is the usual eager PyTorch loop (`DDPMScheduler.add_noise`,
`loss.backward()`, `optimizer.step()`) on `--torch-device`, with
OMP_WAIT_POLICY=PASSIVE unless set (torch's OpenMP threads otherwise
busy-wait, which on a shared machine slows it several-fold). On a GPU each
library keeps its default float32 precision: XLA and cuDNN's convolutions may
use TF32 on both sides, torch's float32 matmuls do not.

After warm-up steps (compilation), timed rounds alternate between the two, the
order flipping every round, so that both see the same machine load; each
round's img/s ratio is one sample, and the median is printed.

FLOPs (1 multiply-add = 2 FLOPs; matrix products only: convolutions, dense
layers, the two attention products): ours from the analytic count in
`unet_flops.py`, training = 3 × forward; diffusers' from
`torch.utils.flop_counter.FlopCounterMode` over one forward and backward pass
(with the math attention kernel, whose products it can see). Achieved GFLOP/s
= img/s × training FLOPs per image; "per FLOP" compares these. The matmul peak
is the best n×n matmul of numpy (float32 on the CPU only), the Keras backend
and torch (`matmul_peak.py`), measured before and after the rounds.
"""

import argparse
import importlib
import importlib.metadata
import os
import statistics
import time

import keras
import numpy as np

import keras_diffusion as kd
from matmul_peak import measured_peaks
from unet_flops import unet_forward_flops

TIMESTEPS = 1000
LEARNING_RATE = 2e-4
EMA_DECAY = 0.999


PRESETS = {
    "probe": dict(image="28x28x1", widths="32,64,64", res_blocks=2, norm_groups=8, attention=None, dropout=0.0),
    "ddpm-cifar10": dict(
        image="32x32x3", widths="128,256,256,256", res_blocks=2, norm_groups=32, attention="16", dropout=0.1
    ),
}


def attention_side(image_shape, widths) -> int:
    """Side of the lowest-resolution feature map, where both networks attend by default."""
    return image_shape[0] // 2 ** (len(widths) - 1)


def add_network_arguments(parser) -> None:
    """The flags of the compared network pair (also `layers_vs_diffusers.py`'s)."""
    parser.add_argument("--preset", default="probe", choices=sorted(PRESETS), help="defaults for the network flags")
    parser.add_argument("--image", help="HxWxC: 28x28x1 (MNIST) or 32x32x3 (CIFAR)")
    parser.add_argument("--widths", help="channels per level, comma-separated")
    parser.add_argument("--res-blocks", type=int, help="residual blocks per level")
    parser.add_argument("--norm-groups", type=int)
    parser.add_argument("--attention", help="feature-map sides with attention, comma-separated (default: lowest)")
    parser.add_argument("--dropout", type=float)


def network_from_arguments(args) -> tuple:
    """(image_shape, widths, res_blocks, norm_groups, attention sides, dropout) from the flags, the preset filling in."""
    for name, value in PRESETS[args.preset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    image_shape = tuple(int(d) for d in args.image.split("x"))
    widths = tuple(int(w) for w in args.widths.split(","))
    attention = (
        tuple(int(side) for side in args.attention.split(","))
        if args.attention
        else (attention_side(image_shape, widths),)
    )
    sides = [image_shape[0] // 2**level for level in range(len(widths))]
    narrower = [side for side in attention if side in sides and widths[sides.index(side)] != widths[-1]]
    if narrower:  # diffusers takes one attention_head_dim for every block
        raise SystemExit(
            f"--attention {args.attention}: the levels at {narrower} are narrower than widths[-1]={widths[-1]}, "
            "so diffusers' attention there would not have one head as ours; attend only at levels as wide as the last."
        )
    return image_shape, widths, args.res_blocks, args.norm_groups, attention, args.dropout


def build_ours(image_shape, widths, num_res_blocks, norm_groups, attention, dropout, ema: bool, jit_compile):
    unet = kd.models.UNet(
        image_shape=image_shape,
        widths=widths,
        num_res_blocks=num_res_blocks,
        attention_resolutions=attention,
        norm_groups=norm_groups,
        dropout=dropout,
    )
    model = kd.DiffusionModel(unet, schedule="linear", timesteps=TIMESTEPS, ema_decay=EMA_DECAY if ema else None, seed=0)
    model.compile(optimizer=kd.optimizers.Adam(LEARNING_RATE), jit_compile=jit_compile)
    return unet, model


def build_diffusers(image_shape, widths, num_res_blocks, norm_groups, attention, dropout):
    from diffusers import UNet2DModel

    levels = len(widths)
    attends = [image_shape[0] // 2**level in attention for level in range(levels)]
    return UNet2DModel(
        sample_size=image_shape[0],
        in_channels=image_shape[2],
        out_channels=image_shape[2],
        layers_per_block=num_res_blocks,
        block_out_channels=tuple(widths),
        down_block_types=tuple("AttnDownBlock2D" if attends[level] else "DownBlock2D" for level in range(levels)),
        # diffusers lists the up blocks from the lowest resolution up.
        up_block_types=tuple("AttnUpBlock2D" if attends[level] else "UpBlock2D" for level in reversed(range(levels))),
        norm_num_groups=norm_groups,
        attention_head_dim=widths[-1],  # one head, as ours (every attending level here is widths[-1] wide)
        dropout=dropout,
    )


class DiffusersTrainer:
    """diffusers' training step: ε-MSE on DDPMScheduler-noised images, Adam."""

    def __init__(self, unet, ema: bool, bfloat16: bool = False):
        """`unet` already sits on the device the step should run on."""
        import torch
        from diffusers import DDPMScheduler

        self.torch = torch
        self.unet = unet
        self.bfloat16 = bfloat16
        self.scheduler = DDPMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
        self.optimizer = torch.optim.Adam(unet.parameters(), lr=LEARNING_RATE)
        self.ema = None
        if ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(unet.parameters(), decay=EMA_DECAY)

    def loss(self, images):
        torch = self.torch
        x0 = images * 2.0 - 1.0
        noise = torch.randn_like(x0)
        t = torch.randint(0, TIMESTEPS, (x0.shape[0],), device=x0.device)
        # mixed_bfloat16's counterpart: autocast computes the network in bfloat16, the weights stay float32.
        with torch.autocast(x0.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):
            prediction = self.unet(self.scheduler.add_noise(x0, noise, t), t).sample
        return torch.nn.functional.mse_loss(prediction.float(), noise)

    def train_step(self, images) -> float:
        loss = self.loss(images)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema is not None:
            self.ema.step(self.unet.parameters())
        return loss.item()

    def training_flops_per_image(self, images) -> int:
        """FLOPs of one forward + backward pass, per image, as FlopCounterMode counts them."""
        from torch.nn.attention import SDPBackend, sdpa_kernel
        from torch.utils.flop_counter import FlopCounterMode

        # The fused attention kernels are invisible to the counter; the math one is plain matmuls.
        with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
            self.loss(images).backward()
        self.unet.zero_grad(set_to_none=True)
        return counter.get_total_flops() // images.shape[0]


def accelerator_description(torch_device: str) -> str:
    """The Keras backend's devices and, on a GPU, the card torch uses."""
    keras_devices = ", ".join(keras.distribution.list_devices())
    text = f"keras devices [{keras_devices}]"
    if torch_device.startswith("cuda"):
        import torch

        text += f"; torch on {torch.cuda.get_device_name(torch.device(torch_device))}"
    return text


def cpu_description() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def timed(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_arguments(parser)
    parser.add_argument("--torch-device", default="cpu", help="diffusers' device: cpu or cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds per side, alternating")
    parser.add_argument("--steps", type=int, default=4, help="training steps per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side (compilation)")
    parser.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    parser.add_argument("--ema", action="store_true", help="EMA of the weights (0.999) on both sides")
    parser.add_argument(
        "--dtype-policy", default="float32", choices=["float32", "mixed_bfloat16"],
        help="ours: the Keras dtype policy; diffusers: torch.autocast to bfloat16 for mixed_bfloat16",
    )  # fmt: skip
    parser.add_argument("--peak-size", type=int, default=2048, help="n of the n x n matmuls for the peak")
    parser.add_argument("--peak-dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    network = network_from_arguments(args)

    # torch's OpenMP threads busy-wait at every barrier by default; on a machine where other
    # processes compete for the cores that makes eager torch several times slower (measured 7x
    # here at load 7 on 2 cores). Passive waiting is torch's best setting under contention, and
    # it must be set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError as error:
        raise SystemExit('vs_diffusers.py needs torch and diffusers: pip install -e ".[bench]"') from error

    image_shape, widths, _, _, attention, _ = network
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    torch_device = torch.device(args.torch_device)
    on_cpu = torch_device.type == "cpu"
    load_start = load_average()

    def peaks_now():
        return measured_peaks(args.peak_size, dtype=args.peak_dtype, torch_device=args.torch_device, with_numpy=on_cpu)

    peaks = peaks_now()

    keras.config.set_dtype_policy(args.dtype_policy)
    ours_unet, ours = build_ours(*network, args.ema, jit)
    torch.manual_seed(0)
    theirs_unet = build_diffusers(*network).to(torch_device)
    theirs = DiffusersTrainer(theirs_unet, args.ema, bfloat16=args.dtype_policy == "mixed_bfloat16")
    ours_params = ours_unet.count_params()
    theirs_params = sum(p.numel() for p in theirs.unet.parameters())

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (args.batch,) + image_shape).astype("float32")
    images_nchw = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(torch_device)
    ours_flops = 3 * unet_forward_flops(ours_unet)
    theirs_flops = theirs.training_flops_per_image(images_nchw[:8])

    def ours_step():
        ours.train_on_batch(images)  # returns the loss as a Python float: waits for the device

    def theirs_step():
        theirs.train_step(images_nchw)

    for _ in range(args.warmup):
        ours_step()
        theirs_step()
    ours_rates, theirs_rates = [], []
    for round_index in range(args.rounds):
        order = [("ours", ours_step), ("theirs", theirs_step)]
        for name, step in order if round_index % 2 == 0 else order[::-1]:
            rate = args.batch * args.steps / timed(step, args.steps)
            (ours_rates if name == "ours" else theirs_rates).append(rate)
    ratios = [(o * ours_flops) / (t * theirs_flops) for o, t in zip(ours_rates, theirs_rates)]
    after = peaks_now()
    peaks = {name: max(peaks[name], after[name]) for name in peaks}
    machine_peak = max(peaks.values())

    backend = keras.backend.backend()
    versions = {name: importlib.metadata.version(name) for name in ("keras", "torch", "diffusers")}
    backend_version = getattr(importlib.import_module(backend), "__version__", "")
    print(f"machine      {cpu_description()}; load average {load_start} at start, {load_average()} at end")
    print(f"devices      {accelerator_description(args.torch_device)}")
    print(
        f"software     keras {versions['keras']} on {backend} {backend_version} (jit_compile={args.jit_compile}, "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}); "
        f"torch {versions['torch']} on {torch_device} ({torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ['OMP_WAIT_POLICY']}), diffusers {versions['diffusers']}"
    )
    print(
        f"task         batch {args.batch} of {args.image}, eps-MSE, linear schedule T={TIMESTEPS}, "
        f"Adam({LEARNING_RATE:g}), EMA {'0.999' if args.ema else 'off'}, {args.dtype_policy}"
    )
    print(
        f"networks     widths {widths}, {args.res_blocks} res blocks/level, attention at "
        f"{', '.join(f'{side}x{side}' for side in attention)} and in the middle, dropout {args.dropout:g}: "
        f"ours {ours_params:,} params, diffusers {theirs_params:,} params (ratio {ours_params / theirs_params:.3f})"
    )
    if not 0.9 <= ours_params / theirs_params <= 1.1:
        print("WARNING      parameter counts differ by more than 10%; the comparison is not at matched size")
    print(
        f"FLOPs        training per image (1 multiply-add = 2 FLOPs): ours {ours_flops / 1e6:.1f} M "
        f"(3 x analytic forward), diffusers {theirs_flops / 1e6:.1f} M (FlopCounterMode, forward + backward)"
    )
    print(
        "matmul peak  "
        + ", ".join(f"{name if name != 'keras' else backend} {value:.1f}" for name, value in peaks.items())
        + f" GFLOP/s ({args.peak_dtype} {args.peak_size}^2, best before/after); machine peak {machine_peak:.1f}"
    )
    print(f"rounds       {args.rounds} x {args.steps} steps per side after {args.warmup} warm-up steps, alternating order")
    print(f"{'':19}{'img/s (median)':>15}{'GFLOP/s':>10}{'of machine peak':>17}{'of own peak':>13}")
    for label, rates, flops, own_peak in (
        (f"ours ({backend})", ours_rates, ours_flops, peaks["keras"]),
        ("diffusers", theirs_rates, theirs_flops, peaks["torch"]),
    ):
        rate = statistics.median(rates)
        achieved = rate * flops / 1e9
        print(f"{label:<19}{rate:>15.1f}{achieved:>10.1f}{achieved / machine_peak:>17.1%}{achieved / own_peak:>13.1%}")
    print(
        f"per FLOP     ours / diffusers = {statistics.median(ratios):.2f} "
        f"(median of {len(ratios)} rounds, range {min(ratios):.2f}-{max(ratios):.2f}); target >= 1.2"
    )


if __name__ == "__main__":
    main()
