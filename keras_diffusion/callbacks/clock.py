"""`TrainingClock`: optimizer updates and training seconds, the x-axes of quality-per-compute curves."""

import contextlib
import time
from collections.abc import Iterator


class TrainingClock:
    """Counts the updates of a `fit` and the seconds spent inside its training batches.

    The seconds are the sum of the intervals from each `on_train_batch_begin`
    to the matching `on_train_batch_end`: the step itself, its first-call
    compilation included, but not what callbacks do at epoch ends or between
    batches (FID evaluations, image grids, checkpoints). So two recipes can be
    compared by the training compute they used, whatever was evaluated along
    the way.

    Every callback keeps its own clock, and callbacks run one after another:
    an evaluation that one of them makes in `on_train_batch_end` falls inside
    the batch interval of the callbacks after it. Evaluations therefore run
    inside `TrainingClock.paused()`, whose seconds every clock leaves out, so
    all clocks agree whatever the order of the callbacks.

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

    _paused_seconds = 0.0  # all time ever spent inside `paused()`, shared by every clock

    def __init__(self) -> None:
        self.updates = 0
        self.seconds = 0.0
        self._batch_start: float | None = None
        self._paused_at_start = 0.0

    @classmethod
    @contextlib.contextmanager
    def paused(cls) -> Iterator[None]:
        """Time spent inside this block (an evaluation) is not training time for any clock.

        Example:
        >>> clock = TrainingClock()
        >>> clock.batch_begin()
        >>> with TrainingClock.paused():
        ...     time.sleep(0.05)
        >>> clock.batch_end()
        >>> clock.seconds < 0.05
        True
        """
        start = time.perf_counter()
        try:
            yield
        finally:
            TrainingClock._paused_seconds += time.perf_counter() - start

    def batch_begin(self) -> None:
        """Marks the start of one training batch."""
        self._batch_start = time.perf_counter()
        self._paused_at_start = TrainingClock._paused_seconds

    def batch_end(self) -> None:
        """Counts one update and adds the batch's seconds (nothing if no batch was begun)."""
        if self._batch_start is None:
            return
        paused = TrainingClock._paused_seconds - self._paused_at_start
        self.updates += 1
        self.seconds += max(time.perf_counter() - self._batch_start - paused, 0.0)
        self._batch_start = None
