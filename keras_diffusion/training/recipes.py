"""Training recipes: a preset and the length of a run turned into the optimizer that trains it, in one place.

The command line, the main job and the examples build their optimizer with
`optimizer_for_run`: Adam (`keras_diffusion.optimizers.Adam`) at the preset's
measured peak learning rate, warmed up and decayed to zero over the run
(`learning_rates.warmup_cosine`), which beat every constant rate we measured
(docs/lab_notes.md, "Training recipes").
"""

import keras

from keras_diffusion.training.learning_rates import warmup_cosine
from keras_diffusion.training.optimizers import Adam

# Adam's peak learning rate per preset: the best of the peaks measured with warm-up + cosine decay to 0 at batch 64
# (docs/benchmarks.md, "How good are the samples per minute of training?").
PEAK_LEARNING_RATES: dict[str, float] = {"micro": 1e-2, "tiny": 2e-3}

#: Adam's learning rate for a network without a measured peak (DDPM's).
DEFAULT_LEARNING_RATE = 2e-4


def peak_learning_rate(preset: str) -> float:
    """Adam's peak learning rate for a `PRESETS` network: the measured one, else DDPM's 2e-4.

    Example:
    >>> peak_learning_rate("micro"), peak_learning_rate("cifar10")
    (0.01, 0.0002)
    """
    return PEAK_LEARNING_RATES.get(preset, DEFAULT_LEARNING_RATE)

#: How the learning rate moves over a run: warm-up then cosine to 0, linear decay to 0, or constant.
LEARNING_RATE_SCHEDULES = ("cosine", "linear", "constant")


def optimizer_for_run(
    updates: int, preset: str | None = None, learning_rate: float | None = None, schedule: str = "cosine"
) -> Adam:
    """The optimizer of a run of `updates` optimizer updates: Adam with the recipe's learning-rate schedule.

    Args:
        updates: optimizer updates of the whole run (epochs × batches per epoch), >= 1.
        preset: the `UNet.preset` name whose measured peak learning rate to use; None for DDPM's 2e-4.
        learning_rate: the peak (or constant) learning rate, overriding the preset's.
        schedule: one of `LEARNING_RATE_SCHEDULES`: `"cosine"` (5 % warm-up, cosine decay to 0, the
            default), `"linear"` (linear decay to 0, the thesis' MNIST recipe) or `"constant"`.

    Returns:
        A `keras_diffusion.optimizers.Adam`, for `model.compile(optimizer=...)`.

    Example:
    >>> round(float(optimizer_for_run(3000, preset="micro").learning_rate), 6)  # update 0: the warm-up starts at 0
    0.0
    >>> round(float(optimizer_for_run(3000, preset="micro", schedule="constant").learning_rate), 6)
    0.01
    """
    if schedule not in LEARNING_RATE_SCHEDULES:
        raise ValueError(f"Unknown learning-rate schedule {schedule!r}; use one of {LEARNING_RATE_SCHEDULES}.")
    if not (isinstance(updates, int) and not isinstance(updates, bool) and updates >= 1):
        raise ValueError(f"`updates` must be a positive integer (the run's optimizer updates); received {updates!r}.")
    if learning_rate is not None and not learning_rate > 0:
        raise ValueError(f"`learning_rate` must be a positive number or None; received {learning_rate!r}.")
    peak = learning_rate or (peak_learning_rate(preset) if preset else DEFAULT_LEARNING_RATE)
    if schedule == "cosine":
        peak = warmup_cosine(peak, max(updates, 2))
    elif schedule == "linear":
        peak = keras.optimizers.schedules.PolynomialDecay(peak, updates, end_learning_rate=0.0)
    return Adam(peak)
