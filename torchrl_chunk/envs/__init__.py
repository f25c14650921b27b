"""Environments for action-chunked PPO on MetaWorld MT10 (paper Section III.A).

* :class:`ChunkedEnv`: execute an action chunk ``[*B, h, action_dim]`` as one macro-step.
* :class:`WorkerPoolEnv`: ``N`` envs over ``W`` worker processes as one env of batch ``[N]``.
* :mod:`torchrl_chunk.envs.metaworld`: :data:`MT10_TASKS`, :data:`ALL_V3_TASKS` (MT50),
  :data:`TASK_INSTRUCTIONS`,
  :func:`make_metaworld_env`, :class:`MetaWorldEnv`, :func:`make_eval_configs`,
  :class:`NonFiniteObservationError`: MetaWorld MT10 single-task envs.
* :func:`collect_expert_demos`, :class:`ExpertDemos`, :func:`save_demos`,
  :func:`load_demos`: scripted-expert demonstrations.

MuJoCo's OpenGL backend (``MUJOCO_GL``) is settled when ``torchrl_chunk`` is first
imported, before ``mujoco`` is; see :mod:`torchrl_chunk.gl`.
"""

from torchrl_chunk.envs.chunked import ChunkedEnv, RewardAggregation
from torchrl_chunk.envs.demos import (
    ExpertDemos,
    collect_expert_demos,
    load_demos,
    save_demos,
)
from torchrl_chunk.envs.metaworld import (
    ALL_V3_TASKS,
    CAMERA,
    EVAL_SEED,
    MT10_TASKS,
    MT50_TASKS,
    NUM_EVAL_CONFIGS,
    TASK_INSTRUCTIONS,
    MetaWorldEnv,
    NonFiniteActionError,
    NonFiniteObservationError,
    derive_seed,
    make_eval_configs,
    make_metaworld_env,
    task_index,
    task_name,
)
from torchrl_chunk.envs.workers import WorkerError, WorkerPoolEnv, split_envs

__all__ = [
    "ALL_V3_TASKS",
    "CAMERA",
    "ChunkedEnv",
    "EVAL_SEED",
    "ExpertDemos",
    "MT10_TASKS",
    "MT50_TASKS",
    "MetaWorldEnv",
    "NUM_EVAL_CONFIGS",
    "NonFiniteActionError",
    "NonFiniteObservationError",
    "RewardAggregation",
    "TASK_INSTRUCTIONS",
    "WorkerError",
    "WorkerPoolEnv",
    "collect_expert_demos",
    "derive_seed",
    "load_demos",
    "make_eval_configs",
    "make_metaworld_env",
    "save_demos",
    "split_envs",
    "task_index",
    "task_name",
]
