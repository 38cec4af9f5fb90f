"""The order-agnostic autoregressive diffusion model (ARDM, the thesis' eq. 28)."""

import itertools
import math

import keras
import numpy as np
import pytest
from conftest import randomise_output
from keras import ops

import keras_diffusion as kd
from keras_diffusion.models.ardm import ARDM
from keras_diffusion.models.ardm_orders import likelihood_weight, quantize, revealed_mask


@keras.saving.register_keras_serializable(package="keras_diffusion_tests")
class FixedLogits(keras.layers.Layer):
    """A network that ignores its input: p(x_k | anything) = softmax(logits_k), a product distribution."""

    def __init__(self, logits, **kwargs):
        super().__init__(**kwargs)
        self.logits = self.add_weight(
            shape=np.shape(logits), initializer=keras.initializers.Constant(np.asarray(logits)), name="logits"
        )  # fmt: skip

    def call(self, inputs):
        features, _ = inputs
        return ops.broadcast_to(self.logits[None], (ops.shape(features)[0],) + tuple(self.logits.shape))


# The 2×2 models use one batch size everywhere (4!·4 = 96 pairs (σ, t)): JAX compiles per shape.
BATCH = 96


def numpy(x):
    return ops.convert_to_numpy(x)


def all_orders_and_steps(image_shape):
    """Every (σ, t) of a tiny image: ranks (D!·D, *image_shape) and t (D!·D,)."""
    num_dims = int(np.prod(image_shape))
    ranks, steps = [], []
    for permutation in itertools.permutations(range(num_dims)):
        for t in range(1, num_dims + 1):
            ranks.append(np.reshape(permutation, image_shape))
            steps.append(t)
    return np.array(ranks, "int32"), np.array(steps, "int32")


