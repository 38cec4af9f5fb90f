"""keras_diffusion: diffusion models for Keras 3 on TensorFlow and JAX."""

from keras_diffusion.backend import (
    skip_tensorflow_graph_rewrites,
    use_multithreaded_xla_cpu_convolutions,
    use_persistent_compilation_cache,
)

use_multithreaded_xla_cpu_convolutions()  # before anything runs on JAX; see its docstring
use_persistent_compilation_cache()  # JAX: compiled programs kept on disk for the next run
skip_tensorflow_graph_rewrites()  # TensorFlow on a CPU: see its docstring

from keras_diffusion import (  # noqa: E402
    callbacks,
    datasets,
    distributed,
    ema,
    guidance,
    initializers,
    io,
    learning_rates,
    metrics,
    models,
    noise,
    optimizers,
    predictions,
    samplers,
    schedules,
    timestep_sampling,
)
from keras_diffusion.diffusion_model import DiffusionModel  # noqa: E402
from keras_diffusion.latent_diffusion_model import LatentDiffusionModel  # noqa: E402

__version__ = "0.1.0"
