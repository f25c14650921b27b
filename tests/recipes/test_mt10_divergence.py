"""A diverged simulator or policy stops a job with the culprit named and the last good checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "recipes"))
import mt10  # noqa: E402
import mt10_utils  # noqa: E402

from torchrl_chunk.envs import NonFiniteObservationError  # noqa: E402
from torchrl_chunk.experiment import JobError, JobId  # noqa: E402
from torchrl_chunk.keys import STATE_KEY  # noqa: E402


def smoke_config(tmp_path):
    with initialize_config_dir(str(ROOT / "recipes" / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["preset=smoke", "algo=ours", "train.total_env_steps=2000",
                                           f"demos.cache_dir={tmp_path / 'cache'}"])
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))


def test_nan_observation_names_the_observation_task_env_and_last_checkpoint(tmp_path, monkeypatch):
    """The recipe's side: the env raising on a NaN is tested in tests/envs/test_metaworld.py."""
    real_collect, calls = mt10_utils.collect, []

    def collect(*args):
        calls.append(1)
        if len(calls) == 3:  # the simulator diverges in env 2 during the third collection
            raise NonFiniteObservationError("reach-v3", 2, STATE_KEY)
        return real_collect(*args)

    monkeypatch.setattr(mt10_utils, "collect", collect)
    job_dir = tmp_path / "run" / "jobs" / "ours" / "reach-v3"
    with pytest.raises(JobError) as err:
        mt10.run_job(smoke_config(tmp_path), JobId("ours", "reach-v3", 1), job_dir)
    msg = str(err.value)
    assert "non-finite observation ('observation', 'state')" in msg and "reach-v3" in msg and "env 2" in msg
    assert "non-finite action" not in msg  # the policy is not blamed for the simulator
    assert f"{job_dir / 'checkpoint'} (iteration 2)" in msg and f"resume={tmp_path / 'run'}" in msg
    assert "start a new run_dir" in msg  # resume= replays the same data: changing settings needs a new run
    assert "NonFiniteObservationError" in (job_dir / "error.log").read_text()  # the traceback is kept
    assert "\n" not in msg
