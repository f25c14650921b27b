"""The TorchRL versions the losses were tested with, checked when they are imported."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version

#: ``[low, high)``: the releases whose ``ClipPPOLoss`` internals ``ChunkClipPPOLoss`` was tested on
#: (its own tests and TorchRL's ``test_ppo.py``, docs/guide.md).
TESTED_TORCHRL = ((0, 14, 1), (0, 15, 0))


def _release(text: str) -> tuple[int, ...]:
    """``"0.14.3rc1+cu128"`` -> ``(0, 14, 3)``."""
    numbers = [int(n) for n in re.findall(r"\d+", text.split("+")[0])[:3]]
    return tuple(numbers + [0] * (3 - len(numbers)))


def check_torchrl(installed: str | None = None) -> None:
    """Raise ``ImportError`` naming the fix when TorchRL is outside :data:`TESTED_TORCHRL`."""
    if installed is None:
        try:
            installed = version("torchrl")
        except PackageNotFoundError:  # a source checkout on sys.path
            import torchrl

            installed = torchrl.__version__
    low, high = TESTED_TORCHRL
    if not low <= _release(installed) < high:
        want = f">={'.'.join(map(str, low))},<{'.'.join(map(str, high))}"
        raise ImportError(
            f"torchrl_chunk's losses were tested with torchrl{want} and found torchrl {installed}: "
            f"ChunkClipPPOLoss overrides private ClipPPOLoss methods whose signatures change between "
            f"releases. Install 'torchrl{want}' (pip install 'torchrl{want}')."
        )
