"""Turning a pure function of tensors into a compiled one on the current backend."""

from collections.abc import Callable

import keras


def compile_function(function: Callable, jit_compile: bool | str = "auto") -> Callable:
    """Compiles a pure function of tensors for the current Keras backend.

    Args:
        function: a function whose arguments and results are (nested) tensors.
            It must not read or write Keras variables except through the
            values it is given (use `Layer.stateless_call`).
        jit_compile: `True` for XLA, `False` for the backend's graph mode
            without XLA, `"auto"` for what runs fastest: XLA on JAX and on
            TensorFlow with a GPU, plain `tf.function` on a TensorFlow CPU.

    Returns:
        A callable with the same signature: `jax.jit(function)` on JAX,
        `tf.function(function)` on TensorFlow, the function itself on torch.

    Example:
    >>> double = compile_function(lambda x: x * 2)
    >>> float(double(keras.ops.ones(())))
    2.0
    """
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.jit(function)
    if backend == "tensorflow":
        import tensorflow as tf

        if jit_compile == "auto":
            jit_compile = bool(tf.config.list_physical_devices("GPU"))
        return tf.function(function, jit_compile=bool(jit_compile), reduce_retracing=True)
    return function
