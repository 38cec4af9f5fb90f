"""The engine plumbing: what is backend-specific lives here, and nowhere else.

- `defaults`: what importing keras_diffusion changes in the engines, and `KERAS_DIFFUSION_ENGINE_DEFAULTS=off`.
- `compilation`: `compile_function`, a pure function of tensors compiled for the current backend.
- `replicas`: random draws and loss means over the global batch under data parallelism.
- `distributed`: several processes (hosts) training together; the chief writes the files.
- `keras_internals`: every private part of Keras the library touches, checked by a test.
- `initializers`: Keras' initializers with their values drawn on the host (no program per shape).
- `ops`: operations whose fastest form differs between backends.
- `deprecation`: the one way a public name is deprecated (what replaces it, the release that removes it).
- `system`: the machine's CPUs and the Keras cache folder.
"""

from keras_diffusion.runtime import (
    compilation,
    deprecation,
    defaults,
    distributed,
    initializers,
    keras_internals,
    ops,
    replicas,
    system,
)
from keras_diffusion.runtime.compilation import compile_function
from keras_diffusion.runtime.defaults import (
    apply_engine_defaults,
    skip_tensorflow_graph_rewrites,
    tensorflow_graph_rewrites,
    use_multithreaded_xla_cpu_convolutions,
    use_persistent_compilation_cache,
)
from keras_diffusion.runtime.ops import max_pool_2x2
from keras_diffusion.runtime.replicas import draw_for_global_batch, mean_over_global_batch
from keras_diffusion.runtime.system import CACHE_SUBDIR, cpu_description, keras_home, usable_cpus
