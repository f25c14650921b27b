"""Run independent jobs in several processes (one shard of the job list per process).

Why hand-written: ``concurrent.futures`` does the work; this only fixes the two choices that
matter for training jobs — the ``spawn`` start method (a forked MuJoCo/GL or CUDA context is
not safe to use in the child) and a deterministic assignment of jobs to processes (job ``i``
goes to process ``i % n``), so that a resumed run finds each job where it left it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

T = TypeVar("T")


def shard(items: Sequence[T], num_shards: int) -> list[list[T]]:
    """Split ``items`` round-robin into at most ``num_shards`` non-empty lists."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    n = min(num_shards, len(items)) or 1
    return [list(items[i::n]) for i in range(n)]


def map_shards(fn: Callable[..., list[Any]], shards: Sequence[Sequence[T]], *args: Any) -> list[Any]:
    """``fn(shard, *args, position)`` for each shard, in its own process when there are several.

    Returns the concatenated results in shard order. ``position`` (0, 1, ...) lets each
    process place its progress bar. ``fn`` and ``args`` must be picklable (a module-level
    function and plain data). An exception in a shard is raised here after the others finish.
    """
    if len(shards) <= 1:
        return [r for s in shards for r in fn(list(s), *args, 0)]
    with ProcessPoolExecutor(len(shards), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(fn, list(s), *args, i) for i, s in enumerate(shards)]
        return [r for f in futures for r in f.result()]
