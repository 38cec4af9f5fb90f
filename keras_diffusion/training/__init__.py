"""What a training run needs besides its model: the optimizer, learning-rate recipes and the NaN guard.

- `optimizers`: `Adam`, Keras' Adam update traced into fewer operations (the default of `compile()`).
- `learning_rates`: `warmup_cosine`, the schedule of a run of known length.
- `recipes`: `optimizer_for_run`, a preset and a number of updates turned into their optimizer.
- `nan_guard`: `NaNGuard`, which stops `fit` at the first non-finite loss with the likely cause.
"""

from keras_diffusion.training import learning_rates, optimizers, recipes
from keras_diffusion.training.learning_rates import warmup_cosine
from keras_diffusion.training.nan_guard import NaNGuard, NonFiniteLossError
from keras_diffusion.training.optimizers import Adam
from keras_diffusion.training.recipes import PEAK_LEARNING_RATES, optimizer_for_run, peak_learning_rate
