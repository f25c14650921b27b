"""A stage that several jobs compute identically, computed once per run and loaded by the others.

Table I's columns start from the same policy: the SFT-10 job, Ours and PPO alone all clone the
same 10 expert demos with the same seeds and settings first, so their post-SFT weights are
equal bit for bit. Recomputing them is 20-40 % of a post-training job on 2 CPU cores. The
first job to finish the stage saves what the stage leaves behind -- module weights, torch's
random state (CPU and CUDA) and any sampling generators -- under a key of every setting it
depends on; a later job with the same key loads it and goes on as if it had computed it.

The key is a hash of the settings minus those listed as not affecting the stage, so a setting
added later counts by default (a wrong "independent" entry is the only way to share wrongly).
Files are written atomically (a temporary file, then ``os.replace``): jobs running side by side
may write the same stage twice, identically. A file that does not load is reported and the
stage is computed again. Hand-written: TorchRL's trainers and checkpointing have no notion of
a stage shared between runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from torchrl_chunk._io import atomic_torch_save

__all__ = ["load_stage", "save_stage", "settings_key"]


def settings_key(settings: Mapping, independent: Iterable[str] = ()) -> str:
    """A hex digest of ``settings`` (nested mappings of JSON values) without the dotted keys in
    ``independent``; equal digests mean equal remaining settings.

    >>> settings_key({"a": 1, "b": {"c": 2, "d": 3}}, ["b.d"]) == settings_key({"a": 1, "b": {"c": 2}})
    True
    """
    def drop(node, prefix: str):
        if not isinstance(node, Mapping):
            return node
        out = {}
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path not in skip:
                out[str(key)] = drop(value, path + ".")
        return out

    skip = set(independent)
    text = json.dumps(drop(settings, ""), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def save_stage(path: Path, modules: Mapping[str, torch.nn.Module], generators: Mapping[str, torch.Generator] = (),
               info: Mapping | None = None) -> None:
    """Save the ``state_dict`` of each module, each generator's state, torch's random state
    (CPU, and CUDA where initialised) and ``info``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {
        "modules": {name: m.state_dict() for name, m in modules.items()},
        "generators": {name: g.get_state() for name, g in dict(generators).items()},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized()
        else None,
        "info": dict(info or {}),
    }
    atomic_torch_save(blob, path)


def load_stage(path: Path, modules: Mapping[str, torch.nn.Module],
               generators: Mapping[str, torch.Generator] = ()) -> dict | None:
    """Load a stage saved by :func:`save_stage` into ``modules`` and ``generators`` and restore
    torch's random state; its ``info``, or ``None`` when there is no file (or, with a line on
    stderr, when it does not load: the caller computes the stage again)."""
    path = Path(path)
    if not path.exists():
        return None
    before = {name: copy.deepcopy(m.state_dict()) for name, m in modules.items()}
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
        states = blob["modules"]
        if set(states) != set(modules) or set(blob["generators"]) != set(dict(generators)):
            raise KeyError(f"it holds {sorted(states)} / {sorted(blob['generators'])}")
        for name, module in modules.items():
            module.load_state_dict(states[name])
    except Exception as err:  # noqa: BLE001 - any unreadable file: the stage is computed again
        for name, module in modules.items():  # as before the attempt, also after a partial load
            module.load_state_dict(before[name])
        print(f"warning: {path} does not load ({type(err).__name__}: {' '.join(str(err).split())[:200]}); "
              "computing the stage again", file=sys.stderr)
        return None
    for name, gen in dict(generators).items():
        gen.set_state(blob["generators"][name])
    torch.set_rng_state(blob["torch_rng"])
    if blob["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(blob["cuda_rng"])
    return blob["info"]
