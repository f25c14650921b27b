"""A real local Ray cluster for the tests: a head node started by this test process with a
fixed number of CPUs and no dashboard, stopped afterwards, also when a test fails
(``ray_cluster`` fixture in conftest.py). Recipes run by the tests join it by address.

The head is ``ray.init`` in this process rather than ``ray start``: ``ray stop`` would stop
every Ray process on the machine, ``ray.shutdown()`` stops this instance only, and it dies
with this process whatever happens.

A loaded machine (other test runs on the same cores) must make these tests slow or make
them fail with a message, never hang them:

* Ray starts its workers niced (``worker_niceness``, 15 by default): next to busy processes
  of priority 0 they get a few per cent of a core. The test cluster starts them at 0.
* The tests pass :data:`TIMEOUT_S` to the library's ``timeout_s`` (collection, evaluation),
  which raises ``TimeoutError`` naming the likely cause.
* Anything else that blocks on Ray in the test process is bounded by :func:`deadline`
  (conftest.py arms it around every test that uses ``ray_connected``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from contextlib import contextmanager

NUM_CPUS = 2

#: Seconds a test gives one remote collection or evaluation (``timeout_s``); 10-20 s on
#: an idle 2-core machine. Raise it with TORCHRL_CHUNK_TEST_RAY_TIMEOUT_S on a slow one.
TIMEOUT_S = float(os.environ.get("TORCHRL_CHUNK_TEST_RAY_TIMEOUT_S", "300"))
#: Seconds a whole test that uses the cluster from this process may take (:func:`deadline`).
TEST_DEADLINE_S = 3 * TIMEOUT_S

STARVED = ("Ray's workers may be starved of CPU (a loaded machine: other processes on the same "
           "cores), or the 2-CPU test cluster is held by an actor or task of an earlier test")


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
        # worker_niceness=0: workers at the priority of the test process (see the module doc).
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 _system_config={"worker_niceness": 0})
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()
    finally:
        if old is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old


@contextmanager
def deadline(seconds: float, what: str):
    """Fail the test with a message if the block takes more than ``seconds``, even while it
    waits in ``ray.get`` / ``ray.wait``.

    A SIGALRM handler interrupts the wait. It raises ``KeyboardInterrupt`` because that is
    the one exception Ray's blocking calls let through: any other one raised by a signal
    handler is swallowed there and the wait goes on (the reason a plain
    ``pytest-timeout``-style alarm does not help). It is turned into a test failure here; a
    real Ctrl-C passes through unchanged. Main thread only (elsewhere: no deadline).
    """
    import pytest

    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return
    fired = []

    def on_alarm(signum, frame):
        fired.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)  # an enclosing deadline's time left
    start = time.monotonic()
    try:
        yield
    except KeyboardInterrupt:
        if not fired:
            raise
        pytest.fail(f"{what} did not finish within {seconds:g} s: {STARVED}.")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:  # the enclosing deadline goes on
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


def reach_controller(horizon: int = 4, gain: float = 10.0):
    """A policy that solves reach-v3 from the state: ``clamp(gain * (goal - hand), -1, 1)``
    for the arm, 0 for the gripper, the same action at every step of the chunk.

    Batch-invariant by construction, bit for bit, on any CPU: it uses elementwise ops only
    (index, subtract, multiply, clamp), each rounded once per entry whatever the batch
    size or the vector width. A matmul (``nn.Linear``) is not: MKL/oneDNN choose their
    kernel by batch size and CPU, and with MKL's AVX2 path (AMD x86) the rows of a batch
    of 4 differ from those of two batches of 2 in the last bits
    (tests/distributed/test_batch_invariance.py).

    ``gain`` is a parameter (``[horizon, 4]``), so weight pushes have something to send. The
    class is defined in this function: cloudpickle sends it by value, and Ray workers
    unpickle it without the tests on their path.
    """
    import torch
    from tensordict.nn import TensorDictModule
    from torch import nn

    from torchrl_chunk.keys import ACTION_KEY, STATE_KEY

    class ReachController(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            gains = torch.full((horizon, 4), float(gain))
            gains[:, 3] = 0.0  # the gripper stays at 0
            self.gain = nn.Parameter(gains)

        def forward(self, state: torch.Tensor) -> torch.Tensor:
            delta = state[..., 36:39] - state[..., 0:3]  # state[0:3] is the hand, state[36:39] the goal
            delta = torch.cat([delta, torch.zeros_like(delta[..., :1])], -1)
            return (self.gain * delta.unsqueeze(-2)).clamp(-1.0, 1.0)  # [*B, horizon, 4]

    return TensorDictModule(ReachController(), in_keys=[STATE_KEY], out_keys=[ACTION_KEY])