def log_softmax(logits):
    logits = logits - logits.max(-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def binarised_mnist_crops(images):
    """28×28 digits → centre 24×24 → 3×3 mean pooling → 8×8, thresholded at 0.5 by the model."""
    crops = images[:, 2:26, 2:26, 0].reshape(-1, 8, 3, 8, 3).mean(axis=(2, 4))
    return crops[..., None].astype("float32")


@pytest.fixture(scope="session")
def ardm_data(mnist_subset):
    return binarised_mnist_crops(mnist_subset[0])


@pytest.fixture(scope="session")
def trained_ardm(ardm_data):
    """A binarised 8×8 ARDM, its bits/dim before training, and its History after a short fit."""
    model = ARDM(image_shape=(8, 8, 1), num_levels=2, filters=16, num_blocks=2, norm_groups=4, seed=0)
    model.compile(optimizer=kd.optimizers.Adam(3e-3))
    bits_before = model.evaluate_nll(ardm_data[:256], num_draws=2, seed=0)
    history = model.fit(ardm_data, batch_size=32, epochs=4, verbose=0)
    return model, bits_before, history


@pytest.fixture(scope="session")
def tiny_random_model():
    """A 2×2, 3-level ARDM with "scaled" inputs and random weights (its conditionals depend on the mask)."""
    model = ARDM(image_shape=(2, 2, 1), num_levels=3, input_encoding="scaled", filters=16, num_blocks=1,
                 norm_groups=4, seed=0)  # fmt: skip
    randomise_output(model.network, seed=1)
    return model


@pytest.fixture(scope="session")
def tiny_fixed_logits_model():
    """A 2×2, 3-level ARDM whose network outputs fixed logits (so the exact NLL is known)."""
    logits = np.random.default_rng(0).normal(0, 1.5, (2, 2, 3)).astype("float32")
    return ARDM(image_shape=(2, 2, 1), num_levels=3, network=FixedLogits(logits), seed=0), logits


# ------------------------------------------------------------------ the pieces


def test_quantize_rounds_floats_and_uint8_to_the_nearest_level():
    values = np.array([0.0, 0.16, 0.17, 0.5, 0.83, 0.84, 1.0], "float32")
    assert numpy(quantize(values, 4)).tolist() == [0, 0, 1, 2, 2, 3, 3]
    assert numpy(quantize(values, 2)).tolist() == [0, 0, 0, 1, 1, 1, 1]
    uint8 = np.array([0, 42, 43, 127, 128, 255], "uint8")
    assert numpy(quantize(uint8, 2)).tolist() == [0, 0, 0, 0, 1, 1]
    np.testing.assert_array_equal(numpy(quantize(np.arange(256, dtype="uint8"), 256)), np.arange(256))


def test_likelihood_weight_is_num_dims_over_the_number_of_scored_pixels():
    np.testing.assert_allclose(numpy(likelihood_weight(np.array([1, 2, 5, 64]), 64)), [1, 64 / 63, 64 / 60, 64])


def test_training_mask_reveals_exactly_the_first_t_minus_1_pixels_of_the_order(tiny_fixed_logits_model):
    model, _ = tiny_fixed_logits_model
    draws = [model.draw_orders_and_steps(BATCH) for _ in range(40)]  # 3840 draws, one compiled shape
    ranks = np.concatenate([numpy(r).reshape(BATCH, -1) for r, _ in draws])
    t = np.concatenate([numpy(t) for _, t in draws])
    mask = numpy(revealed_mask(ranks, t - 1))
    np.testing.assert_array_equal(np.sort(ranks, axis=1), np.tile(np.arange(4), (len(t), 1)))
    np.testing.assert_array_equal(mask.sum(axis=1), t - 1)
    for row_ranks, row_mask in zip(ranks, mask):  # revealed = the earliest in σ
        assert set(row_ranks[row_mask]) == set(range(row_mask.sum()))
    # t uniform on 1..D and σ uniform on all D! orders (loose bounds: 3840 draws).
    assert set(t) == {1, 2, 3, 4} and np.all(np.abs(np.bincount(t)[1:] / len(t) - 0.25) < 0.04)
    order_counts = np.unique(ranks, axis=0, return_counts=True)[1]
    assert len(order_counts) == 24 and order_counts.min() > len(t) / 24 * 0.6


def test_estimator_averaged_over_all_orders_and_steps_is_the_exact_nll_of_fixed_logits(tiny_fixed_logits_model):
    model, logits = tiny_fixed_logits_model
    image = np.array([[[0], [2]], [[1], [2]]], "int32")
    exact = -np.sum(np.take_along_axis(log_softmax(logits), image, axis=-1))
    ranks, t = all_orders_and_steps((2, 2, 1))
    levels = np.repeat(image[None], len(t), axis=0)
    terms = numpy(model.conditional_nll(levels, ranks, t - 1, 4))
    estimates = numpy(likelihood_weight(t, 4)) * terms
    np.testing.assert_allclose(estimates.mean(), exact, rtol=1e-5)
    assert np.ptp(estimates) > 0.1  # one (σ, t) alone is not the answer, only the expectation is


def test_estimator_expectation_equals_the_order_averaged_autoregressive_nll_of_any_network(tiny_random_model):
    model = tiny_random_model
    image = np.array([[[2], [0]], [[1], [1]]], "int32")
    ranks, t = all_orders_and_steps((2, 2, 1))
    levels = np.repeat(image[None], len(t), axis=0)
    estimates = numpy(likelihood_weight(t, 4)) * numpy(model.conditional_nll(levels, ranks, t - 1, 4))
    # The whole chain of each order: Σ_t −log p(x_σ(t) | x_σ(<t)), one pixel at a time.
    chain_terms = numpy(model.conditional_nll(levels, ranks, t - 1, 1)).reshape(24, 4)
    per_order = chain_terms.sum(axis=1)
    assert np.ptp(per_order) > 1e-3  # the network's conditionals depend on the order
    np.testing.assert_allclose(estimates.mean(), per_order.mean(), rtol=1e-5)


def test_compute_loss_is_the_estimator_in_bits_per_dimension_with_the_model_seed(tiny_fixed_logits_model):
    model, logits = tiny_fixed_logits_model
    images = np.random.default_rng(1).integers(0, 3, (BATCH, 2, 2, 1)) / 2.0
    state = numpy(model.seed_generator.state).copy()
    loss = float(model.compute_loss(images, y_pred=model(images)))
    model.seed_generator.state.assign(state)
    ranks, t = model.draw_orders_and_steps(BATCH)
    levels = numpy(quantize(images, 3))
    expected = numpy(likelihood_weight(t, 4) * model.conditional_nll(levels, ranks, t - 1, 4)).mean()
    np.testing.assert_allclose(loss, expected / (4 * math.log(2)), rtol=1e-5)
    assert float(model.compute_loss(images, y_pred=model(images))) != loss  # fresh (σ, t) every call


def test_exact_chain_nll_of_fixed_logits_matches_the_closed_form_for_any_order(tiny_fixed_logits_model):
    model, logits = tiny_fixed_logits_model
    images = np.random.default_rng(2).integers(0, 3, (BATCH, 2, 2, 1))
    exact = -np.take_along_axis(log_softmax(logits)[None], images, axis=-1).sum() / BATCH
    bits = model.evaluate_nll(images / 2.0, exact=True, seed=3)
    np.testing.assert_allclose(bits, exact / (4 * math.log(2)), rtol=1e-5)


def test_sampler_draws_each_pixel_from_the_tempered_network_distribution(tiny_fixed_logits_model):
    model, logits = tiny_fixed_logits_model
    for temperature in (1.0, 0.5):
        images = model.generate(32 * BATCH, seed=4, pixels_per_step=2, temperature=temperature, batch_size=BATCH)
        levels = np.rint(images * 2).astype(int)
        frequencies = np.stack([(levels[..., 0] == k).mean(axis=0) for k in range(3)], axis=-1)
        probabilities = np.exp(log_softmax(logits / temperature))
        np.testing.assert_allclose(frequencies, probabilities, atol=0.035)


# ------------------------------------------------------------------ training


def test_fit_lowers_the_bits_per_dimension_of_binarised_mnist(trained_ardm, ardm_data):
    model, bits_before, history = trained_ardm
    np.testing.assert_allclose(bits_before, 1.0, atol=1e-5)  # zero-initialised logits: uniform levels
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    bits_after = model.evaluate_nll(ardm_data[:256], num_draws=2, seed=0)
    assert bits_after < 0.6 * bits_before


def test_uint8_and_float_images_give_the_same_nll(trained_ardm, ardm_data):
    model = trained_ardm[0]
    as_uint8 = np.rint(ardm_data[:256] * 255).astype("uint8")
    np.testing.assert_allclose(
        model.evaluate_nll(as_uint8, seed=5), model.evaluate_nll(as_uint8 / 255.0, seed=5), rtol=1e-6
    )  # fmt: skip


# ------------------------------------------------------------------ sampling


def test_generated_images_have_the_shape_and_levels_and_a_seed_reproduces_them(trained_ardm):
    model = trained_ardm[0]
    images = model.generate(6, seed=7, pixels_per_step=4, batch_size=4)
    assert images.shape == (6, 8, 8, 1) and images.dtype == np.float32
    assert set(np.unique(images)) <= {0.0, 1.0}
    np.testing.assert_array_equal(images, model.generate(6, seed=7, pixels_per_step=4, batch_size=4))
    assert not np.array_equal(images, model.generate(6, seed=8, pixels_per_step=4, batch_size=4))


def test_generation_never_overwrites_revealed_pixels(trained_ardm):
    model = trained_ardm[0]
    previous, previous_revealed, calls = np.zeros((4, 8, 8, 1), "int32"), 0, 0
    for levels, ranks, revealed in model.sampling_states(4, seed=9, pixels_per_step=5):
        levels, ranks = numpy(levels), numpy(ranks)
        was_revealed = ranks < previous_revealed
        np.testing.assert_array_equal(levels[was_revealed], previous[was_revealed])
        assert np.all(levels[ranks >= revealed] == 0)  # nothing beyond the group is written
        assert revealed == min(previous_revealed + 5, 64)
        previous, previous_revealed, calls = levels, revealed, calls + 1
    assert calls == 13 and previous_revealed == 64


def test_return_order_gives_each_network_call_its_group_of_pixels(trained_ardm):
    model = trained_ardm[0]
    _, order = model.generate(4, seed=10, pixels_per_step=6, return_order=True)
    for image_order in order:
        np.testing.assert_array_equal(np.bincount(image_order.ravel()), [6] * 10 + [4])


def test_sampling_step_compiles_once_and_groups_of_pixels_take_fewer_network_calls(trained_ardm, monkeypatch):
    model = trained_ardm[0]
    traces, calls, make_step = [], [], model._make_sampling_step

    def make_traced_step():
        step = make_step()

        def traced_step(*args):
            traces.append(1)  # Python side effect: runs only while the backend traces
            return step(*args)

        return traced_step

    monkeypatch.setattr(model, "_make_sampling_step", make_traced_step)
    monkeypatch.delitem(model._compiled, "sample", raising=False)
    model.generate(4, seed=0, pixels_per_step=1)
    compiled_step = model._compiled["sample"]

    def counting_step(*args):
        calls.append(1)
        return compiled_step(*args)

    monkeypatch.setitem(model._compiled, "sample", counting_step)
    model.generate(4, seed=0, pixels_per_step=1)
    one_at_a_time = len(calls)
    model.generate(4, seed=0, pixels_per_step=8, temperature=0.7)
    assert one_at_a_time == 64 and len(calls) - one_at_a_time == 8
    assert len(traces) == 1


def test_k_level_model_samples_on_its_levels(tiny_random_model):
    images = tiny_random_model.generate(BATCH, seed=0, pixels_per_step=3)
    assert images.shape == (BATCH, 2, 2, 1)
    np.testing.assert_allclose(images, np.rint(images * 2) / 2, atol=1e-7)  # levels 0, 1/2, 1
    assert set(np.unique(np.rint(images * 2).astype(int))) == {0, 1, 2}


# ------------------------------------------------------------------ saving


def test_save_and_load_round_trip_generates_the_same_images(trained_ardm, ardm_data, tmp_path):
    model = trained_ardm[0]
    path = str(tmp_path / "ardm.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored, ARDM) and restored.get_config() == model.get_config()
    np.testing.assert_array_equal(numpy(restored.seed_generator.state), numpy(model.seed_generator.state))
    for restored_weight, weight in zip(restored.network.weights, model.network.weights):
        np.testing.assert_array_equal(numpy(restored_weight), numpy(weight))
    np.testing.assert_array_equal(
        restored.generate(4, seed=11, pixels_per_step=16), model.generate(4, seed=11, pixels_per_step=16)
    )  # fmt: skip


# ------------------------------------------------------------------ errors


def test_bad_images_raise_clear_errors_before_anything_compiles(trained_ardm, ardm_data):
    model = trained_ardm[0]
    with pytest.raises(ValueError, match=r"images\[\.\.\., None\]"):
        model.evaluate_nll(ardm_data[:4, ..., 0])
    with pytest.raises(ValueError, match=r"shape \(batch, 8, 8, 1\)"):
        model.fit(np.zeros((4, 7, 7, 1), "float32"))
    with pytest.raises(ValueError, match="Divide"):
        model.fit(ardm_data[:4] * 255.0)
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        model.evaluate_nll(ardm_data[:4] * 2 - 1)
    with pytest.raises(ValueError, match="NaN"):
        model.fit(np.full((4, 8, 8, 1), np.nan, "float32"))
    with pytest.raises(ValueError, match="dtype int64"):
        model.evaluate_nll(np.zeros((4, 8, 8, 1), "int64"))
    with pytest.raises(ValueError, match="unconditional"):
        model.fit(ardm_data[:4], np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        model.evaluate_nll(ardm_data[:0])
    import tensorflow as tf

    with pytest.raises(ValueError, match="batch it"):
        model.fit(tf.data.Dataset.from_tensor_slices(ardm_data[:4]))
    with pytest.raises(ValueError, match="images only"):
        model.fit(tf.data.Dataset.from_tensor_slices((ardm_data[:4], np.zeros(4))).batch(2))


def test_bad_arguments_raise_clear_errors(trained_ardm):
    model = trained_ardm[0]
    with pytest.raises(ValueError, match=r"pixels_per_step.*1\.\.64"):
        model.generate(2, pixels_per_step=0)
    with pytest.raises(ValueError, match=r"pixels_per_step.*1\.\.64"):
        model.generate(2, pixels_per_step=65)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(2, temperature=0.0)
    with pytest.raises(ValueError, match="num_images"):
        model.generate(0)
    with pytest.raises(ValueError, match="num_draws"):
        model.evaluate_nll(np.zeros((2, 8, 8, 1), "float32"), num_draws=0)
    with pytest.raises(ValueError, match="num_levels"):
        ARDM(image_shape=(4, 4, 1), num_levels=1)
    with pytest.raises(ValueError, match="input_encoding"):
        ARDM(image_shape=(4, 4, 1), input_encoding="binary")
    with pytest.raises(ValueError, match=r"logits of shape \(batch, 2, 2, 3\)"):
        ARDM(image_shape=(2, 2, 1), num_levels=3, network=FixedLogits(np.zeros((2, 2, 2), "float32")))
    with pytest.raises(ValueError, match="own loss"):
        model.compile(loss="mse")
