"""Run TorchRL's own PPO loss tests against ``ChunkClipPPOLoss``.

TorchRL's ``test/objectives/test_ppo.py`` is copied into a scratch folder and its import
of ``ClipPPOLoss`` is rewritten to a stand-in class: ``ChunkClipPPOLoss`` with
``chunk_size=None`` or ``chunk_size=1`` (``--horizon``) and TorchRL's constructor defaults (``ChunkClipPPOLoss``
defaults to the paper's hyper-parameters, see docs/guide.md). Parametrisations for the
other losses (``PPOLoss``, ``KLPENPPOLoss``) are deselected; every other test of
``TestPPO`` runs, and a test counts as *exercising* the subclass when it built at least
one instance of it. ``--reference`` runs the same selection against TorchRL's real
``ClipPPOLoss``, to tell failures of the subclass from failures of the test environment.

The test files are not on PyPI (torchrl ships wheels only), so point ``--rl-src`` at a
pytorch/rl checkout (a work tree, or a bare git directory plus ``--rev``), ideally at
the tag of the installed torchrl::

    python scripts/torchrl_tests/run_ppo_tests.py --rl-src ~/src/rl --horizon none
    python scripts/torchrl_tests/run_ppo_tests.py --rl-src rl.git --rev v0.14.1 --horizon 1 -- -x

Prints ``exercised: N passed, M failed, K skipped`` and the failing test ids; the exit
status is pytest's. ``tests/objectives/test_torchrl_ppo_suite.py`` runs it when
``TORCHRL_SRC`` is set.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FILES = {
    "conftest.py": "test/conftest.py",
    "objectives/conftest.py": "test/objectives/conftest.py",
    "objectives/_objectives_common.py": "test/objectives/_objectives_common.py",
    "objectives/test_ppo.py": "test/objectives/test_ppo.py",
}
IMPORT_RE = re.compile(r"^from torchrl\.objectives import (?P<names>[^\n(]*\bClipPPOLoss\b[^\n]*)$", re.M)

STAND_IN = '''"""ClipPPOLoss as the run under test sees it (written by run_ppo_tests.py)."""
import os

from torchrl.objectives import ClipPPOLoss as _TorchRLClipPPOLoss

from torchrl_chunk.objectives import ChunkClipPPOLoss

_HORIZON = os.environ["DROPIN_HORIZON"]
_REFERENCE = _HORIZON == "reference"
INSTANCES = [0]


if _REFERENCE:

    class ClipPPOLoss(_TorchRLClipPPOLoss):
        def __init__(self, *args, **kwargs):
            INSTANCES[0] += 1
            super().__init__(*args, **kwargs)

else:

    class ClipPPOLoss(ChunkClipPPOLoss):
        """ChunkClipPPOLoss with TorchRL's defaults where the paper's differ."""

        def __init__(self, actor_network=None, critic_network=None, *, clip_epsilon=0.2,
                     clip_value=None, loss_critic_type="smooth_l1", critic_coeff=None,
                     entropy_coeff=None, **kwargs):
            INSTANCES[0] += 1
            super().__init__(
                actor_network, critic_network,
                chunk_size=None if _HORIZON == "none" else int(_HORIZON),
                clip_epsilon=clip_epsilon, clip_value=clip_value,
                loss_critic_type=loss_critic_type, critic_coeff=critic_coeff,
                entropy_coeff=entropy_coeff, **kwargs,
            )
'''

PLUGIN = '''"""Deselects other losses' parametrisations; records which tests built the stand-in."""
import pytest

import _chunk_dropin

RESULTS = {}


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        cls = getattr(getattr(item, "callspec", None), "params", {}).get("loss_class")
        (drop if cls is not None and cls is not _chunk_dropin.ClipPPOLoss else keep).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = _chunk_dropin.INSTANCES[0]
    RESULTS[item.nodeid] = ["passed", False]
    yield
    RESULTS[item.nodeid][1] = _chunk_dropin.INSTANCES[0] > before


def pytest_runtest_logreport(report):
    if report.failed:
        RESULTS.setdefault(report.nodeid, ["passed", False])[0] = "failed"
    elif report.skipped and RESULTS.get(report.nodeid, ["passed"])[0] == "passed":
        RESULTS.setdefault(report.nodeid, ["passed", False])[0] = "skipped"


def pytest_terminal_summary(terminalreporter):
    for used in (True, False):
        rows = [(n, o) for n, (o, u) in RESULTS.items() if u is used]
        counts = {o: sum(1 for _, x in rows if x == o) for o in ("passed", "failed", "skipped")}
        label = "exercised" if used else "not exercising the stand-in"
        terminalreporter.write_line(
            f"{label}: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
        )
        for nodeid, outcome in rows:
            if outcome == "failed":
                terminalreporter.write_line(f"  FAILED {nodeid}")
'''


def read_source(src: Path, rev: str | None, path: str) -> str:
    if rev is None and (src / path).exists():
        return (src / path).read_text()
    out = subprocess.run(
        ["git", "--git-dir", str(src if (src / "HEAD").exists() else src / ".git"), "show",
         f"{rev or 'HEAD'}:{path}"],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.exit(f"error: cannot read {path} at {rev or 'HEAD'} from {src}: {out.stderr.strip()}. "
                 "Pass --rl-src a pytorch/rl checkout (work tree or git dir) and --rev a tag.")
    return out.stdout


def prepare(workdir: Path, src: Path, rev: str | None) -> None:
    for dest, path in FILES.items():
        text = read_source(src, rev, path)
        if dest.endswith("test_ppo.py"):
            match = IMPORT_RE.search(text)
            if match is None:
                sys.exit("error: test_ppo.py no longer imports ClipPPOLoss on one line from "
                         "torchrl.objectives; update IMPORT_RE in this script.")
            names = [n.strip() for n in match["names"].split(",") if n.strip() != "ClipPPOLoss"]
            text = (text[: match.start()] + f"from torchrl.objectives import {', '.join(names)}\n"
                    "from _chunk_dropin import ClipPPOLoss" + text[match.end():])
        (workdir / dest).parent.mkdir(parents=True, exist_ok=True)
        (workdir / dest).write_text(text)
    (workdir / "objectives" / "_chunk_dropin.py").write_text(STAND_IN)
    (workdir / "objectives" / "_dropin_plugin.py").write_text(PLUGIN)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rl-src", type=Path, required=True, help="pytorch/rl work tree or git dir")
    parser.add_argument("--rev", default=None, help="git revision (tag) to read the tests from")
    parser.add_argument("--horizon", choices=["none", "1"], default="none")
    parser.add_argument("--reference", action="store_true", help="run TorchRL's ClipPPOLoss instead")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="torchrl_ppo_tests_"))
    try:
        prepare(workdir, args.rl_src.expanduser(), args.rev)
        env = dict(os.environ, DROPIN_HORIZON="reference" if args.reference else args.horizon)
        env["PYTHONPATH"] = os.pathsep.join([str(workdir / "objectives"), env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "pytest", "objectives/test_ppo.py", "-q", "-p", "no:cacheprovider",
               "-p", "_dropin_plugin", "-o", "addopts=", "--rootdir", str(workdir),
               "-k", "TestPPO or test_ppo_ess", "--tb=line", *args.pytest_args]
        return subprocess.run(cmd, cwd=workdir, env=env).returncode
    finally:
        if args.keep:
            print(f"scratch folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
