"""The one way the library deprecates a name: a warning that says what replaces it and the release that removes it.

Nothing is deprecated today (no release was made before the package's layout
settled). A later change that renames or removes a public name keeps the old
one working for at least one release through `deprecated`, with the version
that removes it, so users see when to move.
"""

import functools
import warnings
from collections.abc import Callable


def deprecation_message(name: str, instead: str, removed_in: str) -> str:
    """The text of every deprecation warning of the library.

    Example:
    >>> deprecation_message("generate(eta=...)", "sampler=kd.samplers.get_sampler('ddim', eta=...)", "0.3.0")
    "generate(eta=...) is deprecated and will be removed in keras_diffusion 0.3.0; use sampler=kd.samplers.get_sampler('ddim', eta=...) instead."
    """
    if not removed_in or not removed_in[0].isdigit():
        raise ValueError(f"`removed_in` must be the release that removes {name}, e.g. '0.3.0'; received {removed_in!r}.")
    return f"{name} is deprecated and will be removed in keras_diffusion {removed_in}; use {instead} instead."


def deprecated(instead: str, removed_in: str, name: str | None = None) -> Callable:
    """Decorates a function or class whose name is deprecated: calling it warns, then runs it unchanged.

    Args:
        instead: what to use instead, as the user would write it.
        removed_in: the release that removes it, e.g. "0.3.0".
        name: the name in the message; default the decorated object's qualified name.

    Returns:
        A decorator.

    Example:
    >>> @deprecated("new_function()", removed_in="0.3.0")
    ... def old_function():
    ...     return 1
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     old_function(), caught[0].category.__name__
    (1, 'DeprecationWarning')
    """

    def decorate(target):
        message = deprecation_message(name or target.__qualname__, instead, removed_in)

        @functools.wraps(target)
        def warn_then_call(*args, **kwargs):
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            return target(*args, **kwargs)

        return warn_then_call

    return decorate
