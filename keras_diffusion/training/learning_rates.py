"""Learning-rate schedules for a training run of known length.

A diffusion model trained for a fixed budget of updates reaches a lower FID
when its learning rate warms up and then decays to zero by the last update
than at any constant rate we measured (docs/lab_notes.md, "Training
recipes"): `warmup_cosine` is that schedule, the default of the main job and
of `keras-diffusion train`.
"""

import keras


def warmup_cosine(peak: float, updates: int, warmup: float = 0.05) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up from 0 to `peak` over the first `warmup` share of `updates`, then cosine decay to 0.

    Args:
        peak: the largest learning rate, reached at the end of the warm-up.
        updates: optimizer updates of the whole run (epochs × batches per epoch).
        warmup: the share of `updates` spent warming up, in [0, 1).

    Returns:
        A Keras schedule for `keras.optimizers.Adam(learning_rate=...)`; it is
        saved with the optimizer in a `.keras` file.

    Example:
    >>> schedule = warmup_cosine(2e-3, updates=1000)
    >>> [round(float(schedule(step)), 6) for step in (0, 25, 50, 525, 1000)]
    [0.0, 0.001, 0.002, 0.001, 0.0]
    """
    if not (isinstance(updates, int) and updates >= 2):
        raise ValueError(f"`updates` must be an integer >= 2 (the run's optimizer updates); received {updates!r}.")
    if not peak > 0:
        raise ValueError(f"`peak` must be a positive learning rate; received {peak!r}.")
    if not 0 <= warmup < 1:
        raise ValueError(f"`warmup` must be a share of the updates in [0, 1); received {warmup!r}.")
    warmup_steps = max(1, round(warmup * updates)) if warmup else 0
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else peak,
        decay_steps=updates - warmup_steps,
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
    )
