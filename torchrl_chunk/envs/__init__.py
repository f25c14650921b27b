"""Environments for action-chunked PPO on MetaWorld MT10 (paper Section III.A).

* :class:`ChunkedEnv`: execute an action chunk ``[*B, h, action_dim]`` as one macro-step.
* :data:`MT10_TASKS`, :data:`TASK_INSTRUCTIONS`, :func:`make_metaworld_env`,
  :class:`MetaWorldEnv`, :func:`make_eval_configs`: MetaWorld MT10 single-task envs.
* :func:`collect_expert_demos`, :class:`ExpertDemos`, :func:`save_demos`,
  :func:`load_demos`: scripted-expert demonstrations.

Importing this package selects a headless OpenGL backend for MuJoCo (``MUJOCO_GL``:
EGL, then OSMesa) unless one is set already; see :mod:`torchrl_chunk.envs._gl`.
"""

from torchrl_chunk.envs._gl import select_gl_backend as _select_gl_backend

_select_gl_backend()  # must run before mujoco is imported (it reads MUJOCO_GL once)

from torchrl_chunk.envs.chunked import ChunkedEnv, RewardAggregation  # noqa: E402
from torchrl_chunk.envs.demos import (  # noqa: E402
    ExpertDemos,
    collect_expert_demos,
    load_demos,
    save_demos,
)
from torchrl_chunk.envs.metaworld import (  # noqa: E402
    CAMERA,
    EVAL_SEED,
    MT10_TASKS,
    NUM_EVAL_CONFIGS,
    TASK_INSTRUCTIONS,
    MetaWorldEnv,
    derive_seed,
    make_eval_configs,
    make_metaworld_env,
    task_index,
)

__all__ = [
    "CAMERA",
    "ChunkedEnv",
    "EVAL_SEED",
    "ExpertDemos",
    "MT10_TASKS",
    "MetaWorldEnv",
    "NUM_EVAL_CONFIGS",
    "RewardAggregation",
    "TASK_INSTRUCTIONS",
    "collect_expert_demos",
    "derive_seed",
    "load_demos",
    "make_eval_configs",
    "make_metaworld_env",
    "save_demos",
    "task_index",
]
