"""The named U-Nets of the library, its examples and its command line: constructor arguments per name (data only).

`UNet.preset(name)` builds one; `keras_diffusion.training.recipes` holds the
learning rate measured for each. Why each was chosen is in docs/lab_notes.md.
"""

PRESETS: dict[str, dict] = {
    # The main job's: "tiny" at a quarter of its width, with pixel-shuffle upsampling (0.30 M parameters). At a
    # CPU's minutes it takes more updates and reaches a lower FID than any wider network we measured
    # (docs/benchmarks.md, "How good are the samples per minute of training?").
    "micro": dict(
        image_shape=(28, 28, 1), widths=(16, 32, 32), num_res_blocks=1, attention_resolutions=(), num_classes=10,
        dropout=0.0, norm_groups=8, upsampling="pixel_shuffle",
    ),
    # One residual block per level, attention only in the middle block (7x7), 1.06 M parameters: the CLI's
    # default and the network of the converged MNIST run (docs/benchmarks.md).
    "tiny": dict(
        image_shape=(28, 28, 1), widths=(32, 64, 64), num_res_blocks=1, attention_resolutions=(), num_classes=10,
        dropout=0.0, norm_groups=8,
    ),
    # The MNIST application's (the thesis' section 4.1 sizes): 3.9 M parameters.
    "mnist": dict(
        image_shape=(28, 28, 1), widths=(32, 64, 128), num_res_blocks=2, attention_resolutions=(7,), num_classes=10,
        dropout=0.1, norm_groups=8,
    ),
    # DDPM's CIFAR-10 network (Ho et al. 2020, appendix B).
    "cifar10": dict(
        image_shape=(32, 32, 3), widths=(128, 256, 256, 256), num_res_blocks=2, attention_resolutions=(16,),
        num_classes=None, dropout=0.1, norm_groups=32,
    ),
    # The thesis' CIFAR-10 network (its base code's EpsilonTheta sizes).
    "cifar10_thesis": dict(
        image_shape=(32, 32, 3), widths=(64, 128, 256, 1024), num_res_blocks=1, attention_resolutions=(4,),
        num_classes=None, dropout=0.1, norm_groups=32,
    ),
}  # fmt: skip
