"""`Adam`: Keras' Adam update, written to trace into fewer operations.

`keras.optimizers.Adam.update_step` recomputes the step's shared scalars
(the bias-corrected step size α_t = lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ), 1 − β₁, 1 − β₂)
once per variable: 38 graph operations per variable, 6,434 of the 13,766 in
the training step of a 2.7 M-parameter U-Net with 169 variables. Tracing them
in Python is a large share of TensorFlow's first `fit` step, and every one of
them is dispatched again at every step. This `Adam` computes the scalars
once per update and then does per variable only the update itself (Kingma &
Ba 2015, Algorithm 1, with the bias corrections folded into α_t as Keras does):

    m ← m + (1 − β₁)(g − m)
    v ← v + (1 − β₂)(g² − v)
    θ ← θ − α_t · m / (√v + ε)

It is a subclass of `keras.optimizers.Adam` with the same arguments, variables
and results, so learning-rate schedules, gradient clipping, loss scaling, a
saved optimizer state and `amsgrad` (which uses Keras' own update) work as
with Keras'. `compile()` of every keras_diffusion model uses it by default.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_diffusion")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` with the step's shared scalars computed once per update, not per variable.

    Takes exactly `keras.optimizers.Adam`'s arguments and gives the same
    updates; only the traced graph is smaller (about 18 operations per
    variable instead of 38), which shortens the first `fit` step on TensorFlow
    and JAX. Its arguments are `keras.optimizers.Adam`'s (`learning_rate`,
    `beta_1`, `beta_2`, `epsilon`, `amsgrad`, `clipnorm`, ...), unchanged.

    Example:
    >>> import keras, numpy as np
    >>> ours, theirs = Adam(0.1), keras.optimizers.Adam(0.1)
    >>> a, b = keras.Variable(np.ones(3, "float32")), keras.Variable(np.ones(3, "float32"))
    >>> for _ in range(3):
    ...     ours.apply([keras.ops.convert_to_tensor(np.array([1.0, -2.0, 0.5], "float32"))], [a])
    ...     theirs.apply([keras.ops.convert_to_tensor(np.array([1.0, -2.0, 0.5], "float32"))], [b])
    >>> np.allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=0, atol=1e-7)
    True
    """

    def apply(self, grads, trainable_variables=None):
        """`keras.optimizers.Adam.apply`; the shared scalars are computed at the first variable and reused."""
        self._step_scalars = None
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._step_scalars = None  # never reused by the next update (another step or another trace)

    def update_step(self, gradient, variable, learning_rate):
        """One variable's update (the module docstring's equations)."""
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        step_size, one_minus_beta_1, one_minus_beta_2, epsilon = self._scalars(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        momentum, velocity = self._momentums[index], self._velocities[index]
        self.assign_add(momentum, (gradient - momentum) * one_minus_beta_1)
        self.assign_add(velocity, (ops.square(gradient) - velocity) * one_minus_beta_2)
        self.assign_sub(variable, momentum * step_size / (ops.sqrt(velocity) + epsilon))

    def _scalars(self, learning_rate, dtype):
        """(α_t, 1 − β₁, 1 − β₂, ε) in `dtype`, computed once per `apply` and dtype."""
        cached = getattr(self, "_step_scalars", None)
        if cached is not None and cached[0] == dtype:
            return cached[1]
        step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), step)
        beta_2_power = ops.power(ops.cast(self.beta_2, dtype), step)
        step_size = ops.cast(learning_rate, dtype) * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        constants = [ops.cast(value, dtype) for value in (1 - self.beta_1, 1 - self.beta_2, self.epsilon)]
        scalars = (step_size, *constants)
        self._step_scalars = (dtype, scalars)
        return scalars
