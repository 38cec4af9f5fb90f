"""FLOPs per image of a keras_diffusion UNet: an analytic count, checked against XLA's cost analysis.

Usage: KERAS_BACKEND=jax python benchmarks/unet_flops.py [--preset probe|mnist|micro] [--image 28x28x1]
           [--upsampling nearest_conv|conv_nearest|pixel_shuffle] [--patch-size 1]

Convention (the one torch.utils.flop_counter uses, so the figures compare with
diffusers'): one multiply-add is 2 FLOPs, and only the matrix products are
counted — convolutions, dense layers and the two attention products (Q·Kᵀ and
softmax·V). GroupNorm, SiLU, softmax, additions and the optimizer are left
out; they are a few percent. A training step costs about 3× the forward pass
(the backward pass needs the gradient with respect to both the activations
and the weights, each a product as large as the forward one).

On JAX the script also prints XLA's own count (`cost_analysis()` of the
compiled forward pass and of the compiled gradient), which includes the
element-wise work, so it should lie a little above the analytic figure.
"""

import argparse


def unet_forward_flops(unet) -> int:
    """Matrix-product FLOPs of one forward pass of `unet` on one image (1 multiply-add = 2 FLOPs).

    Follows the layer plan of `keras_diffusion.models.UNet` from its config:
    conv_in, `num_res_blocks` residual blocks per level (plus attention where
    the side is in `attention_resolutions`), stride-2 downsampling, the middle
    (block, attention, block), the decoder with one more block per level on
    concatenated skips and the upsampling of its `upsampling` (DDPM's
    nearest-neighbour ×2 then a 3×3 convolution; `conv_nearest`: the
    convolution at the lower side; `pixel_shuffle`: there, to 4× the next
    level's width, which the next level then has), and conv_out; with
    `patch_size` p every level runs at 1/p of the side on p·p·C input
    channels. Per-image costs of the time/class embedding are included; they
    are negligible.

    Args:
        unet: a `keras_diffusion.models.UNet`.

    Returns:
        FLOPs per image of the forward pass.
    """
    height, width, channels = unet.image_shape
    widths, embedding_dim = unet.widths, unet.embedding_dim

    def conv(positions, kernel, cin, cout):
        return 2 * positions * kernel * kernel * cin * cout

    def res_block(positions, cin, cout):
        flops = conv(positions, 3, cin, cout) + 2 * embedding_dim * cout + conv(positions, 3, cout, cout)
        return flops + (conv(positions, 1, cin, cout) if cin != cout else 0)

    def attention(positions, c):
        # qkv projection, Q·Kᵀ, softmax·V (over all heads together), output projection.
        return 2 * positions * c * 3 * c + 2 * 2 * positions * positions * c + 2 * positions * c * c

    # Time embedding: sinusoid (widths[0]) → dense → dense.
    flops = 2 * widths[0] * embedding_dim + 2 * embedding_dim * embedding_dim
    patch = getattr(unet, "patch_size", 1)  # p x p pixels per position, as channels
    side_h, side_w, channels = height // patch, width // patch, channels * patch * patch
    flops += conv(side_h * side_w, 3, channels, widths[0])
    skips, c = [widths[0]], widths[0]
    for level, w in enumerate(widths):
        for _ in range(unet.num_res_blocks):
            flops += res_block(side_h * side_w, c, w)
            c = w
            if side_h in unet.attention_resolutions:
                flops += attention(side_h * side_w, c)
            skips.append(c)
        if level < len(widths) - 1:
            side_h, side_w = side_h // 2, side_w // 2
            flops += conv(side_h * side_w, 3, c, c)
            skips.append(c)
    flops += 2 * res_block(side_h * side_w, c, c) + attention(side_h * side_w, c)
    for level in reversed(range(len(widths))):
        for _ in range(unet.num_res_blocks + 1):
            flops += res_block(side_h * side_w, c + skips.pop(), widths[level])
            c = widths[level]
            if side_h in unet.attention_resolutions:
                flops += attention(side_h * side_w, c)
        if level > 0:
            upsampling = getattr(unet, "upsampling", "nearest_conv")
            if upsampling == "nearest_conv":  # the convolution at the doubled side
                flops += conv(4 * side_h * side_w, 3, c, c)
            elif upsampling == "conv_nearest":
                flops += conv(side_h * side_w, 3, c, c)
            else:  # pixel_shuffle: to 4 x the next level's width, then 2 x 2 pixels of it
                flops += conv(side_h * side_w, 3, c, 4 * widths[level - 1])
                c = widths[level - 1]
            side_h, side_w = side_h * 2, side_w * 2
    return flops + conv(side_h * side_w, 3, c, channels)


