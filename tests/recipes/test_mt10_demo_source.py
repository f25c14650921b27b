"""The recipe's ``demos.source``: MetaWorld demos from a LeRobot v3 dataset or a TorchRL replay-buffer dump."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

from torchrl_chunk.data import save_lerobot_demos
from torchrl_chunk.envs import collect_expert_demos, task_index
from torchrl_chunk.experiment import JobError

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))
import mt10_config  # noqa: E402
from _recipe_config import config, error_of  # noqa: E402
import mt10_utils  # noqa: E402

TASK = "reach-v3"  # the smoke preset's task


@pytest.fixture(scope="module")
def demos():
    """Three real scripted demos of reach-v3; the first marked as a failure (to be skipped)."""
    trajectories = collect_expert_demos(TASK, 3, seed=5).trajectories
    trajectories[0]["next", "success"].zero_()
    return trajectories


@pytest.fixture(scope="module")
def lerobot_root(demos, tmp_path_factory):
    """``<root>/reach-v3/``: a LeRobot v3 dataset of the three demos (one folder per task)."""
    root = tmp_path_factory.mktemp("lerobot")
    save_lerobot_demos(demos, root / TASK, task=TASK)
    return root


@pytest.fixture(scope="module")
def dump_path(demos, tmp_path_factory):
    """A TorchRL replay buffer of the three demos and an episode still running, dumped."""
    path = tmp_path_factory.mktemp("rb") / "dump"
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(1000))
    running = demos[1][:5].clone()
    running["next", "done"].zero_()
    rb.extend(torch.cat([*demos, running]))
    rb.dumps(path)
    return path


@pytest.mark.slow
def test_smoke_run_trains_on_a_lerobot_dataset(demos, lerobot_root, tmp_path):
    env = {**os.environ, "TORCHRL_CHUNK_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    args = ["preset=smoke", "run_dir=run", "demos.source=lerobot", f"demos.path={lerobot_root}"]
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "mt10.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads((tmp_path / "run/jobs/ours/reach-v3/seed_1/result.json").read_text())
    # demos.num=2: the failed first episode is skipped, the next two seed the buffer (limit: the longer one)
    assert ours["buffer"]["expert_trajectories"] == 2
    assert ours["buffer"]["base_length_limit"] == max(demos[1].shape[0], demos[2].shape[0])
    assert ours["env_steps"] >= 600 and ours["metrics"]["num_episodes"] == 8
    assert not (tmp_path / "cache").exists()  # nothing collected


def test_bad_path_stops_before_anything_is_written(tmp_path):
    env = {**os.environ, "TORCHRL_CHUNK_CACHE": str(tmp_path / "cache")}
    args = ["preset=smoke", "run_dir=run", "demos.source=lerobot", f"demos.path={tmp_path / 'nowhere'}"]
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / "mt10.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: demos.path: no directory at") and "Fix these settings" in last
    assert not (tmp_path / "run").exists()


def test_expert_demos_from_a_replay_buffer_dump(demos, dump_path):
    cfg = config("demos.source=replay_buffer", f"demos.path={dump_path}")
    mt10_config.check_config(cfg)
    got = mt10_utils.expert_demos(cfg, TASK, 2)
    assert got.num_tries == 3 and got.metadata == {"source": "replay_buffer", "path": str(dump_path)}
    for a, b in zip(got.trajectories, demos[1:]):
        assert (a.exclude("index") == b).all()  # task_id included: the task's index
    with pytest.raises(JobError, match=r"^error: reach-v3: demos.source=replay_buffer demos.path=.* holds 2 "
                                         r"successful episodes \(of 3 read\) but 3 are needed; lower demos.num"):
        mt10_utils.expert_demos(cfg, TASK, 3)


def test_expert_demos_refuse_another_tasks_demonstrations(demos, tmp_path):
    other = [td.clone() for td in demos[1:]]
    for td in other:
        td["observation", "task_id"].fill_(3)
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(1000))
    rb.extend(torch.cat(other))
    rb.dumps(tmp_path / "dump")
    cfg = config("demos.source=replay_buffer", f"demos.path={tmp_path / 'dump'}")
    with pytest.raises(JobError, match=rf"episode 0 has task_id 3, not reach-v3's {task_index(TASK)}; use "
                                         "demonstrations of reach-v3"):
        mt10_utils.expert_demos(cfg, TASK, 2)


def test_settings_checks(lerobot_root, dump_path, tmp_path):
    mt10_config.check_config(config("demos.source=lerobot", f"demos.path={lerobot_root}"))  # <path>/<task>/
    mt10_config.check_config(config("demos.source=lerobot", f"demos.path={lerobot_root / TASK}"))  # the dataset
    assert "demos.source must be one of scripted, lerobot, replay_buffer, got 'hub'" in error_of("demos.source=hub")
    assert "demos.source=lerobot needs demos.path: the LeRobot dataset root" in error_of("demos.source=lerobot")
    assert "demos.path=/x is read only with demos.source=lerobot or replay_buffer" in error_of("demos.path=/x")
    assert f"demos.path={dump_path} must hold one source per task, in <path>/<task>/, for a run of 2 tasks; " \
           f"{dump_path / 'reach-v3'} is missing" in error_of("demos.source=replay_buffer", f"demos.path={dump_path}",
                                                            "tasks=[reach-v3,push-v3]")
    assert f"demos.path: {str(tmp_path)!r} is not a LeRobot dataset: meta/info.json is missing" in \
        error_of("demos.source=lerobot", f"demos.path={tmp_path}")
    assert "holds 3 episodes but 100 are needed" in error_of(
        "demos.source=lerobot", f"demos.path={lerobot_root}", "algo=sft100")
    assert "with env.from_pixels=true needs demos.image_key" in error_of(
        "demos.source=lerobot", f"demos.path={lerobot_root}", "model=pixel")


def test_demonstrations_of_another_size_are_refused_naming_both_shapes(tmp_path):
    T = 5
    toy = TensorDict({("observation", "state"): torch.zeros(T, 6), "action": torch.zeros(T, 3),
                      ("next", "done"): torch.arange(T).eq(T - 1).unsqueeze(-1)}, [T])
    root = save_lerobot_demos([toy, toy, toy], tmp_path / "toy")
    msg = error_of("demos.source=lerobot", f"demos.path={root}")
    assert f"demos.path={root} holds actions of shape [3] but reach-v3 needs [4] (MetaWorld's action)" in msg
    assert f"demos.path={root} holds states of shape [6] but reach-v3 needs [39] (MetaWorld's state" in msg
    assert f"demos.path={root} records no success: set demos.assume_success=true" in msg
    assert "records no success" not in error_of("demos.source=lerobot", f"demos.path={root}",
                                                "demos.assume_success=true")
