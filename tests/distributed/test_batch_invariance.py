"""The tests' reach controller (tests/_ray.py) gives the same actions, bit for bit, whatever
the batch it runs in: 4 states at once, 2 + 2 (two Ray actors of 2 envs), or one by one.

Tests that compare a remote and a local run with different batch shapes rely on it. A
matmul does not give that on every x86 CPU: MKL picks its kernel by CPU and batch size,
and on AMD (MKL's AVX2 path) an ``nn.Linear`` row differs in the last bits between a batch
of 4 and a batch of 2. The check also runs in a process that forces those kernels on this
CPU (MKL_ENABLE_INSTRUCTIONS=AVX2 and the like), so it means the same on Intel and AMD CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from _ray import reach_controller

ROOT = Path(__file__).resolve().parents[2]
#: The kernels an AVX2-only or AMD x86 CPU gets (MKL, oneDNN and ATen's own dispatch).
AVX2_KERNELS = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

SPLITS = """
import torch
from tensordict import TensorDict
from _ray import reach_controller

def mismatches(policy, seed):
    g = torch.Generator().manual_seed(seed)
    state = torch.randn(4, 39, generator=g) * 0.3  # hand, goal and the rest, around the workspace
    state[1, 36:39] = state[1, 0:3]  # at the goal: zero actions
    def act(rows):
        td = TensorDict({"observation": {"state": state[rows]}}, batch_size=[len(rows)])
        return policy(td)["action"]
    whole = act([0, 1, 2, 3])
    parts = [torch.cat([act([0, 1]), act([2, 3])]), torch.cat([act([k]) for k in range(4)])]
    return sum(int((p != whole).sum()) for p in parts)

torch.set_num_threads(1)
for gain in (10.0, 4.0):
    policy = reach_controller(gain=gain)
    print(sum(mismatches(policy, seed) for seed in range(50)))
"""


def mismatches_in_a_process(env: dict) -> list[int]:
    path = os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", SPLITS], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env, "PYTHONPATH": path})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [int(line) for line in proc.stdout.split()]


def test_the_reach_controller_is_batch_invariant_with_this_cpus_kernels():
    assert mismatches_in_a_process({}) == [0, 0]


def test_the_reach_controller_is_batch_invariant_with_avx2_kernels():
    """With the old controller (one nn.Linear) this gave thousands of mismatches (of 80,000 entries)."""
    assert mismatches_in_a_process(AVX2_KERNELS) == [0, 0]


def test_the_reach_controller_reaches():
    """Its actions: toward the goal, clipped to [-1, 1], the gripper at 0, the same at every step."""
    state = torch.zeros(2, 39)
    state[0, 36:39] = torch.tensor([0.0625, -1.0, 0.0])  # goal; the hand at 0
    from tensordict import TensorDict

    action = reach_controller(horizon=3, gain=10.0)(TensorDict({"observation": {"state": state}}, [2]))["action"]
    assert action.shape == (2, 3, 4)
    assert torch.equal(action[0], torch.tensor([[0.625, -1.0, 0.0, 0.0]] * 3))
    assert not action[1].any()