def unet_training_flops(unet) -> int:
    """Training-step FLOPs per image under the 3 × forward convention (forward + backward)."""
    return 3 * unet_forward_flops(unet)


def xla_flops_per_image(unet, batch_size: int = 8, gradient: bool = False) -> float:
    """XLA's cost analysis of the compiled forward pass (or its gradient) per image; JAX backend only.

    Args:
        unet: a `keras_diffusion.models.UNet` built on the JAX backend.
        batch_size: images in the traced batch (the per-image figure barely depends on it).
        gradient: count the forward pass plus the gradient of a mean-square loss
            with respect to the weights (a training step without the optimizer).

    Returns:
        FLOPs per image as XLA counts them (element-wise work included).
    """
    import jax
    import jax.numpy as jnp
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError("xla_flops_per_image needs KERAS_BACKEND=jax.")
    images = jnp.zeros((batch_size,) + tuple(unet.image_shape), "float32")
    timesteps = jnp.zeros((batch_size,), "float32")
    inputs = [images, timesteps]
    if unet.num_classes is not None:
        inputs.append(jnp.zeros((batch_size,), "int32"))
    trainable = [v.value for v in unet.trainable_variables]
    non_trainable = [v.value for v in unet.non_trainable_variables]

    def loss(trainable):
        output, _ = unet.stateless_call(trainable, non_trainable, inputs)
        return jnp.mean(jnp.square(output))

    function = jax.grad(loss) if gradient else loss
    cost = jax.jit(function).lower(trainable).compile().cost_analysis()
    if isinstance(cost, list):  # older jax returns one dict per device
        cost = cost[0]
    return float(cost["flops"]) / batch_size


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["probe", "mnist", "micro"], default="probe",
                        help="probe/mnist: the comparison nets of vs_diffusers.py; micro: UNet.preset('micro')")  # fmt: skip
    parser.add_argument("--image", default="28x28x1", help="HxWxC, e.g. 32x32x3 (probe and mnist)")
    parser.add_argument("--upsampling", default=None, help="UNet's `upsampling` (default: the preset's, else DDPM's)")
    parser.add_argument("--patch-size", type=int, default=1, help="UNet's `patch_size`")
    args = parser.parse_args()

    import keras

    import keras_diffusion as kd

    options = dict(patch_size=args.patch_size, **({"upsampling": args.upsampling} if args.upsampling else {}))
    if args.preset == "micro":
        unet = kd.models.UNet.preset("micro", **options)
    else:
        image_shape = tuple(int(d) for d in args.image.split("x"))
        unet = kd.models.UNet(
            image_shape=image_shape, widths=(32, 64, 64) if args.preset == "probe" else (32, 64, 128), num_res_blocks=2,
            attention_resolutions=(image_shape[0] // (4 * args.patch_size),), norm_groups=8, **options,
        )  # fmt: skip
    widths, args.image = unet.widths, "x".join(str(d) for d in unet.image_shape)
    forward = unet_forward_flops(unet)
    print(f"UNet widths={widths} ({unet.upsampling} upsampling, patch_size {unet.patch_size}) on {args.image}: "
          f"{unet.count_params():,} parameters (1 multiply-add = 2 FLOPs)")  # fmt: skip
    print(f"analytic   forward {forward / 1e6:9.1f} MFLOP/image   training (3x) {3 * forward / 1e6:9.1f} MFLOP/image")
    if keras.backend.backend() == "jax":
        xla_forward = xla_flops_per_image(unet)
        xla_gradient = xla_flops_per_image(unet, gradient=True)
        print(f"XLA        forward {xla_forward / 1e6:9.1f} MFLOP/image   gradient      {xla_gradient / 1e6:9.1f} MFLOP/image")
        print(f"analytic / XLA: forward {forward / xla_forward:.3f}, training {3 * forward / xla_gradient:.3f}")


if __name__ == "__main__":
    main()
