"""Tensordict keys shared by every torchrl_chunk module.

We follow TorchRL's VLA key schema (``torchrl.data.vla``) and add the few keys the
paper needs on top of it. Losses take their keys from ``set_keys``; these constants
are only the defaults, collected in one place so environments, buffers, policies and
losses agree.
"""

from __future__ import annotations

from torchrl.data.vla import (
    ACTION_CHUNK_KEY,  # ("vla_action", "chunk"): [*B, h, action_dim] BC target
    ACTION_IS_PAD_KEY,  # "action_is_pad": [*B, h] bool, True where a chunk ran past its trajectory
    ACTION_KEY,  # "action": what the env executes; for ChunkedEnv a chunk [*B, h, action_dim]
    IMAGE_KEY,  # ("observation", "image")
    INSTRUCTION_KEY,  # "language_instruction" (non-tensor string)
    STATE_KEY,  # ("observation", "state")
)

#: Number of base-env steps actually executed by one chunk (1..h), written by ChunkedEnv
#: under ``"next"``. Used as GAE's ``steps_to_next_obs`` for the ``"step"`` discount mode
#: and to measure trajectory lengths in env steps.
STEPS_EXECUTED_KEY = "steps_executed"
#: Whether any executed step of the chunk succeeded (bool [*B, 1]), under ``"next"``.
SUCCESS_KEY = "success"
#: Integer task index into ``torchrl_chunk.envs.ALL_V3_TASKS`` (int64 [*B, 1]; the MT10 tasks are
#: its first ten, in Table I order).
TASK_ID_KEY = ("observation", "task_id")
#: Log-probability of the sampled chunk stored at collection time (joint over the chunk).
SAMPLE_LOG_PROB_KEY = "action_log_prob"

__all__ = [
    "ACTION_CHUNK_KEY",
    "ACTION_IS_PAD_KEY",
    "ACTION_KEY",
    "IMAGE_KEY",
    "INSTRUCTION_KEY",
    "SAMPLE_LOG_PROB_KEY",
    "STATE_KEY",
    "STEPS_EXECUTED_KEY",
    "SUCCESS_KEY",
    "TASK_ID_KEY",
]
