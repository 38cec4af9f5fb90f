import io

import keras
import numpy as np
import pytest
from conftest import randomise_output, skip_tensorflow_bfloat16_under_an_isa_cap, tiny_unet

import keras_diffusion as kd


def outputs(unet, x, t, labels=None):
    inputs = [x, np.asarray(t, "float32")] + ([np.asarray(labels, "int32")] if labels is not None else [])
    return keras.ops.convert_to_numpy(unet(inputs))


@pytest.mark.parametrize("image_shape, widths", [((28, 28, 1), (8, 16, 16)), ((32, 32, 3), (8, 16, 16, 16))])
def test_output_has_the_input_shape_at_mnist_and_cifar_sizes(image_shape, widths):
    unet = kd.models.UNet(image_shape=image_shape, widths=widths, num_res_blocks=1, norm_groups=4)
    x = np.zeros((2,) + image_shape, "float32")
    assert outputs(unet, x, [0, 999]).shape == (2,) + image_shape


def test_output_convolution_starts_at_zero():
    unet = kd.models.UNet(image_shape=(8, 8, 1), widths=(8, 16), num_res_blocks=1, norm_groups=4)
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(outputs(unet, x, [5, 50]), 0.0)


def test_label_and_timestep_change_the_output_and_null_class_has_its_own_embedding():
    unet = tiny_unet(num_classes=3)
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 1)).astype("float32")
    base = outputs(unet, x, [10], [0])
    assert not np.allclose(base, outputs(unet, x, [10], [1]))
    assert not np.allclose(base, outputs(unet, x, [500], [0]))
    assert not np.allclose(base, outputs(unet, x, [10], [3]))  # label 3 = null class
    assert unet.get_layer("class_embedding").input_dim == 4


def test_cifar10_preset_has_the_ddpm_parameter_count():
    # DDPM's CIFAR-10 model: 35.7 M parameters (Ho et al. 2020, section 4).
    assert kd.models.UNet.cifar10().count_params() == pytest.approx(35.7e6, rel=0.005)


def test_mnist_preset_is_small_and_conditional():
    unet = kd.models.UNet.mnist()
    assert 1e6 <= unet.count_params() <= 7e6
    assert unet.num_classes == 10 and unet.image_shape == (28, 28, 1)


def test_config_round_trip_rebuilds_the_same_architecture():
    unet = tiny_unet(num_classes=2)
    clone = kd.models.UNet.from_config(unet.get_config())
    assert clone.get_config() == unet.get_config()
    assert [w.shape for w in clone.weights] == [w.shape for w in unet.weights]


def test_summary_lists_the_blocks_without_printing_on_construction(capsys):
    unet = tiny_unet()
    assert capsys.readouterr().out == ""
    buffer = io.StringIO()
    unet.summary(print_fn=lambda line, **kwargs: buffer.write(line + "\n"))
    assert "middle_attention" in buffer.getvalue() and "conv_out" in buffer.getvalue()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_shape=(28, 28, 1), widths=(8, 16, 16, 16)), "divisible"),
        (dict(image_shape=(28, 28), widths=(8,)), "image_shape"),
        (dict(image_shape=(8, 8, 1), widths=(8, 12), norm_groups=8), "norm_groups"),
        (dict(image_shape=(8, 8, 1), widths=(8,), norm_groups=4, num_classes=0), "num_classes"),
        (dict(image_shape=(8, 8, 1), widths=(8,), norm_groups=4, dropout=1.5), "dropout"),
    ],
)
def test_bad_unet_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        kd.models.UNet(**kwargs)


def dropped(rate, x, seed=0, training=True):
    return keras.ops.convert_to_numpy(kd.models.GlobalBatchDropout(rate, seed=seed)(x, training=training))


def test_global_batch_dropout_zeroes_the_rate_of_units_and_keeps_the_mean():
    rate = 0.3
    out = dropped(rate, np.ones((64, 32, 32, 4), "float32"))  # 262,144 units: the rate's standard error is 0.0009
    assert abs(np.mean(out == 0) - rate) < 0.005
    np.testing.assert_allclose(out[out != 0], 1.0 / (1.0 - rate), rtol=1e-6)  # inverted dropout: survivors scaled
    assert abs(np.mean(out) - 1.0) < 0.01


