"""AutoencoderKL, DenoisingAutoencoder and the Stable Diffusion VAE adapter."""

import re

import keras
import numpy as np
import pytest
from latent_fixtures import as_numpy, trained_autoencoder

import keras_diffusion as kd
from keras_diffusion.models import stable_diffusion_vae
from keras_diffusion.models.autoencoder import AutoencoderKL, kl_to_standard_normal
from keras_diffusion.models.denoising_autoencoder import DenoisingAutoencoder
from keras_diffusion.models.stable_diffusion_vae import StableDiffusionVAE, read_safetensors, write_safetensors

# ------------------------------------------------------------------ AutoencoderKL


def test_encode_and_decode_shapes_follow_the_downsampling_factor():
    autoencoder, images, *_ = trained_autoencoder()
    assert autoencoder.latent_shape == (7, 7, 2)
    mean, log_variance = autoencoder.encode_distribution(images[:3])
    assert tuple(mean.shape) == tuple(log_variance.shape) == (3, 7, 7, 2)
    decoded = as_numpy(autoencoder.decode(mean))
    assert decoded.shape == (3, 28, 28, 1) and decoded.dtype == np.float32
    assert decoded.min() >= 0.0 and decoded.max() <= 1.0


def test_encode_returns_the_posterior_mean_or_a_seeded_sample_of_it():
    autoencoder, images, *_ = trained_autoencoder()
    mean, log_variance = (as_numpy(t) for t in autoencoder.encode_distribution(images[:4]))
    np.testing.assert_array_equal(as_numpy(autoencoder.encode(images[:4])), mean)
    sample = as_numpy(autoencoder.encode(images[:4], sample=True, seed=3))
    np.testing.assert_array_equal(sample, as_numpy(autoencoder.encode(images[:4], sample=True, seed=3)))
    standardised = (sample - mean) / np.exp(0.5 * log_variance)
    assert 0.8 < standardised.std() < 1.2 and abs(standardised.mean()) < 0.2


def test_uint8_images_encode_like_their_float_versions():
    autoencoder, images, *_ = trained_autoencoder()
    as_uint8 = np.round(images[:2] * 255).astype("uint8")
    np.testing.assert_allclose(
        as_numpy(autoencoder.encode(as_uint8)), as_numpy(autoencoder.encode(as_uint8 / np.float32(255))), atol=1e-5
    )


def test_reconstruction_improves_with_training():
    _, _, psnr_before, psnr_after, history = trained_autoencoder()
    assert psnr_after > psnr_before + 3.0
    losses = history.history["loss"]
    assert losses[-1] < losses[0] and history.history["reconstruction"][-1] < history.history["reconstruction"][0]
    assert all(np.isfinite(history.history["kl"]))


def test_autoencoder_round_trips_through_save_and_load(tmp_path):
    autoencoder, images, *_ = trained_autoencoder()
    path = tmp_path / "autoencoder.keras"
    autoencoder.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, AutoencoderKL) and restored.get_config() == autoencoder.get_config()
    np.testing.assert_array_equal(as_numpy(restored.encode(images[:2])), as_numpy(autoencoder.encode(images[:2])))
    latents = np.random.default_rng(0).normal(size=(2, 7, 7, 2)).astype("float32")
    np.testing.assert_array_equal(as_numpy(restored.decode(latents)), as_numpy(autoencoder.decode(latents)))


