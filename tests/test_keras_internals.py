"""The private parts of Keras the library touches still exist, and the deprecation helper names a removal release."""

import warnings

import keras
import pytest

import keras_diffusion as kd
from keras_diffusion.runtime import deprecation, keras_internals


def test_every_private_part_of_keras_we_touch_still_exists():
    assert keras_internals.missing() == [], (
        f"Keras {keras.__version__} moved what keras_diffusion.runtime.keras_internals touches; "
        "adapt that module (and only it)."
    )


def test_the_check_names_an_attribute_that_is_gone(monkeypatch):
    monkeypatch.setattr(keras_internals, "TOUCHED", keras_internals.TOUCHED + (("keras.Model", "_no_such_part", None),))
    assert keras_internals.missing() == ["keras.Model._no_such_part"]


def test_seed_generators_are_found_through_the_internals_in_a_fixed_order():
    layer = keras.Sequential([keras.layers.Dropout(0.5, seed=1), keras.layers.Dropout(0.5, seed=2)])
    generators = kd.models.seed_states.all_seed_generators(layer)
    assert len(generators) == 2 and generators[0] is not generators[1]


def test_the_initial_epoch_and_train_function_round_trip():
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    keras_internals.set_initial_epoch(model, 3)
    assert model._initial_epoch == 3
    keras_internals.set_train_function(model, print)
    assert keras_internals.train_function(model) is print
    keras_internals.retrace_steps(model)
    assert keras_internals.train_function(model) is None


def test_a_deprecated_function_warns_with_its_replacement_and_removal_release_then_runs():
    @deprecation.deprecated("kd.samplers.get_sampler", removed_in="0.3.0", name="kd.samplers.get")
    def old(value):
        return value * 2

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert old(4) == 8
    assert [w.category for w in caught] == [DeprecationWarning]
    assert str(caught[0].message) == (
        "kd.samplers.get is deprecated and will be removed in keras_diffusion 0.3.0; use kd.samplers.get_sampler instead."
    )


def test_a_deprecation_without_a_removal_release_is_refused():
    with pytest.raises(ValueError, match="the release that removes"):
        deprecation.deprecated("new()", removed_in="soon")(lambda: None)
