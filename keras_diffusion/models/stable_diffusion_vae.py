"""`StableDiffusionVAE`: Stable Diffusion v1's autoencoder (KL-f8) as a pretrained `AutoencoderKL`.

The architecture is `AutoencoderKL`'s with Stable Diffusion's sizes; the
published weights are read from a `.safetensors` file in the diffusers layout
(`AutoencoderKL`, e.g. `stabilityai/sd-vae-ft-mse`) or in the original LDM
layout (`vae-ft-mse-840000-ema-pruned.safetensors`), with a small reader of
our own: neither torch, diffusers, keras-cv nor keras-hub is needed.
"""

import os
import re
from collections.abc import Iterator, Sequence

import keras
import numpy as np
from keras import layers

from keras_diffusion.data.files import read_safetensors, write_safetensors
from keras_diffusion.models.autoencoder import AutoencoderKL
from keras_diffusion.models.networks.autoencoder_layers import (
    ConvResidualBlock,
    Downsample,
    SpatialSelfAttention,
    Upsample,
)

#: The fine-tuned SD v1 VAE (diffusers layout, float32, 335 MB), fetched by `from_pretrained()`.
DEFAULT_WEIGHTS_URL = "https://huggingface.co/stabilityai/sd-vae-ft-mse/resolve/main/diffusion_pytorch_model.safetensors"
DEFAULT_WEIGHTS_FILE = "sd-vae-ft-mse.safetensors"


