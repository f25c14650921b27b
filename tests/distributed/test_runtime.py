"""Ray is optional: nothing imports it unless asked, and asking without it is one line; a test
that waits on Ray fails after a deadline instead of hanging."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _ray import deadline

ROOT = Path(__file__).resolve().parents[2]

WITHOUT_RAY = """
import sys
sys.modules["ray"] = None  # import ray raises ImportError, as when it is not installed
sys.path.insert(0, "recipes")
import torchrl_chunk.distributed, mt10_utils, mt10  # the library and the recipe import without it
from torchrl_chunk.distributed import RayEpisodeCollector, RayUnavailableError, evaluate_policy_ray
for call in (lambda: RayEpisodeCollector(None, None, num_envs=2, num_workers=2, decisions_per_env=1),
             lambda: evaluate_policy_ray(None, "reach-v3", num_workers=2)):
    try:
        call()
    except RayUnavailableError as err:
        print(err)
"""


def test_the_library_and_recipe_need_no_ray_until_asked():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_RAY], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and all("pip install 'torchrl-chunk[ray]'" in line for line in lines)


@pytest.mark.slow
def test_a_deadline_fails_a_hung_ray_wait_instead_of_hanging(ray_connected):
    """tests/_ray.py::deadline interrupts ``ray.get`` (which swallows other exceptions raised by
    a signal handler) and fails the test with a message; the test's own deadline goes on."""
    ray = ray_connected

    @ray.remote(num_cpus=0)
    def hang():
        time.sleep(600)

    ref = hang.remote()
    try:
        start = time.monotonic()
        with pytest.raises(pytest.fail.Exception, match="the wait did not finish within 1 s: Ray's workers may"):
            with deadline(1.0, "the wait"):
                ray.get(ref)
        assert time.monotonic() - start < 30
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # conftest's deadline for this test is armed again
    finally:
        ray.cancel(ref, force=True)