def test_global_batch_dropout_is_the_identity_at_inference_and_at_rate_zero():
    x = np.random.default_rng(0).standard_normal((4, 8, 8, 2)).astype("float32")
    np.testing.assert_array_equal(dropped(0.5, x, training=False), x)
    np.testing.assert_array_equal(dropped(0.5, x, training=None), x)
    np.testing.assert_array_equal(dropped(0.0, x, training=True), x)


def test_global_batch_dropout_on_one_device_drops_what_keras_dropout_drops():
    # The same mask from the same seed state: a run resumed from a file of an older version keeps its masks.
    x = np.random.default_rng(1).standard_normal((4, 8, 8, 2)).astype("float32")
    ours = dropped(0.4, x, seed=7)
    theirs = keras.ops.convert_to_numpy(keras.layers.Dropout(0.4, seed=7)(x, training=True))
    np.testing.assert_array_equal(ours == 0, theirs == 0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_global_batch_dropout_config_round_trips_and_rejects_bad_rates():
    layer = kd.models.GlobalBatchDropout(0.25, seed=3, name="drop")
    restored = kd.models.GlobalBatchDropout.from_config(layer.get_config())
    assert (restored.rate, restored.seed, restored.name) == (0.25, 3, "drop")
    x = np.ones((2, 16), "float32")
    np.testing.assert_array_equal(layer(x, training=True), restored(x, training=True))  # same seed, same mask
    with pytest.raises(ValueError, match=r"rate.*\[0, 1\).*1\.0"):
        kd.models.GlobalBatchDropout(1.0)


def test_attention_block_is_softmax_attention_per_head_with_a_residual():
    from keras_diffusion.models.networks.layers import AttentionBlock

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 3, 8)).astype("float32")
    block = AttentionBlock(num_heads=2, norm_groups=4)
    block.build(x.shape)
    for variable in block.weights:
        variable.assign(rng.standard_normal(variable.shape).astype("float32") * 0.5)
    normalized = keras.ops.convert_to_numpy(block.norm(x)).reshape(2, 9, 8)
    qkv = normalized @ keras.ops.convert_to_numpy(block.qkv.kernel) + keras.ops.convert_to_numpy(block.qkv.bias)
    query, key, value = (part.reshape(2, 9, 2, 4) for part in np.split(qkv, 3, axis=-1))
    scores = np.einsum("bqhd,bkhd->bhqk", query, key) / np.sqrt(4)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = np.einsum("bhqk,bkhd->bqhd", weights, value).reshape(2, 9, 8)
    projected = attended @ keras.ops.convert_to_numpy(block.projection.kernel)
    expected = x + (projected + keras.ops.convert_to_numpy(block.projection.bias)).reshape(x.shape)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(block(x)), expected, rtol=1e-4, atol=1e-4)


def test_blocks_pass_their_dtype_policy_to_their_sublayers():
    skip_tensorflow_bfloat16_under_an_isa_cap()
    from keras_diffusion.models.networks import autoencoder_layers
    from keras_diffusion.models.networks.layers import AttentionBlock, ResidualBlock

    x = np.ones((1, 4, 4, 8), "float32")
    blocks = [
        ResidualBlock(16, norm_groups=4, dtype="mixed_bfloat16"),
        AttentionBlock(num_heads=2, norm_groups=4, dtype="mixed_bfloat16"),
        autoencoder_layers.ConvResidualBlock(16, norm_groups=4, dtype="mixed_bfloat16"),
        autoencoder_layers.SpatialSelfAttention(norm_groups=4, dtype="mixed_bfloat16"),
        autoencoder_layers.Downsample(8, dtype="mixed_bfloat16"),
        autoencoder_layers.Upsample(8, dtype="mixed_bfloat16"),
    ]
    outputs = [blocks[0]([x, np.ones((1, 32), "float32")])] + [block(x) for block in blocks[1:]]
    assert [keras.backend.standardize_dtype(y.dtype) for y in outputs] == ["bfloat16"] * len(blocks)
    for block in blocks:
        assert {layer.dtype_policy.name for layer in block._flatten_layers(include_self=False)} == {"mixed_bfloat16"}
        assert {v.dtype for v in block.weights} == {"float32"}


