"""A real local Ray cluster for the tests: a head node started by this test process with a
fixed number of CPUs and no dashboard, stopped afterwards, also when a test fails
(``ray_cluster`` fixture in conftest.py). Recipes run by the tests join it by address.

The head is ``ray.init`` in this process rather than ``ray start``: ``ray stop`` would stop
every Ray process on the machine, ``ray.shutdown()`` stops this instance only, and it dies
with this process whatever happens."""

from __future__ import annotations

import os
from contextlib import contextmanager

NUM_CPUS = 2


@contextmanager
def local_cluster(num_cpus: int = NUM_CPUS):
    """A Ray head node on this machine with ``num_cpus`` CPUs; yields its address."""
    import ray

    # Ray >= 2.52 turns token authentication on for a new cluster, and a driver started
    # later (a recipe run by a test) only sends the token with RAY_AUTH_MODE=token; a test
    # cluster on this machine goes without (docs/scaling.md has the settings for a real one).
    old = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()
    finally:
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old


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