def test_kl_to_standard_normal_matches_numerical_integration():
    mean, log_variance = np.array([[0.3, -1.2]], "float32"), np.array([[-0.5, 0.8]], "float32")
    z = np.linspace(-12, 12, 200001)
    expected = 0.0
    for m, log_var in zip(mean[0], log_variance[0]):
        std = np.exp(0.5 * log_var)
        q = np.exp(-0.5 * ((z - m) / std) ** 2) / (std * np.sqrt(2 * np.pi))
        p = np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
        expected += np.trapezoid(q * (np.log(q + 1e-300) - np.log(p)), z)
    assert float(as_numpy(kl_to_standard_normal(mean, log_variance))[0]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(downsampling_factor=3), "power of two"),
        (dict(image_shape=(30, 30, 1), downsampling_factor=4), "divisible"),
        (dict(downsampling_factor=4, widths=(8, 8)), "needs 3 widths"),
        (dict(widths=(8, 12, 8), norm_groups=8), "must divide every width"),
        (dict(kl_weight=-1.0), "kl_weight"),
    ],
)
def test_bad_autoencoder_arguments_are_rejected(arguments, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderKL(**arguments)


def test_fit_rejects_targets_and_out_of_range_images_before_compiling():
    autoencoder, images, *_ = trained_autoencoder()
    with pytest.raises(ValueError, match="images alone"):
        autoencoder.fit(images, images)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        autoencoder.fit(images * 255.0)
    with pytest.raises(ValueError, match="shape"):
        autoencoder.fit(np.zeros((4, 32, 32, 1), "float32"))


# ------------------------------------------------------------- DenoisingAutoencoder


@pytest.fixture(scope="module")
def small_digits(mnist_subset):
    return mnist_subset[0][:256]


def test_gaussian_corruption_adds_noise_of_the_given_standard_deviation(small_digits):
    dae = DenoisingAutoencoder(filters=(4, 8), corruption="gaussian", noise_level=0.3)
    difference = as_numpy(dae.corrupt(small_digits, seed=0)) - small_digits
    assert difference.std() == pytest.approx(0.3, rel=0.02) and abs(difference.mean()) < 0.01


def test_masking_corruption_zeroes_the_given_fraction_of_pixels(small_digits):
    dae = DenoisingAutoencoder(filters=(4, 8), corruption="masking", noise_level=0.25)
    noisy = as_numpy(dae.corrupt(small_digits, seed=0))
    inked = small_digits > 0
    assert np.all((noisy == small_digits) | (noisy == 0))
    assert np.mean(noisy[inked] == 0) == pytest.approx(0.25, abs=0.02)


def test_salt_and_pepper_sets_the_given_fraction_to_black_or_white_equally(small_digits):
    dae = DenoisingAutoencoder(filters=(4, 8), corruption="salt_and_pepper", noise_level=0.2)
    noisy = as_numpy(dae.corrupt(small_digits, seed=0))
    grey = (small_digits > 0) & (small_digits < 1)  # pixels that any hit changes
    changed = noisy[grey] != small_digits[grey]
    assert np.mean(changed) == pytest.approx(0.2, abs=0.02)
    assert np.all(np.isin(noisy[grey][changed], [0.0, 1.0]))
    assert np.mean(noisy[grey][changed] == 1.0) == pytest.approx(0.5, abs=0.05)


def test_denoising_autoencoder_learns_to_remove_its_corruption(small_digits, tmp_path):
    dae = DenoisingAutoencoder(filters=(8, 16), code_channels=4, corruption="gaussian", noise_level=0.5, seed=0)
    dae.compile(optimizer=kd.optimizers.Adam(5e-3))
    history = dae.fit(small_digits, batch_size=32, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    noisy = as_numpy(dae.corrupt(small_digits, seed=1))
    denoised = as_numpy(dae.denoise(noisy))
    assert np.mean((denoised - small_digits) ** 2) < 0.5 * np.mean((noisy - small_digits) ** 2)
    dae.save(tmp_path / "dae.keras")
    restored = keras.models.load_model(tmp_path / "dae.keras")
    assert restored.get_config() == dae.get_config()
    np.testing.assert_allclose(as_numpy(restored.denoise(noisy[:4])), denoised[:4], atol=1e-6)


def test_bad_denoising_autoencoder_arguments_are_rejected():
    with pytest.raises(ValueError, match="Unknown corruption"):
        DenoisingAutoencoder(corruption="blur")
    with pytest.raises(ValueError, match="< 1"):
        DenoisingAutoencoder(corruption="masking", noise_level=1.5)
    with pytest.raises(ValueError, match="divisible"):
        DenoisingAutoencoder(image_shape=(30, 30, 1), filters=(8, 16))


# ------------------------------------------- compiling, and resuming from a saved file


def tiny_kl_autoencoder():
    return AutoencoderKL(image_shape=(8, 8, 1), downsampling_factor=2, latent_channels=2, widths=(4, 4),
                         norm_groups=2, mid_attention=False, kl_weight=0.1, seed=6)  # fmt: skip


def tiny_denoising_autoencoder():
    return DenoisingAutoencoder(image_shape=(8, 8, 1), filters=(4, 4), code_channels=2, noise_level=0.5, seed=7)


TINY_AUTOENCODERS = [tiny_kl_autoencoder, tiny_denoising_autoencoder]


@pytest.mark.parametrize("build", TINY_AUTOENCODERS, ids=["kl", "denoising"])
def test_compile_takes_no_loss_and_defaults_to_adam(build):
    model = build()
    with pytest.raises(ValueError, match=f"{type(model).__name__} defines its own loss"):
        model.compile(loss="mse")
    model.compile()
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(as_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)


def next_training_noise(model, images):
    """The noise the model's next training step draws: the corruption (DAE) or the posterior sample's ε (KL)."""
    if isinstance(model, DenoisingAutoencoder):
        return as_numpy(model.corrupt(images, seed=model.seed_generator)) - images
    return as_numpy(keras.random.normal((len(images),) + model.latent_shape, seed=model.seed_generator))


@pytest.mark.parametrize("build", TINY_AUTOENCODERS, ids=["kl", "denoising"])
def test_a_saved_and_loaded_autoencoder_continues_with_the_noise_of_the_uninterrupted_run(build, tmp_path):
    images = np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 1)).astype("float32")
    model = build()
    model.compile(optimizer=kd.optimizers.Adam(1e-2))
    model.fit(images, batch_size=8, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")
    # Training moved the seed state away from the one a new model (or a load without seed states) starts from.
    initial_state = as_numpy(build().seed_generator.state)
    assert not np.array_equal(as_numpy(model.seed_generator.state), initial_state)
    np.testing.assert_array_equal(as_numpy(restored.seed_generator.state), as_numpy(model.seed_generator.state))

    uninterrupted = model.fit(images, batch_size=8, epochs=1, shuffle=False, verbose=0).history["loss"]
    resumed = restored.fit(images, batch_size=8, epochs=1, shuffle=False, verbose=0).history["loss"]
    assert resumed == pytest.approx(uninterrupted, rel=1e-6)
    for resumed_weight, weight in zip(restored.trainable_variables, model.trainable_variables):
        np.testing.assert_allclose(as_numpy(resumed_weight), as_numpy(weight), atol=1e-6)
    np.testing.assert_array_equal(next_training_noise(restored, images[:4]), next_training_noise(model, images[:4]))


# ----------------------------------------------------------- Stable Diffusion VAE


def small_sd_vae(seed=0):
    """The SD VAE architecture at a size that runs in seconds (same code path, smaller widths)."""
    return StableDiffusionVAE(image_shape=(16, 16, 3), widths=(8, 16), num_res_blocks=1, norm_groups=4, seed=seed)


@pytest.fixture(scope="module")
def sd_vae_and_file(tmp_path_factory):
    keras.utils.set_random_seed(0)
    vae = small_sd_vae()
    path = tmp_path_factory.mktemp("sd") / "vae.safetensors"
    vae.save_safetensors(path)
    return vae, path


def test_sd_vae_random_weights_encode_and_decode_with_sd_shapes(sd_vae_and_file):
    vae, _ = sd_vae_and_file
    assert vae.scale_factor == 0.18215 and vae.downsampling_factor == 2 and vae.latent_shape == (8, 8, 4)
    images = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")
    latents = vae.encode(images)
    assert tuple(latents.shape) == (2, 8, 8, 4)
    decoded = as_numpy(vae.decode(latents))
    assert decoded.shape == (2, 16, 16, 3) and 0.0 <= decoded.min() and decoded.max() <= 1.0


def test_sd_vae_state_dict_uses_diffusers_names_and_pytorch_layouts(sd_vae_and_file):
    vae, path = sd_vae_and_file
    state = read_safetensors(path)
    assert state["encoder.conv_in.weight"].shape == (8, 3, 3, 3)  # (out, in, kh, kw)
    assert state["encoder.mid_block.attentions.0.to_q.weight"].shape == (16, 16)
    assert state["quant_conv.weight"].shape == (8, 8, 1, 1) and state["post_quant_conv.weight"].shape == (4, 4, 1, 1)
    assert "decoder.up_blocks.0.upsamplers.0.conv.weight" in state and "decoder.up_blocks.1.upsamplers.0.conv.weight" not in state
    assert "encoder.down_blocks.1.resnets.0.conv_shortcut.weight" in state  # 8 -> 16 channels
    assert sum(value.size for value in state.values()) == vae.count_params()


def test_sd_vae_loads_its_safetensors_file_exactly(sd_vae_and_file):
    vae, path = sd_vae_and_file
    other = small_sd_vae(seed=1)
    other.load_safetensors(path)
    images = np.random.default_rng(1).uniform(size=(1, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(as_numpy(other.encode(images)), as_numpy(vae.encode(images)))


def to_ldm_key(key, num_levels=2):
    """diffusers name -> the original LDM checkpoint's name (written independently of the loader)."""
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up.{num_levels - 1 - int(m.group(1))}.", key)
    for old, new in [
        ("encoder.down_blocks.", "encoder.down."), (".resnets.", ".block."), (".downsamplers.0.", ".downsample."),
        (".upsamplers.0.", ".upsample."), ("conv_shortcut", "nin_shortcut"), ("mid_block.block.0.", "mid.block_1."),
        ("mid_block.block.1.", "mid.block_2."), ("mid_block.attentions.0.group_norm.", "mid.attn_1.norm."),
        ("mid_block.attentions.0.to_out.0.", "mid.attn_1.proj_out."), ("mid_block.attentions.0.to_", "mid.attn_1."),
        ("conv_norm_out", "norm_out"),
    ]:  # fmt: skip
        key = key.replace(old, new)
    return key


def test_sd_vae_loads_ldm_layout_checkpoints_with_conv_attention(sd_vae_and_file, tmp_path):
    vae, path = sd_vae_and_file
    state = read_safetensors(path)
    ldm_state = {}
    for key, value in state.items():
        if ".attentions.0.to_" in key and key.endswith(".weight"):
            value = value[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        ldm_state["first_stage_model." + to_ldm_key(key)] = value
    ldm_state["model.diffusion_model.ignored.weight"] = np.zeros(3, "float32")  # the rest of an LDM checkpoint
    assert "first_stage_model.decoder.up.1.upsample.conv.weight" in ldm_state
    write_safetensors(tmp_path / "ldm.safetensors", ldm_state)
    other = small_sd_vae(seed=2)
    other.load_safetensors(tmp_path / "ldm.safetensors")
    latents = np.random.default_rng(2).normal(size=(1, 8, 8, 4)).astype("float32")
    np.testing.assert_array_equal(as_numpy(other.decode(latents)), as_numpy(vae.decode(latents)))


def test_sd_vae_rejects_checkpoints_of_other_sizes_or_models_before_assigning(sd_vae_and_file):
    vae, path = sd_vae_and_file
    before = [as_numpy(v) for v in vae.weights]
    state = read_safetensors(path)
    state["decoder.conv_in.weight"] = np.zeros((16, 8, 3, 3), "float32")  # 8 latent channels, not 4
    with pytest.raises(ValueError, match=r"shape \(16, 8, 3, 3\)"):
        vae.load_state_dict(state)
    state = read_safetensors(path)
    del state["encoder.conv_out.bias"]
    with pytest.raises(ValueError, match="not in the checkpoint"):
        vae.load_state_dict(state)
    assert all(np.array_equal(b, as_numpy(v)) for b, v in zip(before, vae.weights))


def test_sd_vae_without_network_says_what_to_download(monkeypatch, tmp_path):
    monkeypatch.setattr(stable_diffusion_vae, "DEFAULT_WEIGHTS_URL", "http://127.0.0.1:9/vae.safetensors")
    monkeypatch.setattr(stable_diffusion_vae, "DEFAULT_WEIGHTS_FILE", f"missing-{tmp_path.name}.safetensors")
    with pytest.raises(OSError, match=r"from_pretrained\(weights=path\)"):
        StableDiffusionVAE.from_pretrained(image_shape=(16, 16, 3), widths=(8, 16), num_res_blocks=1, norm_groups=4)


def test_sd_vae_config_round_trips(sd_vae_and_file):
    vae, _ = sd_vae_and_file
    restored = StableDiffusionVAE.from_config(vae.get_config())
    assert restored.get_config() == vae.get_config() and restored.latent_shape == vae.latent_shape
