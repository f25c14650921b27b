"""Errors raised while reading Octo checkpoints (official directories and our torch files).

Every message is one line that names the file, what is wrong with it, and the fix.
"""

from __future__ import annotations


class OctoCheckpointError(ValueError):
    """The path is not a usable Octo checkpoint (message says what is wrong and the fix)."""


class OctoVersionMismatchError(OctoCheckpointError):
    """An Octo 1.0 checkpoint was loaded as 1.5 (or the reverse)."""


class OctoShapeMismatchError(OctoCheckpointError):
    """Some checkpoint leaves do not fit the module's parameter shapes."""


def examples(items: list[str], n: int = 3) -> str:
    """``"a; b; c (+4 more)"``: the first ``n`` items of a list, for one-line messages."""
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "; ".join(items[:n]) + more


__all__ = ["OctoCheckpointError", "OctoShapeMismatchError", "OctoVersionMismatchError", "examples"]