def test_the_default_norm_groups_work_for_any_widths():
    unet = kd.models.UNet(image_shape=(8, 8, 1), widths=(16, 32), num_res_blocks=1)  # 32 groups would not divide 16
    assert unet.norm_groups == unet.get_config()["norm_groups"] == 16
    assert kd.models.networks.unet.default_norm_groups((64, 128, 256)) == 32  # DDPM's value where it fits
    assert kd.models.networks.unet.default_norm_groups((24, 40)) == 8
    assert kd.models.networks.unet.default_norm_groups((7,)) == 7


def test_presets_are_one_table_behind_unet_preset():
    tiny = kd.models.UNet.preset("tiny")
    table = kd.models.PRESETS["tiny"]
    config = tiny.get_config()
    def plain(value):
        return tuple(value) if isinstance(value, (list, tuple)) else value

    assert {key: plain(config[key]) for key in table} == table
    assert tiny.count_params() == 1_063_905  # quoted in README and docs
    micro = kd.models.UNet.preset("micro")  # the main job's network, quoted in README and docs
    assert micro.count_params() == 302_417 and micro.upsampling == "pixel_shuffle"
    # Its upsampling convolutions run at the lower side: 14x14 -> 4 x 16 channels, shuffled into 28x28 x 16.
    assert micro.get_layer("up_1_upsample_conv").output.shape == (None, 14, 14, 64)
    assert micro.get_layer("up_1_upsample").output.shape == (None, 28, 28, 16)
    # The measured peak learning rates name presets; the others get DDPM's.
    assert set(kd.training.PEAK_LEARNING_RATES) <= set(kd.models.PRESETS)
    assert kd.training.peak_learning_rate("mnist") == 2e-4
    # Widths without norm_groups keep the largest group count that divides them and the preset's.
    narrow = kd.models.UNet.preset("tiny", widths=(12, 24, 24), num_classes=None)
    assert narrow.norm_groups == 4 and narrow.num_classes is None
    with pytest.raises(ValueError, match="choose one of .*'cifar10'.*'tiny'"):
        kd.models.UNet.preset("huge")


