"""Renamed keywords and attributes: the old name keeps working, with a ``DeprecationWarning``, for a release.

The chunk size ``h`` was called ``horizon`` in the losses, the demo buffer and the model
builders, ``chunk_size`` in the envs and the evaluation (and in TorchRL's own chunk tools).
It is ``chunk_size`` everywhere now; ``horizon=`` and ``.horizon`` are accepted until
:data:`REMOVED_IN`::

    @renamed_kwarg("horizon", "chunk_size")
    def make_thing(*, chunk_size: int): ...

    class Thing:
        horizon = renamed_attribute("horizon", "chunk_size")  # read-only, warns
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Any, Callable, TypeVar

#: The release that drops the old names (the package is 0.1.x: the next minor).
REMOVED_IN = "0.2"

F = TypeVar("F", bound=Callable[..., Any])


def _message(old: str, new: str, kind: str) -> str:
    if kind == "keyword":
        return f"`{old}=` is deprecated, use `{new}=`; it will be removed in {REMOVED_IN}."
    return f"`.{old}` is deprecated, use `.{new}`; it will be removed in {REMOVED_IN}."


def renamed_kwarg(old: str, new: str) -> Callable[[F], F]:
    """Decorator: accept the keyword ``old`` as ``new`` with a ``DeprecationWarning``.

    ``new`` must be a parameter of the decorated function (keyword-only or positional: a
    positional parameter keeps its position). Passing both names, as keywords or ``new``
    by position, raises ``TypeError`` naming both. Works on functions and on ``__init__``.
    """

    def decorate(fn: F) -> F:
        params = inspect.signature(fn).parameters
        if new not in params:
            raise TypeError(f"{fn.__qualname__} has no parameter {new!r} to rename {old!r} to.")
        names = list(params)
        positional = params[new].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        position = names.index(new) if positional else None
        name = fn.__qualname__.removesuffix(".__init__")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if old in kwargs:
                if new in kwargs or (position is not None and len(args) > position):
                    raise TypeError(
                        f"{name}() got both `{old}=` (deprecated) and `{new}=`; pass `{new}=` only.")
                warnings.warn(_message(old, new, "keyword"), DeprecationWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def renamed_attribute(old: str, new: str) -> property:
    """A read-only property ``old`` that returns ``self.<new>`` with a ``DeprecationWarning``."""

    def getter(self):
        warnings.warn(_message(old, new, "attribute"), DeprecationWarning, stacklevel=2)
        return getattr(self, new)

    return property(getter, doc=f"Deprecated alias of :attr:`{new}` (removed in {REMOVED_IN}).")


__all__ = ["REMOVED_IN", "renamed_attribute", "renamed_kwarg"]
