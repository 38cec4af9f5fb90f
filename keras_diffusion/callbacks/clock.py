"""`TrainingClock`: optimizer updates and training seconds, the x-axes of quality-per-compute curves."""

import time


class TrainingClock:
    """Counts the updates of a `fit` and the seconds spent inside its training batches.

    The seconds are the sum of the intervals from each `on_train_batch_begin`
    to the matching `on_train_batch_end`: the step itself, its first-call
    compilation included, but not what callbacks do at epoch ends or between
    batches (FID evaluations, image grids, checkpoints). So two recipes can be
    compared by the training compute they used, whatever was evaluated along
    the way.

    Keras materialises a batch's logs before `on_train_batch_end` whenever a
    callback that is not asynchronous-safe is attached (all of ours), so on
    JAX the step has finished when the interval closes.

    Returns:
        A clock with `updates` (int) and `seconds` (float), both 0 at first.

    Example:
    >>> clock = TrainingClock()
    >>> clock.batch_begin(); clock.batch_end()
    >>> clock.updates, clock.seconds >= 0.0
    (1, True)
    """

    def __init__(self) -> None:
        self.updates = 0
        self.seconds = 0.0
        self._batch_start: float | None = None

    def batch_begin(self) -> None:
        """Marks the start of one training batch."""
        self._batch_start = time.perf_counter()

    def batch_end(self) -> None:
        """Counts one update and adds the batch's seconds (nothing if no batch was begun)."""
        if self._batch_start is None:
            return
        self.updates += 1
        self.seconds += time.perf_counter() - self._batch_start
        self._batch_start = None