@keras.saving.register_keras_serializable(package="keras_diffusion")
class StableDiffusionVAE(AutoencoderKL):
    """The Stable Diffusion v1 VAE: 8× downsampling to 4 latent channels (83.7 M parameters).

    Same interface as `AutoencoderKL` (images in [0, 1]; `encode`, `decode`,
    `fit` for fine-tuning). Stable Diffusion scales its latents by
    `scale_factor` = 0.18215 (≈ 1 / their standard deviation); pass it to
    `LatentDiffusionModel(scale_factor=StableDiffusionVAE.scale_factor)`, or
    let the latent model estimate its own from your data.

    The constructor builds random weights (the architecture alone, usable
    offline); `StableDiffusionVAE.from_pretrained()` loads the published
    ones. The sizes are arguments only so that tests can build a small copy.

    Args:
        image_shape: (H, W, 3) with H and W divisible by 8.
        widths: channels per level (SD: 128, 256, 512, 512).
        num_res_blocks: residual blocks per level (SD: 2).
        latent_channels: latent channels (SD: 4).
        norm_groups: GroupNormalization groups (SD: 32).
        **kwargs: `AutoencoderKL`'s `kl_weight`, `l1_weight`, `seed`, `name`.

    Example:
    >>> vae = StableDiffusionVAE.from_pretrained(image_shape=(256, 256, 3))  # doctest: +SKIP
    >>> latents = vae.encode(images) * vae.scale_factor                      # doctest: +SKIP
    """

    #: Stable Diffusion v1's latent scale (LDM's `scale_factor` for the KL-f8 model).
    scale_factor = 0.18215

    def __init__(
        self,
        image_shape: Sequence[int] = (512, 512, 3),
        widths: Sequence[int] = (128, 256, 512, 512),
        num_res_blocks: int = 2,
        latent_channels: int = 4,
        norm_groups: int = 32,
        **kwargs,
    ):
        for fixed in ("downsampling_factor", "mid_attention"):
            kwargs.pop(fixed, None)  # follow from `widths` / always on, as in Stable Diffusion
        super().__init__(
            image_shape=image_shape,
            downsampling_factor=2 ** (len(widths) - 1),
            latent_channels=latent_channels,
            widths=widths,
            num_res_blocks=num_res_blocks,
            norm_groups=norm_groups,
            mid_attention=True,
            **kwargs,
        )

    @classmethod
    def from_pretrained(
        cls, weights: str | os.PathLike | None = None, image_shape: Sequence[int] = (512, 512, 3), **kwargs
    ) -> "StableDiffusionVAE":
        """The SD v1 VAE with published weights.

        Args:
            weights: a `.safetensors` file (diffusers or LDM layout, float32,
                float16 or bfloat16) or a Keras `.weights.h5` of this class;
                None downloads `DEFAULT_WEIGHTS_URL` (sd-vae-ft-mse, 335 MB)
                once into the Keras cache.
            image_shape: the image size to build for (weights fit any size
                divisible by 8).
            **kwargs: other constructor arguments.

        Returns:
            A `StableDiffusionVAE`.

        Raises:
            OSError: when `weights` is None and the file cannot be downloaded
                (offline): the message says what to download and where to pass it.
        """
        if weights is None:
            weights = _download_default_weights()  # before building: offline, fail fast
        vae = cls(image_shape=image_shape, **kwargs)
        if os.fspath(weights).endswith(".h5"):
            vae.load_weights(weights)
        else:
            vae.load_safetensors(weights)
        return vae

    # -------------------------------------------------------------- conversion

    def torch_state_dict(self) -> dict[str, np.ndarray]:
        """The weights under diffusers' `AutoencoderKL` names, in PyTorch layouts (NCHW kernels)."""
        return {key: _to_torch_layout(np.asarray(keras.ops.convert_to_numpy(variable)), kind)
                for key, variable, kind in self._named_variables()}  # fmt: skip

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Loads weights from a dict in the diffusers or LDM layout (PyTorch shapes).

        Every variable of the model must be found, with its shape; extra
        entries (e.g. a loss network's) are ignored.
        """
        state = {_diffusers_key(key, len(self.widths)): value for key, value in state.items()}
        missing, assignments = [], []
        for key, variable, kind in self._named_variables():
            if key not in state:
                missing.append(key)
                continue
            value = _from_torch_layout(np.asarray(state[key], dtype="float32"), kind, tuple(variable.shape))
            if value.shape != tuple(variable.shape):
                raise ValueError(
                    f"Weight {key!r} has shape {state[key].shape}; this model needs {tuple(variable.shape)} "
                    f"(PyTorch layout). Build the model with the checkpoint's sizes (widths, latent_channels)."
                )
            assignments.append((variable, value))
        if missing:
            raise ValueError(
                f"{len(missing)} weights of this model are not in the checkpoint, e.g. {missing[:3]}; "
                "is it a Stable Diffusion v1 VAE (diffusers AutoencoderKL or LDM first_stage_model)?"
            )
        for variable, value in assignments:
            variable.assign(value)

    def load_safetensors(self, path: str | os.PathLike) -> None:
        """Loads a `.safetensors` file (see `load_state_dict`)."""
        state = read_safetensors(path)
        # An LDM checkpoint may hold the whole model; its VAE is under "first_stage_model.".
        prefix = "first_stage_model."
        if any(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        self.load_state_dict(state)

    def save_safetensors(self, path: str | os.PathLike) -> None:
        """Writes the weights as a diffusers-layout `.safetensors` file (float32)."""
        write_safetensors(path, self.torch_state_dict())

    def _named_variables(self) -> Iterator[tuple[str, keras.Variable, str]]:
        """(diffusers key, variable, kind) for every weight; kind is "conv", "linear" or "vector"."""
        for prefix, model in (("encoder.", self.encoder), ("decoder.", self.decoder)):
            for layer in model.layers:
                yield from _layer_variables(_diffusers_layer_name(prefix, layer.name), layer)

    def get_config(self):
        config = super().get_config()
        for fixed in ("downsampling_factor", "mid_attention"):
            config.pop(fixed)
        return config


def _diffusers_layer_name(prefix: str, name: str) -> str:
    if name in ("quant_conv", "post_quant_conv"):
        return name
    patterns = [
        (r"down_(\d+)_res_(\d+)", r"down_blocks.\1.resnets.\2"),
        (r"down_(\d+)_downsample", r"down_blocks.\1.downsamplers.0"),
        (r"up_(\d+)_res_(\d+)", r"up_blocks.\1.resnets.\2"),
        (r"up_(\d+)_upsample", r"up_blocks.\1.upsamplers.0"),
        (r"mid_res_(\d+)", r"mid_block.resnets.\1"),
        (r"mid_attention", r"mid_block.attentions.0"),
    ]
    for pattern, replacement in patterns:
        if re.fullmatch(pattern, name):
            return prefix + re.sub(pattern, replacement, name)
    return prefix + name


def _layer_variables(name: str, layer) -> Iterator[tuple[str, keras.Variable, str]]:
    if isinstance(layer, layers.Conv2D):
        yield f"{name}.weight", layer.kernel, "conv"
        yield f"{name}.bias", layer.bias, "vector"
    elif isinstance(layer, layers.GroupNormalization):
        yield f"{name}.weight", layer.gamma, "vector"
        yield f"{name}.bias", layer.beta, "vector"
    elif isinstance(layer, layers.Dense):
        yield f"{name}.weight", layer.kernel, "linear"
        yield f"{name}.bias", layer.bias, "vector"
    elif isinstance(layer, ConvResidualBlock):
        for child in ("norm1", "conv1", "norm2", "conv2", "conv_shortcut"):
            if getattr(layer, child) is not None:
                yield from _layer_variables(f"{name}.{child}", getattr(layer, child))
    elif isinstance(layer, SpatialSelfAttention):
        for child, key in (("group_norm", "group_norm"), ("to_q", "to_q"), ("to_k", "to_k"), ("to_v", "to_v"), ("to_out", "to_out.0")):
            yield from _layer_variables(f"{name}.{key}", getattr(layer, child))
    elif isinstance(layer, (Downsample, Upsample)):
        yield from _layer_variables(f"{name}.conv", layer.conv)
    elif layer.weights:
        raise TypeError(f"No weight conversion for layer {layer.name!r} ({type(layer).__name__}).")


def _to_torch_layout(value: np.ndarray, kind: str) -> np.ndarray:
    if kind == "conv":  # Keras (kh, kw, in, out) -> PyTorch (out, in, kh, kw)
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))
    if kind == "linear":  # Keras (in, out) -> PyTorch (out, in)
        return np.ascontiguousarray(value.T)
    return value


def _from_torch_layout(value: np.ndarray, kind: str, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "conv":
        return value.transpose(2, 3, 1, 0)
    if kind == "linear":
        # LDM's attention uses 1x1 convolutions, (out, in, 1, 1); diffusers' uses Linear, (out, in).
        return value.reshape(value.shape[:2]).T
    return value


# Older diffusers files name the attention projections differently.
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def _diffusers_key(key: str, num_levels: int) -> str:
    """Translates an LDM-layout (or older diffusers) key to the current diffusers name."""
    for old, new in _LEGACY_ATTENTION.items():
        key = re.sub(rf"\.attentions\.0\.{old}\.", f".attentions.0.{new}.", key)
    if not re.match(r"(encoder|decoder)\.(down|up|mid|norm_out)\b", key):
        return key
    # LDM numbers the decoder's levels from the top resolution; diffusers from the bottom.
    key = re.sub(r"^decoder\.up\.(\d+)\.", lambda m: f"decoder.up_blocks.{num_levels - 1 - int(m.group(1))}.", key)
    replacements = [
        (r"^encoder\.down\.(\d+)\.", r"encoder.down_blocks.\1."),
        (r"\.block\.(\d+)\.", r".resnets.\1."),
        (r"\.downsample\.", r".downsamplers.0."),
        (r"\.upsample\.", r".upsamplers.0."),
        (r"\.nin_shortcut\.", r".conv_shortcut."),
        (r"\.mid\.block_1\.", r".mid_block.resnets.0."),
        (r"\.mid\.block_2\.", r".mid_block.resnets.1."),
        (r"\.mid\.attn_1\.norm\.", r".mid_block.attentions.0.group_norm."),
        (r"\.mid\.attn_1\.(q|k|v)\.", r".mid_block.attentions.0.to_\1."),
        (r"\.mid\.attn_1\.proj_out\.", r".mid_block.attentions.0.to_out.0."),
        (r"\.norm_out\.", r".conv_norm_out."),
    ]
    for pattern, replacement in replacements:
        key = re.sub(pattern, replacement, key)
    return key


def _download_default_weights() -> str:
    try:
        return keras.utils.get_file(DEFAULT_WEIGHTS_FILE, DEFAULT_WEIGHTS_URL, cache_subdir="keras_diffusion")
    except Exception as error:  # keras raises a bare Exception for URL errors
        raise OSError(
            f"Could not download the Stable Diffusion VAE weights from {DEFAULT_WEIGHTS_URL} ({error}). "
            "Offline, download that file (or an LDM-layout vae-ft-mse-840000-ema-pruned.safetensors) on a "
            "machine with a network and pass its path: StableDiffusionVAE.from_pretrained(weights=path)."
        ) from None
