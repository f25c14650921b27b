"""Joining or starting a Ray cluster, and the one-line error when Ray is missing.

Ray is an optional extra (``pip install 'torchrl-chunk[ray]'``): nothing else in the
package imports it, and only the ``*_ray`` / ``Ray*`` entry points of
:mod:`torchrl_chunk.distributed` need it.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["RayUnavailableError", "init_ray", "require_ray"]


class RayUnavailableError(ImportError):
    """Ray is asked for but not installed."""


def require_ray():
    """Import and return ``ray``, or raise a one-line error naming the fix."""
    try:
        import ray
    except ImportError as err:
        raise RayUnavailableError(
            "this needs Ray, which is not installed: pip install 'torchrl-chunk[ray]' "
            "(or pip install 'ray>=2.50')."
        ) from err
    return ray


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    python_path: list[str] | None = None,
    **kwargs: Any,
):
    """Connect this process to Ray once (a no-op when already connected); returns ``ray``.

    Args:
        address: ``None`` or ``"local"`` starts a private Ray instance on this machine
            (stopped when the process exits); ``"auto"`` joins the cluster this node
            was added to with ``ray start``; ``"HOST:PORT"`` joins that head node.

    Keyword Args:
        num_cpus: CPUs of a private local instance (``None``: all of them). Ignored when
            joining a cluster (the nodes declared theirs with ``ray start --num-cpus``).
        python_path: directories prepended to ``PYTHONPATH`` in every Ray worker of
            this job (e.g. ``recipes/``, whose modules the workers import). They must
            exist at the same path on every node: a shared file system or the same
            checkout everywhere (docs/scaling.md).
        kwargs: passed to ``ray.init``.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, **kwargs}
    if address in (None, "local"):
        options["num_cpus"] = num_cpus
    else:
        options["address"] = address
    if python_path:
        paths = [str(p) for p in python_path]
        old = os.environ.get("PYTHONPATH")
        env = {"PYTHONPATH": os.pathsep.join(paths + ([old] if old else []))}
        options["runtime_env"] = {"env_vars": env}
    ray.init(**options)
    return ray
