"""Run independent jobs in several processes (one shard of the job list per process).

Why hand-written: ``concurrent.futures`` does the work; this only fixes the two choices that
matter for training jobs — the ``spawn`` start method (a forked MuJoCo/GL or CUDA context is
not safe to use in the child) and a deterministic assignment of jobs to processes (job ``i``
goes to process ``i % n``), so that a resumed run finds each job where it left it.

Stopping (:mod:`.stop`): inside a :class:`~torchrl_chunk.experiment.stop.StopSignals`, a
SIGTERM or SIGINT of this process is forwarded to the shard processes as SIGTERM (``docker
stop`` signals PID 1 only); they ignore SIGINT (a Ctrl-C reaches the whole process group: they
hear of it once, from here), stop at their own safe points, and their
:class:`~torchrl_chunk.experiment.stop.StopRequested` come back merged into one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import active_children, get_context
from typing import Any, TypeVar

from torchrl_chunk.experiment import stop

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
    function and plain data). An exception in a shard is raised here after the others finish
    (the first in shard order); when shards only stopped (:class:`.stop.StopRequested`), one
    ``StopRequested`` with their details joined by ``"; "``.
    """
    if len(shards) <= 1:
        return [r for s in shards for r in fn(list(s), *args, 0)]
    stop.check("no shard process was started")
    ctx = get_context("spawn")
    with ProcessPoolExecutor(len(shards), mp_context=ctx, initializer=stop.child_process_setup) as pool:
        futures = [pool.submit(fn, list(s), *args, i) for i, s in enumerate(shards)]
        with stop.forward_to(lambda: _pids(pool)):
            wait(futures)
    errors = [f.exception() for f in futures if f.exception() is not None]
    signum = stop.requested()  # the signal this process got (the shards hear SIGTERM)
    stopped = [e for e in errors if isinstance(e, stop.StopRequested)]
    # a shard process that got the forwarded signal while starting (before its handler) breaks the pool
    others = [e for e in errors if not isinstance(e, stop.StopRequested)
              and not (signum is not None and isinstance(e, BrokenProcessPool))]
    if errors and not others:
        details = "; ".join(e.detail for e in stopped if e.detail) or "the shard processes ended before a safe point"
        raise stop.StopRequested(signum or stopped[0].signum, details)
    if others:
        raise others[0]
    return [r for f in futures for r in f.result()]


def _pids(pool: ProcessPoolExecutor) -> list[int]:
    """The pool's worker processes (``_processes``: not public, hence the fallback)."""
    if not hasattr(pool, "_processes"):
        return [p.pid for p in active_children()]
    return [p.pid for p in dict(pool._processes or {}).values()]
