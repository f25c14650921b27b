"""Writing a file whole or not at all."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import torch


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``: a reader sees the
    old file or the new one, never a part. The temporary name is the writer's own (pid and a
    random tag), so several processes may write the same path at once; the last one wins whole."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["atomic_torch_save"]
