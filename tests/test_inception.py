"""The Keras port of the FID Inception network and its input handling.

The network tests need the offline weights: `$KERAS_DIFFUSION_FID_WEIGHTS`
(with the reference file next to it) or `<repo>/../shared/data`.
"""

import os
import pathlib

import keras
import numpy as np
import pytest

from keras_diffusion.metrics import inception_weights
from keras_diffusion.metrics.inception import (
    AveragePoolingExcludePadding,
    ConvBatchNormReLU,
    InceptionFeatures,
    build_inception_network,
)

WEIGHTS_NAME = "inception-2015-12-05-fid.npz"
REFERENCE_NAME = "inception-2015-12-05-fid.reference.npz"
BATCH_SIZE = 5  # The 5 reference images: one compiled shape for every network test.


def _data_dir() -> pathlib.Path:
    from_env = os.environ.get(inception_weights.WEIGHTS_ENV_VAR)
    if from_env:
        return pathlib.Path(from_env).parent
    return pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def reference():
    path = _data_dir() / REFERENCE_NAME
    if not path.is_file():
        pytest.skip(f"FID Inception reference features not found at {path}")
    with np.load(path) as archive:
        images = archive["images_uint8_nchw"].transpose(0, 2, 3, 1)
        return images, archive["features"]


@pytest.fixture(scope="module")
def extractor():
    weights = os.environ.get(inception_weights.WEIGHTS_ENV_VAR) or _data_dir() / WEIGHTS_NAME
    if not pathlib.Path(weights).is_file():
        pytest.skip(f"FID Inception weights not found at {weights}")
    return InceptionFeatures(weights=weights, batch_size=BATCH_SIZE)


@pytest.fixture(scope="module")
def reference_features_of_port(extractor, reference):
    images, _ = reference
    return extractor(images)


def test_port_reproduces_reference_features(reference, reference_features_of_port):
    _, expected = reference
    error = np.abs(reference_features_of_port - expected).max()
    print(f"max abs error vs reference features: {error:.3g}")
    assert error <= 1e-3


def test_features_are_float32_with_2048_per_image(reference_features_of_port):
    assert reference_features_of_port.shape == (5, 2048)
    assert reference_features_of_port.dtype == np.float32


def test_float_images_are_quantised_like_uint8(extractor, reference, reference_features_of_port):
    images, _ = reference
    # Half a level of noise is removed again by round(x * 255).
    noise = np.random.default_rng(0).uniform(-0.4, 0.4, images.shape) / 255.0
    floats = np.clip(images / 255.0 + noise, 0.0, 1.0).astype("float32")
    np.testing.assert_allclose(extractor(floats), reference_features_of_port, atol=1e-5)


def test_grayscale_is_repeated_to_three_channels(extractor, reference):
    images, _ = reference
    gray = images[..., :1]
    np.testing.assert_allclose(extractor(gray), extractor(np.repeat(gray, 3, axis=-1)), atol=1e-5)


def test_features_do_not_depend_on_batch_size(extractor, reference, reference_features_of_port):
    images, _ = reference
    # Batches of 2, 2 and 1 (zero-padded to 2): the padding must not leak into any image.
    np.testing.assert_allclose(extractor(images, batch_size=2), reference_features_of_port, atol=1e-4)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 299, 299), "uint8"), "shape"),
        (np.zeros((2, 299, 299, 2), "uint8"), "channels"),
        (np.full((2, 299, 299, 3), 255.0, "float32"), r"\[0, 1\]"),
        (np.full((2, 299, 299, 3), np.nan, "float32"), "NaN"),
        (np.full((2, 299, 299, 3), 300, "int32"), "0..255"),
    ],
    ids=["no-channel-axis", "two-channels", "float-0-255", "nan", "int-out-of-range"],
)
def test_invalid_images_raise_value_error(extractor, images, message):
    with pytest.raises(ValueError, match=message):
        extractor(images)


def test_average_pool_excludes_padding_from_the_divisor():
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)
    pooled = np.asarray(AveragePoolingExcludePadding(3)(x))[0, :, :, 0]
    assert pooled[0, 0] == pytest.approx(np.mean([0, 1, 4, 5]))
    assert pooled[0, 1] == pytest.approx(np.mean([0, 1, 2, 4, 5, 6]))
    assert pooled[1, 1] == pytest.approx(np.mean([0, 1, 2, 4, 5, 6, 8, 9, 10]))


def test_asymmetric_padding_keeps_spatial_size():
    layer = ConvBatchNormReLU(4, (1, 7), padding=(0, 3))
    assert tuple(layer(np.zeros((1, 17, 17, 2), "float32")).shape) == (1, 17, 17, 4)


def test_network_maps_299_images_to_2048_features():
    network = build_inception_network()
    assert network.input_shape == (None, 299, 299, 3)
    assert network.output_shape == (None, 2048)
    assert not network.trainable_weights


def test_explicit_missing_weights_path_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        inception_weights.resolve_weights_path(tmp_path / "missing.npz")


def test_environment_variable_takes_precedence_over_cache(tmp_path, monkeypatch):
    weights = tmp_path / "weights.npz"
    weights.write_bytes(b"")
    monkeypatch.setenv(inception_weights.WEIGHTS_ENV_VAR, str(weights))
    assert inception_weights.resolve_weights_path() == str(weights)


def test_torchscript_parameter_names_map_to_npz_layout():
    state = {
        "layers.mixed_4.tower.conv_1.weight": np.zeros((128, 128, 1, 7)),
        "layers.conv.var": np.ones(32),
        "output.weight": np.zeros((1008, 2048)),
    }
    converted = inception_weights.torchscript_state_to_npz_layout(state)
    assert sorted(converted) == ["net.layers.conv.var", "net.layers.mixed_4.tower.conv_1.weight"]
    assert converted["net.layers.mixed_4.tower.conv_1.weight"].shape == (128, 128, 1, 7)


def test_conv_batch_norm_relu_matches_its_formula_with_the_norm_folded_into_the_kernel():
    rng = np.random.default_rng(4)
    layer = ConvBatchNormReLU(3, (1, 3), padding=(0, 1), strides=1)
    x = rng.standard_normal((2, 4, 5, 2)).astype("float32")
    layer.build(x.shape)
    kernel, beta = rng.standard_normal((1, 3, 2, 3)), rng.standard_normal(3)
    mean, variance = rng.standard_normal(3), rng.uniform(0.1, 2.0, 3)
    layer.set_weights([w.astype("float32") for w in (kernel, beta, mean, variance)])
    padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (0, 0)]).astype("float64")
    conv = sum(padded[:, :, j : j + 5, :] @ kernel[0, j] for j in range(3))  # (2, 4, 5, 3)
    expected = np.maximum((conv - mean) / np.sqrt(variance + layer.epsilon) + beta, 0.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-5)
