"""JobState: a job's counters, saved as the dict checkpoints always held."""

from __future__ import annotations

import pytest
import torch

from torchrl_chunk.experiment import JobState, load_checkpoint, save_checkpoint
from torchrl_chunk.experiment.checkpoint import STATE_FILE, verify_manifest

OLD_STATE = {"phase": "rl", "iteration": 3, "env_steps": 960, "updates": 24, "history": [{"env_steps": 0,
             "success_rate": 0.5}], "episodes": 40, "successes": 12, "wall_time_s": 12.5}


def test_a_checkpoint_of_the_old_string_dict_loads_as_a_job_state(tmp_path):
    actor = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path, OLD_STATE, {"actor": actor}, None)  # what the recipe saved before the state was typed
    payload = load_checkpoint(tmp_path, {"actor": actor}, None)
    assert JobState.from_dict(payload) == JobState(**OLD_STATE)


def test_a_job_state_is_saved_as_the_same_dict_and_its_manifest_verifies(tmp_path):
    actor, state = torch.nn.Linear(2, 2), JobState(**OLD_STATE)
    ckpt = save_checkpoint(tmp_path, state, {"actor": actor}, None)
    assert verify_manifest(ckpt) is None
    payload = torch.load(ckpt / STATE_FILE, weights_only=False)
    assert [k for k in payload if k in OLD_STATE] == list(OLD_STATE)  # the same keys, in the same order
    assert {k: payload[k] for k in OLD_STATE} == OLD_STATE
    assert JobState.from_dict(load_checkpoint(tmp_path, {"actor": actor}, None)) == state


def test_defaults_and_a_missing_key_and_a_bad_phase():
    assert JobState() == JobState.from_dict({}) == JobState(phase="sft", iteration=0, env_steps=0, updates=0,
                                                             history=[], episodes=0, successes=0, wall_time_s=0.0)
    assert JobState.from_dict({"phase": "eval", "iteration": 2}).iteration == 2
    with pytest.raises(ValueError, match="phase must be one of sft, rl, eval, got 'done'"):
        JobState(phase="done")
