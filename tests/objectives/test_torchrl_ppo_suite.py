"""TorchRL's own PPO tests against ChunkClipPPOLoss(chunk_size=None / 1).

Needs TorchRL's test sources, which PyPI does not ship (torchrl is published as wheels
only): set ``TORCHRL_SRC`` to a pytorch/rl checkout or git directory (and optionally
``TORCHRL_REV`` to a tag). About 20-40 s per horizon on 2 CPU cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "torchrl_tests" / "run_ppo_tests.py"
SRC = os.environ.get("TORCHRL_SRC")


@pytest.mark.slow
@pytest.mark.skipif(not SRC, reason="set TORCHRL_SRC to a pytorch/rl checkout to run TorchRL's PPO tests")
@pytest.mark.parametrize("horizon", ["none", "1"])
def test_torchrl_ppo_tests_pass_against_the_subclass(horizon):
    cmd = [sys.executable, str(SCRIPT), "--rl-src", SRC, "--horizon", horizon]
    if os.environ.get("TORCHRL_REV"):
        cmd += ["--rev", os.environ["TORCHRL_REV"]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900).stdout
    counts = re.search(r"^exercised: (\d+) passed, (\d+) failed", out, re.M)
    assert counts is not None, out[-3000:]
    assert int(counts[1]) > 500 and int(counts[2]) == 0, out[-3000:]
