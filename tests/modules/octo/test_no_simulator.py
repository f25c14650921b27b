"""The model library knows no simulator: ``torchrl_chunk.modules`` (Octo included, and its
converter CLI) never imports ``torchrl_chunk.envs``, MetaWorld or MuJoCo, nor the recipes.

TorchRL's own ``torchrl.envs`` imports ``mujoco`` when it is installed, so MuJoCo modules
that TorchRL loads by itself are the baseline; anything beyond it is ours.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import torchrl_chunk.modules

FORBIDDEN = ("torchrl_chunk.envs", "metaworld", "mujoco", "recipes")
MODULES_DIR = Path(torchrl_chunk.modules.__file__).parent

PROBE = """
import sys
import torchrl.envs, torchrl.modules, torchrl.objectives  # TorchRL's own imports: baseline
base = set(sys.modules)
import torchrl_chunk.modules, torchrl_chunk.modules.octo, torchrl_chunk.modules.octo.convert
from torchrl_chunk.modules.octo.convert import main
for argv in (["instructions", "/nonexistent-t5", "/nonexistent/x.pt"],
             ["instructions", "/nonexistent-t5", "/nonexistent/x.pt", "--text", "open the drawer"]):
    try:
        main(argv)  # fails (no T5 there): what matters is what it imported on the way
    except BaseException:
        pass
new = set(sys.modules) - base
print(sorted(m for m in new if m.split(".")[0] in ("metaworld", "mujoco", "recipes")
             or m == "torchrl_chunk.envs" or m.startswith("torchrl_chunk.envs.")))
"""


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_no_module_file_imports_the_simulator():
    offenders = []
    for path in sorted(MODULES_DIR.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            offenders += [f"{path.relative_to(MODULES_DIR.parent)}:{node.lineno} {n}" for n in names if _forbidden(n)]
    assert not offenders, offenders


def test_importing_the_models_and_running_the_converter_loads_no_simulator():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-2000:]
