"""Saving the state of every `SeedGenerator` of a model with its own variables.

Keras saves a model's variables but not the states of its seed generators
(they live in `non_trainable_variables`, not in `weights`). Without them a
model restored from a file, or by a resumed `fit`, draws different noise than
the run it continues. Models that own random draws inherit `SavesSeedStates`,
whose `save_own_variables` / `load_own_variables` call the two functions here.
"""

import keras

from keras_diffusion.runtime import keras_internals


def all_seed_generators(model: keras.layers.Layer) -> list:
    """The seed generators of `model` and of every layer inside it, in a fixed order.

    Example:
    >>> layer = keras.layers.Dropout(0.5, seed=0)
    >>> len(all_seed_generators(layer))
    1
    """
    generators = []
    for layer in keras_internals.flatten_layers(model):
        generators.extend(keras_internals.seed_generators(layer))
    return generators


def save_own_variables_and_seed_states(model: keras.layers.Layer, store) -> None:
    """What `keras.layers.Layer.save_own_variables` stores, plus `seed_state_<i>` for every seed generator."""
    for index, variable in enumerate(keras_internals.own_variables(model)):
        store[f"{index}"] = variable
    for index, generator in enumerate(all_seed_generators(model)):
        store[f"seed_state_{index}"] = generator.state


def load_own_variables_and_seed_states(model: keras.layers.Layer, store) -> None:
    """The inverse of `save_own_variables_and_seed_states`; files without seed states load their variables only."""
    for index, variable in enumerate(keras_internals.own_variables(model)):
        variable.assign(store[f"{index}"])
    for index, generator in enumerate(all_seed_generators(model)):
        key = f"seed_state_{index}"
        if key in store:  # files written before seed states were saved lack them
            generator.state.assign(store[key])


class SavesSeedStates:
    """Mixin for a `keras.layers.Layer` (or Model) that saves its seed generators' states with its own variables.

    Put it before the Keras base class (`class Model(SavesSeedStates,
    keras.Model)`): its `save_own_variables` / `load_own_variables` replace
    the Layer's. Files written without seed states still load (their
    variables only), so models saved before a class used it keep loading.

    Example:
    >>> class Noisy(SavesSeedStates, keras.layers.Layer):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.seed_generator = keras.random.SeedGenerator(0)
    >>> layer, store = Noisy(), {}
    >>> layer.save_own_variables(store)
    >>> sorted(store)
    ['seed_state_0']
    """

    def _all_seed_generators(self) -> list:
        """The seed generators of the model and of its layers (e.g. dropout), in a fixed order."""
        return all_seed_generators(self)

    def save_own_variables(self, store):
        """Saves the model's own variables and every seed generator's state (Keras saves no seed state)."""
        save_own_variables_and_seed_states(self, store)

    def load_own_variables(self, store):
        """Loads what `save_own_variables` saved; seed states only where the file has them."""
        load_own_variables_and_seed_states(self, store)
