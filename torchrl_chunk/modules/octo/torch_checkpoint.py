"""Our own Octo checkpoint format: one ``torch.save`` file (no msgpack needed to read it).

``python -m torchrl_chunk.modules.octo.convert checkpoint SRC DST`` writes it from an
official directory. The file holds ``{"format", "format_version", "config", "state_dict",
"t5_state_dict", "dataset_statistics"}``; :func:`load_torch_checkpoint` checks each part and
ends every problem (not a torch file, truncated, another format, missing parts, other
shapes, NaN/inf) in a one-line :class:`OctoCheckpointError` naming the file and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from torchrl_chunk.modules.octo.checkpoint import LoadReport, OctoCheckpoint
from torchrl_chunk.modules.octo.config import OctoConfig
from torchrl_chunk.modules.octo.errors import (
    OctoCheckpointError,
    OctoShapeMismatchError,
    OctoVersionMismatchError,
    examples,
)
from torchrl_chunk.modules.octo.model import OctoTransformer

TORCH_FORMAT = "torchrl_chunk.octo"
TORCH_FORMAT_VERSION = 1
_RECONVERT = "re-run `python -m torchrl_chunk.modules.octo.convert checkpoint SRC {path}`"


def save_torch_checkpoint(
    path: str | Path,
    transformer: OctoTransformer,
    *,
    t5_state_dict: Mapping[str, torch.Tensor] | None = None,
    dataset_statistics: Mapping[str, Any] | None = None,
) -> None:
    """Save the backbone (and optionally T5) as one ``torch.save`` file.

    Load with :func:`load_torch_checkpoint`. T5 adds ~440 MB; leave it out if you cache
    instruction embeddings.
    """
    torch.save(
        {
            "format": TORCH_FORMAT,
            "format_version": TORCH_FORMAT_VERSION,
            "config": transformer.config.to_dict(),
            "state_dict": transformer.state_dict(),
            "t5_state_dict": dict(t5_state_dict or {}),
            "dataset_statistics": dict(dataset_statistics or {}),
        },
        path,
    )


def torch_load(p: Path, fix: str, error: type[Exception] = OctoCheckpointError) -> Any:
    """``torch.load(p, weights_only=True)`` on CPU; any failure (a text file gives
    ``KeyError: 105``, a truncated one a zip error) becomes one line naming ``p`` and ``fix``."""
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many types for a foreign/truncated file
        why = (str(err).strip().splitlines() or [""])[0][:160]
        raise error(
            f"{p} cannot be read by torch.load ({type(err).__name__}: {why}): it is not a "
            f"torch file, or it is truncated; {fix}."
        ) from err


def _read_blob(p: Path) -> dict[str, Any]:
    """The file's dict, with its format checked; one-line errors otherwise."""
    fix = _RECONVERT.format(path=p)
    if p.is_dir():
        raise OctoCheckpointError(
            f"{p} is a directory, not a torch Octo checkpoint file; for an official checkpoint "
            "directory use load_octo_checkpoint(), or pass the .pt file written by "
            "`python -m torchrl_chunk.modules.octo.convert checkpoint`."
        )
    if not p.is_file():
        raise OctoCheckpointError(f"{p} does not exist; write it with: {fix[len('re-run '):]}.")
    blob = torch_load(p, fix)
    if not isinstance(blob, dict) or blob.get("format") != TORCH_FORMAT:
        raise OctoCheckpointError(
            f"{p} is not a torchrl_chunk Octo checkpoint (no format={TORCH_FORMAT!r}); for an "
            f"official checkpoint directory use load_octo_checkpoint(), else {fix}."
        )
    version = blob.get("format_version")
    if not isinstance(version, int) or version > TORCH_FORMAT_VERSION:
        raise OctoCheckpointError(
            f"{p} has format_version {version!r}; this torchrl_chunk reads up to "
            f"{TORCH_FORMAT_VERSION}: upgrade torchrl_chunk or {fix}."
        )
    for key, kind in (("config", Mapping), ("state_dict", Mapping)):
        if not isinstance(blob.get(key), kind):
            raise OctoCheckpointError(f"{p} lacks a valid {key!r} entry (incomplete file); {fix}.")
    bad = [k for k, v in blob["state_dict"].items() if not isinstance(v, torch.Tensor)]
    bad += [f"t5:{k}" for k, v in (blob.get("t5_state_dict") or {}).items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise OctoCheckpointError(f"{p}: entries that are not tensors ({examples(bad)}); {fix}.")
    return blob


def load_torch_checkpoint(
    path: str | Path, transformer: OctoTransformer | None = None, *, strict: bool = True
) -> OctoCheckpoint:
    """Load a file written by :func:`save_torch_checkpoint`.

    Raises:
        OctoCheckpointError: not such a file (missing, a directory, unreadable, another
            format), incomplete, NaN/inf weights, or (``strict``) missing/unexpected keys.
        OctoVersionMismatchError: the file holds Octo 1.0 and the module is 1.5 (or the
            reverse).
        OctoShapeMismatchError: a tensor does not fit (key and both shapes named).
    """
    p = Path(path).expanduser()
    blob = _read_blob(p)
    try:
        config = OctoConfig.from_dict(blob["config"])
    except (KeyError, TypeError, ValueError) as err:
        raise OctoCheckpointError(
            f"{p}: its config is invalid ({type(err).__name__}: {err}); {_RECONVERT.format(path=p)}."
        ) from err
    if transformer is None:
        transformer = OctoTransformer(config)
    elif transformer.config.version != config.version:
        raise OctoVersionMismatchError(
            f"{p} holds an Octo {config.version} backbone but the module is Octo "
            f"{transformer.config.version}; build it with OctoConfig.octo_small_"
            f"{config.version.replace('.', '_')}() or pass transformer=None."
        )
    state = blob["state_dict"]
    own = transformer.state_dict()
    bad = [
        f"{k}: file {tuple(v.shape)} vs module {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise OctoShapeMismatchError(
            f"{len(bad)} tensors of {p} do not fit the module: {examples(bad)}; build the "
            "module from the file's config (transformer=None) or fix the config."
        )
    non_finite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if non_finite:
        raise OctoCheckpointError(
            f"{len(non_finite)} tensors of {p} hold NaN or inf ({examples(non_finite)}); the file "
            f"is corrupt: {_RECONVERT.format(path=p)}."
        )
    report = LoadReport(
        loaded=[k for k in state if k in own],
        missing=[k for k in own if k not in state],
        unexpected=[k for k in state if k not in own],
        loaded_params=sum(v.numel() for k, v in state.items() if k in own),
        checkpoint_policy_params=sum(v.numel() for v in state.values()),
    )
    if strict and not report.ok:
        raise OctoCheckpointError(report.disagreement(p))
    transformer.load_state_dict(state, strict=strict)
    t5 = blob.get("t5_state_dict") or {}
    report.t5_params = sum(v.numel() for v in t5.values())
    return OctoCheckpoint(
        transformer=transformer,
        config=transformer.config,
        report=report,
        t5_state_dict=dict(t5),
        dataset_statistics=blob.get("dataset_statistics") or {},
    )


__all__ = ["TORCH_FORMAT", "TORCH_FORMAT_VERSION", "load_torch_checkpoint", "save_torch_checkpoint"]
