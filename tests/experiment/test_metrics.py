"""Per-iteration diagnostics: means over updates, timings, throughput."""

from __future__ import annotations

import time

import pytest
import torch
from tensordict import TensorDict

from torchrl_chunk.experiment import IterationLog


def test_summary_means_every_scalar_and_grad_norms():
    log = IterationLog()
    for i in range(4):
        out = TensorDict({"loss_objective": torch.tensor(float(i)), "kl_approx": torch.tensor(0.1 * i),
                          "per_sample": torch.ones(3)}, [])
        log.add_update(out, {"grad_norm": torch.tensor(2.0 * i)})
    s = log.summary()
    assert s["loss_objective"] == pytest.approx(1.5)
    assert s["kl_approx"] == pytest.approx(0.15)
    assert s["grad_norm"] == pytest.approx(3.0)
    assert s["updates"] == 4 and "per_sample" not in s  # only scalars are logged


def test_timers_and_env_steps_per_second():
    log = IterationLog()
    with log.timer("collect"):
        time.sleep(0.02)
    with log.timer("update"):
        pass
    with log.timer("update"):
        time.sleep(0.01)
    s = log.summary(env_steps=100)
    assert s["time/collect"] >= 0.02 and s["time/update"] >= 0.01  # both update blocks added
    assert s["collect_steps_per_s"] == pytest.approx(100 / s["time/collect"])
    assert s["env_steps_per_s"] == pytest.approx(100 / (s["time/collect"] + s["time/update"]))
    assert IterationLog().summary(env_steps=5) == {"updates": 0.0}  # nothing measured, nothing made up


def test_gradients_do_not_leak_into_the_log():
    w = torch.ones((), requires_grad=True)
    log = IterationLog()
    log.add_update({"loss_x": w * 2})
    assert log.summary()["loss_x"] == 2.0 and log._updates[0]["loss_x"].requires_grad is False