def space_to_depth_reference(x, b):
    """out[n, y, x, (i*b + j)*C + c] = in[n, b*y + i, b*x + j, c], written out with loops."""
    n, height, width, channels = x.shape
    out = np.zeros((n, height // b, width // b, b * b * channels), x.dtype)
    for y in range(height // b):
        for x_ in range(width // b):
            for i in range(b):
                for j in range(b):
                    out[:, y, x_, (i * b + j) * channels : (i * b + j + 1) * channels] = x[:, b * y + i, b * x_ + j]
    return out


@pytest.mark.parametrize("block_size, shape", [(2, (2, 6, 4, 3)), (3, (1, 6, 9, 2))])
def test_space_to_depth_moves_patches_into_channels_and_depth_to_space_inverts_it(block_size, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype("float32")
    patches = keras.ops.convert_to_numpy(kd.models.SpaceToDepth(block_size)(x))
    np.testing.assert_array_equal(patches, space_to_depth_reference(x, block_size))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(kd.models.DepthToSpace(block_size)(patches)), x)
    layer = kd.models.DepthToSpace.from_config(kd.models.DepthToSpace(block_size, name="p").get_config())
    assert (layer.block_size, layer.name) == (block_size, "p")
    with pytest.raises(ValueError, match="block_size"):
        kd.models.SpaceToDepth(0)


def test_a_patched_unet_runs_its_levels_on_patches_and_returns_the_image_shape():
    unet = kd.models.UNet(image_shape=(8, 8, 1), widths=(8, 16), num_res_blocks=1, num_classes=3, norm_groups=4,
                          attention_resolutions=(2,), patch_size=2)  # fmt: skip
    assert unet.get_layer("conv_in").output.shape == (None, 4, 4, 8)  # the first level at half the side
    assert unet.get_layer("conv_out").output.shape == (None, 4, 4, 4)  # 2 x 2 pixels per position
    assert unet.get_layer("down_1_attention_0").output.shape == (None, 2, 2, 16)  # attention sides count patches
    x = np.random.default_rng(2).standard_normal((2, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(outputs(unet, x, [3, 30], [0, 1]), 0.0)  # the output convolution starts at zero
    randomise_output(unet)
    y = outputs(unet, x, [3, 30], [0, 1])
    assert y.shape == x.shape and np.all(np.isfinite(y)) and np.std(y) > 0
    clone = kd.models.UNet.from_config(unet.get_config())
    assert clone.patch_size == 2 and [w.shape for w in clone.weights] == [w.shape for w in unet.weights]
    clone.set_weights(unet.get_weights())
    np.testing.assert_allclose(outputs(clone, x, [3, 30], [0, 1]), y, rtol=1e-5, atol=1e-6)


def test_patch_size_must_divide_the_image_with_the_levels():
    with pytest.raises(ValueError, match=r"patch_size \* 2\*\*\(len\(widths\)-1\) = 8"):
        kd.models.UNet(image_shape=(28, 28, 1), widths=(8, 8, 8), patch_size=2, norm_groups=4)
    with pytest.raises(ValueError, match="patch_size"):
        kd.models.UNet(image_shape=(8, 8, 1), widths=(8,), patch_size=0, norm_groups=4)
    with pytest.raises(ValueError, match="patch_size"):
        kd.models.UNet(image_shape=(8, 8, 1), widths=(8,), patch_size=True, norm_groups=4)


@pytest.mark.parametrize("upsampling", ["conv_nearest", "pixel_shuffle"])
def test_the_decoder_upsamples_as_asked_and_the_choice_round_trips(upsampling):
    unet = kd.models.UNet(image_shape=(8, 8, 1), widths=(4, 8), num_res_blocks=1, norm_groups=4, upsampling=upsampling)
    conv, upsample = unet.get_layer("up_1_upsample_conv"), unet.get_layer("up_1_upsample")
    probe = keras.Model(unet.inputs, [conv.output, upsample.output])
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 1)).astype("float32")
    before, after = (keras.ops.convert_to_numpy(y) for y in probe([x, np.array([5.0, 50.0], "float32")]))
    assert before.shape[1:3] == (4, 4) and after.shape[1:3] == (8, 8)  # the convolution runs at the lower side
    if upsampling == "conv_nearest":
        assert before.shape[-1] == after.shape[-1] == 8
        np.testing.assert_array_equal(after, before.repeat(2, axis=1).repeat(2, axis=2))
    else:  # four of the next level's 4 channels per pixel of the lower side
        assert (before.shape[-1], after.shape[-1]) == (16, 4)
        np.testing.assert_array_equal(after, space_to_depth_inverse_reference(before, 2))
    clone = kd.models.UNet.from_config(unet.get_config())
    assert clone.upsampling == upsampling and [w.shape for w in clone.weights] == [w.shape for w in unet.weights]


def test_a_config_saved_before_the_upsampling_option_builds_ddpms_upsampling():
    unet = kd.models.UNet(image_shape=(8, 8, 1), widths=(4, 8), num_res_blocks=1, norm_groups=4)
    config = unet.get_config()
    assert config.pop("upsampling") == "nearest_conv"
    clone = kd.models.UNet.from_config(config)
    assert clone.upsampling == "nearest_conv" and clone.get_layer("up_1_upsample").output.shape[1:3] == (8, 8)
    assert clone.get_layer("up_1_upsample_conv").input.shape[1:3] == (8, 8)  # the convolution after the upsampling


def test_an_unknown_upsampling_is_refused_with_the_choices():
    choices = r"\('nearest_conv', 'conv_nearest', 'pixel_shuffle'\)"
    with pytest.raises(ValueError, match=r"`upsampling` must be one of " + choices + "; received 'bilinear'"):
        kd.models.UNet(image_shape=(8, 8, 1), widths=(4, 8), norm_groups=4, upsampling="bilinear")


def space_to_depth_inverse_reference(x, b):
    batch, height, width, depth = x.shape
    channels = depth // (b * b)
    out = np.zeros((batch, height * b, width * b, channels), x.dtype)
    for y in range(height):
        for x_ in range(width):
            for i in range(b):
                for j in range(b):
                    out[:, b * y + i, b * x_ + j] = x[:, y, x_, (i * b + j) * channels : (i * b + j + 1) * channels]
    return out
