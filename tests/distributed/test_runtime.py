"""Ray is optional: nothing imports it unless asked, and asking without it is one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
