"""`OwnLossModel`: the one base of the models that train with their own loss and random draws.

`DiffusionModel`, `ARDM`, `AutoencoderKL` and `DenoisingAutoencoder` compute
their loss in `compute_loss` (the diffusion loss, eq. 28, the ELBO, eq. 4), so
`compile()` takes no `loss` and has a default optimizer; they draw their noise
from seed generators, whose states this base saves with the model's variables
(`seed_states.SavesSeedStates`). Keras does not call
an overridden `compile()` when it loads a saved model; `compile_from_config`
here does, so a loaded model resumes training with its optimizer's state.
"""

import os

import keras

from keras_diffusion.runtime import distributed, keras_internals
from keras_diffusion.runtime.initializers import Zeros
from keras_diffusion.data.files import replaced_atomically
from keras_diffusion.training.optimizers import Adam
from keras_diffusion.models.seed_states import SavesSeedStates


class OwnLossModel(SavesSeedStates, keras.Model):
    """A `keras.Model` whose loss is its own `compute_loss`: `compile()` without `loss`, Adam by default.

    Its seed generators' states are saved and loaded with its variables
    (`SavesSeedStates`), so a restored model draws the noise the original would have.

    Subclasses set `default_learning_rate` (the learning rate of the default
    Adam optimizer) and implement `compute_loss`.

    Example:
    >>> class Mean(OwnLossModel):
    ...     def call(self, x):
    ...         return x
    ...     def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
    ...         return keras.ops.mean(y_pred)
    >>> model = Mean()
    >>> model.compile()
    >>> type(model.optimizer).__name__
    'Adam'
    >>> model.compile(loss="mse")
    Traceback (most recent call last):
    ...
    ValueError: Mean defines its own loss; call compile() without `loss`.
    """

    #: The learning rate of the Adam optimizer that `compile()` uses when given none.
    default_learning_rate: float = 1e-3

    def compile(self, optimizer=None, **kwargs):
        """Like `keras.Model.compile`; the default optimizer is `kd.optimizers.Adam(default_learning_rate)`
        (Keras' Adam update, traced into fewer operations).

        Args:
            optimizer: a `keras.optimizers.Optimizer` or its name; None for `kd.optimizers.Adam`.
            **kwargs: `keras.Model.compile` arguments other than `loss`
                (`metrics`, `jit_compile`, `steps_per_execution`, ...).

        Raises:
            ValueError: if `loss` is given; the model defines its own.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(f"{type(self).__name__} defines its own loss; call compile() without `loss`.")
        if optimizer is None:
            optimizer = Adam(self.default_learning_rate)
        super().compile(optimizer=optimizer, **kwargs)
        self._build_optimizer()

    def _build_optimizer(self):
        """Creates the optimizer's variables now, when the model's exist, rather than inside the first step.

        On TensorFlow without a distribution strategy Keras defers this to the
        first traced step; a `tf.function` that creates variables is traced twice,
        which doubled the first `fit` step's latency.
        """
        if self.optimizer is None or self.optimizer.built:
            return
        if not all(layer.built for layer in keras_internals.flatten_layers(self)):
            return  # variables appear on the first call; Keras builds the optimizer then
        self._build_optimizer_variables()

    def _build_optimizer_variables(self):
        # Keras starts the optimizer's slots with "zeros"; filled on the host, they compile no XLA program per shape.
        with keras.saving.CustomObjectScope({"zeros": Zeros}):
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`; when several processes train (`keras_diffusion.runtime.distributed`), arrays
        become `distributed.global_batches` (seeded, the same on every process)."""
        args, kwargs = distributed.fit_arguments(self, args, kwargs)
        return super().fit(*args, **kwargs)

    def save(self, filepath, overwrite: bool = True, **kwargs):
        """`keras.Model.save`, written to a temporary file and renamed into place (readers never see
        half a file); in a multi-process run only the chief writes (`keras_diffusion.data.files`).
        `overwrite=False` raises FileExistsError where Keras would ask on the terminal."""
        self._write_atomically(super().save, filepath, overwrite, kwargs)

    def save_weights(self, filepath, overwrite: bool = True, **kwargs):
        """`keras.Model.save_weights`, atomically and by the chief only, as `save`."""
        self._write_atomically(super().save_weights, filepath, overwrite, kwargs)

    @staticmethod
    def _write_atomically(write, filepath, overwrite, kwargs):
        if not isinstance(filepath, (str, os.PathLike)) or kwargs.get("zipped") is False:
            return write(filepath, overwrite=overwrite, **kwargs)  # a file object or a folder: Keras' own way
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(f"{os.fspath(filepath)!r} exists; pass overwrite=True to replace it.")
        with replaced_atomically(filepath, _suffix(filepath)) as temporary:
            write(temporary, overwrite=True, **kwargs)

    def get_metrics_result(self):
        # Keras 3 cannot average scalar logs over TensorFlow workers; see keras_internals.reducible_logs.
        return keras_internals.reducible_logs(super().get_metrics_result())

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Called by Keras' TensorFlow trainer only; see keras_internals.placeholder_batch.
        if data_batch is None:
            placeholder = keras_internals.placeholder_batch(iterator)
            if placeholder is not None:
                iterator, data_batch = None, placeholder
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compile_from_config(self, config):
        """Restores `compile()` (and builds the optimizer, whose variables load next) when a saved model is loaded."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.optimizer is not None and not self.optimizer.built:
            self._build_optimizer_variables()


def _suffix(path) -> str:
    """The ending Keras reads the format from: ".weights.h5", ".keras", ".h5"."""
    path = str(path)
    return ".weights.h5" if path.endswith(".weights.h5") else "." + path.rpartition(".")[2]
