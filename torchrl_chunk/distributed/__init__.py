"""Collection, evaluation and job sweeps beyond one process, on Ray (optional extra).

* :class:`RayEpisodeCollector` -- whole-episode batches from env workers that are Ray
  actors (TorchRL's :class:`~torchrl.collectors.distributed.RayCollector`, weights pushed
  with its ``RayWeightSyncScheme``), reseeded per batch, rebuilt when an actor dies;
* :func:`evaluate_policy_ray` -- the fixed evaluation configurations split over Ray tasks,
  with exactly the per-episode results of :func:`torchrl_chunk.evaluation.evaluate_policy`;
* :func:`init_ray` -- start or join a cluster; :func:`require_ray` -- the one-line error.

Importing this package does not import Ray; building one of the above does.
"""

from torchrl_chunk.distributed.collection import RayEpisodeCollector, SeededCollector, is_worker_failure
from torchrl_chunk.distributed.evaluation import evaluate_policy_ray
from torchrl_chunk.distributed.runtime import RayUnavailableError, init_ray, require_ray

__all__ = [
    "RayEpisodeCollector",
    "RayUnavailableError",
    "SeededCollector",
    "evaluate_policy_ray",
    "init_ray",
    "is_worker_failure",
    "require_ray",
]
