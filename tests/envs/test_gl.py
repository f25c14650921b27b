"""MUJOCO_GL: a bad or missing GL setup never breaks state-only use, whatever the import order.

Each case runs in a fresh interpreter (MuJoCo reads MUJOCO_GL once, at import).
"""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys
import textwrap

import pytest

# A state-only MetaWorld env driven by the CPU default MLP policy for one chunk.
STATE_ONLY = """
import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl_chunk.envs import make_metaworld_env
from torchrl_chunk.modules.mlp import make_mlp_actor_critic
env = make_metaworld_env("reach-v3", num_envs=2, chunk_size=4)
actor, _ = make_mlp_actor_critic(torch.zeros(39), torch.ones(39), hidden=(8,))
with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
    td = env.step(actor(env.reset()))
assert td["next", "steps_executed"].squeeze(-1).tolist() == [4, 4]
env.close()
print("STATE-ONLY OK")
"""
# Asking for pixels must fail in one line naming MUJOCO_GL (not a MuJoCo traceback).
PIXELS = """
from torchrl_chunk.envs import make_metaworld_env
try:
    make_metaworld_env("reach-v3", num_envs=1, from_pixels=True, image_size=16).reset()
except RuntimeError as err:
    print("PIXELS ERROR:", err)
else:
    print("PIXELS OK")
"""
# Pretend no GL library is installed (what ctypes finds is all the check looks at).
NO_GL_LIBS = """
import ctypes.util
_find = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if name in ("EGL", "OSMesa") else _find(name)
"""
HAS_OSMESA = bool(ctypes.util.find_library("OSMesa"))


def run(code: str, mujoco_gl: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    if mujoco_gl is not None:
        env["MUJOCO_GL"] = mujoco_gl
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
        timeout=300,
    )


def pixel_error(out: subprocess.CompletedProcess) -> str:
    lines = [line for line in out.stdout.splitlines() if line.startswith("PIXELS ERROR:")]
    assert lines, out.stdout + out.stderr
    return lines[0]


@pytest.mark.parametrize(
    "first_import",
    [
        "import torchrl_chunk.evaluation",  # what the recipe imports first
        "import torchrl; import torchrl_chunk.envs",
        "import torchrl_chunk.keys",
        "import torchrl_chunk.modules",
        "import torchrl_chunk.envs",
    ],
)
def test_invalid_mujoco_gl_leaves_state_only_working_whatever_the_import_order(first_import):
    out = run(first_import + "\n" + STATE_ONLY + PIXELS, "nonsense")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "STATE-ONLY OK" in out.stdout
    err = pixel_error(out)
    assert "MUJOCO_GL=nonsense" in err and "MUJOCO_GL=egl" in err and "unset" in err
    assert "Traceback" not in out.stderr


@pytest.mark.skipif(HAS_OSMESA, reason="needs a machine without libOSMesa")
def test_osmesa_without_libosmesa_names_the_library():
    # before: AttributeError: 'NoneType' object has no attribute 'glGetError' at import
    out = run("import torchrl_chunk.evaluation\n" + STATE_ONLY + PIXELS, "osmesa")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "STATE-ONLY OK" in out.stdout
    err = pixel_error(out)
    assert "MUJOCO_GL=osmesa" in err and "libOSMesa" in err and "libosmesa6" in err


@pytest.mark.parametrize("mujoco_gl", [None, "egl"])
def test_no_gl_library_at_all(mujoco_gl):
    out = run(NO_GL_LIBS + "import torchrl_chunk.evaluation\n" + STATE_ONLY + PIXELS, mujoco_gl)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "STATE-ONLY OK" in out.stdout
    err = pixel_error(out)
    assert "libegl1" in err and "from_pixels=False" in err
    if mujoco_gl:
        assert "MUJOCO_GL=egl needs libEGL" in err


def test_disabled_rendering_refuses_pixels_in_one_line():
    out = run(STATE_ONLY + PIXELS, "disable")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MUJOCO_GL=disable turns it off" in pixel_error(out)


def test_user_setting_is_kept_for_child_processes():
    code = """
    import os, sys
    import torchrl_chunk.gl as gl
    print(os.environ.get("MUJOCO_GL"), "mujoco" in sys.modules, gl.RENDERING_UNAVAILABLE is not None)
    """
    out = run(code, "nonsense")
    assert out.stdout.split() == ["nonsense", "True", "True"], out.stderr[-3000:]


@pytest.mark.skipif(not ctypes.util.find_library("EGL"), reason="needs libEGL (the backend chosen here)")
def test_a_gl_library_that_fails_to_load_does_not_break_state_only_use():
    """libEGL is installed but PyOpenGL is told to use OSMesa: importing mujoco with EGL fails."""
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"}
    env["PYOPENGL_PLATFORM"] = "osmesa"
    out = subprocess.run(
        [sys.executable, "-c", "import torchrl_chunk\n" + textwrap.dedent(STATE_ONLY + PIXELS)], env=env,
        capture_output=True,
        text=True, timeout=300,
    )
    assert "STATE-ONLY OK" in out.stdout, out.stderr[-2000:]
    assert "MUJOCO_GL=egl failed to load" in pixel_error(out) and "PYOPENGL_PLATFORM" in pixel_error(out)
