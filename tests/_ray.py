"""A real local Ray cluster for the tests: a head node started with ``ray start`` and
stopped afterwards, also when a test fails (``ray_cluster`` fixture in conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")
NUM_CPUS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_cluster(num_cpus: int = NUM_CPUS):
    """``ray start --head`` on 127.0.0.1 with ``num_cpus`` CPUs, no dashboard; yields its address."""
    port = _free_port()
    # Ray >= 2.52 turns on token authentication for `ray start`, while a driver only sends the
    # token with RAY_AUTH_MODE=token; a test cluster on 127.0.0.1 goes without (docs/scaling.md
    # has the settings for a real cluster). The recipes run by the tests inherit this.
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
           "--include-dashboard=false", "--disable-usage-stats"]
    try:
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        try:
            import ray

            ray.shutdown()
        finally:
            subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=180)


def reach_controller(horizon: int = 4, gain: float = 10.0):
    """A policy that solves reach-v3 from the state (hand -> goal), built from torch layers only
    (so Ray workers unpickle it without the tests on their path). One ``nn.Linear``: each
    row of the batch is computed alone, so its actions do not depend on the batch size."""
    import torch
    from tensordict.nn import TensorDictModule
    from torch import nn

    from torchrl_chunk.keys import ACTION_KEY, STATE_KEY

    lin = nn.Linear(39, horizon * 4)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.zero_()
        for t in range(horizon):
            for j in range(3):  # state[0:3] is the hand, state[36:39] the goal
                lin.weight[t * 4 + j, 36 + j] = gain
                lin.weight[t * 4 + j, j] = -gain
    net = nn.Sequential(lin, nn.Unflatten(-1, (horizon, 4)), nn.Hardtanh())
    return TensorDictModule(net, in_keys=[STATE_KEY], out_keys=[ACTION_KEY])
