"""Read official Octo checkpoint directories into :class:`OctoTransformer`.

An official checkpoint directory (spec 2.1) holds ``config.json``,
``dataset_statistics.json``, ``example_batch.msgpack`` and ``<step>/default/checkpoint``
(the Flax ``params`` tree as one msgpack blob). :func:`load_octo_checkpoint` reads it with
``msgpack`` + ``numpy`` only (no ``octo``, JAX or Flax), checks the architecture in
``config.json`` (:mod:`.config_json`), and maps every policy leaf onto the torch module
with the correspondence table of :mod:`.flax_layout`. ``heads_action/*`` (the diffusion
head) is skipped -- the RL heads replace it -- and the frozen T5 encoder
(``octo_transformer/task_tokenizers_language/hf_model/*``) is converted to HuggingFace
``T5EncoderModel`` names and returned separately (see :mod:`.language`).

Every way the files can be wrong (missing, truncated, not JSON/msgpack, another tree,
other shapes, NaN/inf leaves) ends in a one-line :class:`OctoCheckpointError` that names
the file and the fix. Our own ``torch.save`` format is in :mod:`.torch_checkpoint`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchrl_chunk.modules.octo.config import OctoConfig
from torchrl_chunk.modules.octo.config_json import checkpoint_version, config_from_octo_json
from torchrl_chunk.modules.octo.errors import (
    OctoCheckpointError,
    OctoShapeMismatchError,
    OctoVersionMismatchError,
    examples,
)
from torchrl_chunk.modules.octo.flax_layout import (
    BACKBONE_PREFIX,
    T5_PREFIX,
    leaf_table,
    t5_flax_to_torch,
)
from torchrl_chunk.modules.octo.model import OctoTransformer
from torchrl_chunk.modules.octo.serialization import (
    PLACEHOLDER_PREFIX,
    flatten_tree,
    read_msgpack_file,
)

HEADS_PREFIX = "heads_"
_LAYOUT = (
    "expected <dir>/config.json, <dir>/dataset_statistics.json and "
    "<dir>/<step>/default/checkpoint, e.g. a local copy of hf://rail-berkeley/octo-small-1.5"
)


# ---------------------------------------------------------------------------- report
@dataclass
class LoadReport:
    """What happened to every leaf of a checkpoint.

    Attributes:
        loaded: Flax paths copied into the torch module.
        missing: torch parameter names that no leaf filled (kept at their init).
        unexpected: Flax paths below ``octo_transformer/`` (T5 excluded) with no torch
            counterpart.
        skipped: ``{flax path: reason}`` for leaves deliberately not loaded (the
            diffusion head and anything outside the policy tree).
        t5: Flax paths of the T5 encoder, converted into the separate T5 state dict.
        checkpoint_policy_params: parameters of all non-T5 leaves in the checkpoint
            (27,042,060 for octo-small-1.5, diffusion head included).
        loaded_params: parameters copied into the module.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    t5: list[str] = field(default_factory=list)
    checkpoint_policy_params: int = 0
    loaded_params: int = 0
    t5_params: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def disagreement(self, source: Any) -> str:
        """One line: what is missing/unexpected, and the fix."""
        return (
            f"{source} does not match the module: {len(self.missing)} module parameters "
            f"missing from it ({examples(self.missing) or '-'}), {len(self.unexpected)} "
            f"unexpected leaves ({examples(self.unexpected) or '-'}); it was written for "
            "another architecture: build the module from its config (transformer=None / "
            "config=None) or pass strict=False to load the matching part."
        )

    def __str__(self) -> str:
        lines = [
            f"loaded {len(self.loaded)} leaves ({self.loaded_params:,} params) of "
            f"{self.checkpoint_policy_params:,} policy params in the checkpoint; "
            f"skipped {len(self.skipped)} leaves; T5 {len(self.t5)} leaves "
            f"({self.t5_params:,} params)",
            f"missing ({len(self.missing)}): {self.missing[:10]}"
            + (" ..." if len(self.missing) > 10 else ""),
            f"unexpected ({len(self.unexpected)}): {self.unexpected[:10]}"
            + (" ..." if len(self.unexpected) > 10 else ""),
        ]
        return "\n".join(lines)


@dataclass
class OctoCheckpoint:
    """Result of :func:`load_octo_checkpoint` / :func:`load_torch_checkpoint`.

    Attributes:
        transformer: the loaded backbone.
        config: its configuration.
        report: the :class:`LoadReport`.
        t5_state_dict: the frozen T5 encoder in ``transformers.T5EncoderModel`` names
            (empty if the checkpoint has none); build it with
            :func:`~torchrl_chunk.modules.octo.language.t5_encoder_from_state_dict`.
        dataset_statistics: contents of ``dataset_statistics.json`` (or ``{}``).
        step: the training step of the loaded weights (``None`` for torch files).
        raw_config: contents of ``config.json`` (or ``{}``).
    """

    transformer: OctoTransformer
    config: OctoConfig
    report: LoadReport
    t5_state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    dataset_statistics: dict[str, Any] = field(default_factory=dict)
    step: int | None = None
    raw_config: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- files
def _find_step_dir(root: Path, step: int | None) -> Path:
    steps = sorted((int(p.name), p) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
    if not steps:
        raise OctoCheckpointError(
            f"{root} has config.json but no step folder (an all-digit folder such as "
            "'300000' holding default/checkpoint). Download the whole checkpoint repository."
        )
    if step is None:
        return steps[-1][1]
    for s, p in steps:
        if s == step:
            return p
    raise OctoCheckpointError(f"{root} has no step {step}; available: {[s for s, _ in steps]}.")


def resolve_checkpoint_dir(path: str | Path, step: int | None = None) -> tuple[Path, Path]:
    """``(root dir with config.json, params file)`` for a checkpoint root, step folder,
    ``<step>/default`` folder or the ``checkpoint`` file itself."""
    p = Path(path).expanduser()
    if not p.exists():
        raise OctoCheckpointError(
            f"{p} does not exist; pass an official Octo checkpoint directory ({_LAYOUT}) or "
            "a .pt file from `python -m torchrl_chunk.modules.octo.convert checkpoint`."
        )
    candidates = [p, p.parent, p.parent.parent, p.parent.parent.parent]
    root = next((c for c in candidates if (c / "config.json").is_file()), None)
    if root is None:
        hint = (
            "; for a .pt file from the converter use load_torch_checkpoint()"
            if p.is_file() else ""
        )
        raise OctoCheckpointError(f"{p} is not an Octo checkpoint: no config.json there ({_LAYOUT}){hint}.")
    if p.is_file() and p.name == "checkpoint":
        return root, p
    if p != root and p.name.isdigit():
        step_dir = p
    elif p.name == "default" and p.parent.name.isdigit():
        return root, _params_file(p)
    else:
        step_dir = _find_step_dir(root, step)
    return root, _params_file(step_dir / "default")


def _params_file(default_dir: Path) -> Path:
    f = default_dir / "checkpoint"
    if not f.is_file():
        raise OctoCheckpointError(
            f"{default_dir} has no 'checkpoint' file (Orbax aggregate msgpack). The download "
            "may be incomplete: download the whole checkpoint repository again."
        )
    return f


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise OctoCheckpointError(
            f"{path} is not valid JSON ({err}); the download is incomplete or corrupt: "
            "download the checkpoint directory again."
        ) from err
    if not isinstance(data, dict):
        raise OctoCheckpointError(
            f"{path} holds a JSON {type(data).__name__}, not an object; download the "
            "checkpoint directory again."
        )
    return data


def read_octo_params(path: str | Path) -> dict[str, Any]:
    """Flat ``{flax path: np.ndarray}`` of a params file; refuses TensorStore placeholders."""
    tree = read_msgpack_file(path)
    if not isinstance(tree, Mapping) or not tree:
        raise OctoCheckpointError(
            f"{path} holds {'an empty tree' if isinstance(tree, Mapping) else type(tree).__name__}, "
            "not a Flax params tree; download the checkpoint again."
        )
    flat = flatten_tree(tree)
    holders = [k for k, v in flat.items() if isinstance(v, str) and v.startswith(PLACEHOLDER_PREFIX)]
    if holders:
        raise OctoCheckpointError(
            f"{path} stores {len(holders)} arrays outside the msgpack file (Orbax "
            f"placeholders, e.g. {holders[0]!r}); this reader needs an aggregated checkpoint. "
            "Re-save it with orbax: PyTreeCheckpointer().restore(dir) then "
            "write_msgpack_file()."
        )
    bad = [k for k, v in flat.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise OctoCheckpointError(
            f"{path}: non-array leaves {bad[:5]}; not an Octo params tree (download it again)."
        )
    return flat


# ---------------------------------------------------------------------------- loading
def load_octo_checkpoint(
    path: str | Path,
    transformer: OctoTransformer | None = None,
    *,
    step: int | None = None,
    strict: bool = True,
    expected_version: str | None = None,
) -> OctoCheckpoint:
    """Load an official Octo checkpoint directory (no ``octo``/JAX needed).

    Args:
        path: checkpoint root (with ``config.json``), a step folder, or the params file.
        transformer: module to load into; ``None`` builds one from ``config.json``. Its
            config must describe the same version (1.0 vs 1.5) as the checkpoint.
        step: which step folder (default: the largest).
        strict: raise when any backbone parameter is missing or any backbone leaf is
            unexpected (the report lists them either way).
        expected_version: ``"1.0"`` or ``"1.5"`` to refuse other checkpoints.

    Raises:
        OctoCheckpointError: not a checkpoint, unreadable/corrupt files, unsupported
            architecture, non-finite leaves.
        OctoVersionMismatchError: 1.0 vs 1.5 mismatch.
        OctoShapeMismatchError: a leaf's shape does not fit (leaf and both shapes named).
    """
    root, params_file = resolve_checkpoint_dir(path, step)
    raw = _read_json(root / "config.json")
    example = None
    if (root / "example_batch.msgpack").is_file():
        example = read_msgpack_file(root / "example_batch.msgpack")
    try:
        ckpt_config = config_from_octo_json(raw, example)
    except OctoCheckpointError as err:
        raise type(err)(f"{root}: {err}") from err
    version = checkpoint_version(raw)
    if expected_version is not None and version != expected_version:
        raise OctoVersionMismatchError(
            f"{root} is an Octo {version} checkpoint but {expected_version} was expected."
        )
    if transformer is None:
        transformer = OctoTransformer(ckpt_config)
    elif transformer.config.version != version:
        raise OctoVersionMismatchError(
            f"{root} is an Octo {version} checkpoint (repeat_task_tokens="
            f"{ckpt_config.repeat_task_tokens}, use_correct_attention="
            f"{ckpt_config.use_correct_attention}) but the module is configured as Octo "
            f"{transformer.config.version}. Build it with OctoConfig.octo_small_"
            f"{version.replace('.', '_')}() or pass transformer=None to use the checkpoint's "
            "config."
        )
    flat = read_octo_params(params_file)
    stats = {}
    if (root / "dataset_statistics.json").is_file():
        stats = _read_json(root / "dataset_statistics.json")
    report, t5 = load_flax_params(transformer, flat, strict=strict, source=params_file)
    step_value = int(params_file.parent.parent.name) if params_file.parent.parent.name.isdigit() else None
    return OctoCheckpoint(
        transformer=transformer,
        config=transformer.config,
        report=report,
        t5_state_dict=t5,
        dataset_statistics=stats,
        step=step_value,
        raw_config=raw,
    )


def load_flax_params(
    transformer: OctoTransformer,
    flat: Mapping[str, np.ndarray],
    *,
    strict: bool = True,
    source: Any = "the checkpoint",
) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """Copy flat Flax leaves into ``transformer``; returns the report and T5 state dict.

    ``source`` (a path) names the leaves' origin in error messages.
    """
    report = LoadReport()
    rows = {row.flax_path: row for row in leaf_table(transformer, BACKBONE_PREFIX)}
    targets = dict(transformer.named_parameters())
    assigned: dict[str, np.ndarray] = {}
    mismatches, non_finite = [], []
    t5: dict[str, torch.Tensor] = {}
    for path, array in flat.items():
        size = int(np.prod(array.shape))
        if path.startswith(T5_PREFIX):
            name, arr = t5_flax_to_torch(path[len(T5_PREFIX) :], array)
            t5[name] = torch.from_numpy(np.array(arr, dtype=np.float32))
            report.t5.append(path)
            report.t5_params += size
            continue
        report.checkpoint_policy_params += size
        if path.startswith(HEADS_PREFIX):
            report.skipped[path] = "Octo action head (replaced by the RL chunk heads)"
            continue
        if not path.startswith(BACKBONE_PREFIX):
            report.skipped[path] = "outside the octo_transformer policy tree"
            continue
        row = rows.get(path)
        if row is None:
            report.unexpected.append(path)
            continue
        want = tuple(targets[row.torch_name].shape)
        try:
            arr = row.to_torch(array)
        except ValueError:  # wrong rank for this row's permutation/reshape
            arr = None
        if arr is None or arr.shape != want:
            got = "no torch layout" if arr is None else f"-> {tuple(arr.shape)} in torch layout"
            mismatches.append(
                f"{path}: checkpoint {tuple(array.shape)} ({got}) vs module {row.torch_name} {want}"
            )
            continue
        if not np.isfinite(arr).all():
            non_finite.append(path)
        assigned[row.torch_name] = arr
        report.loaded.append(path)
        report.loaded_params += size
    if mismatches:
        raise OctoShapeMismatchError(
            f"{len(mismatches)} leaves of {source} do not fit the module: {examples(mismatches)}; "
            "build the module from the checkpoint's config (transformer=None) or fix the config "
            "(image size, embed_dim, layers)."
        )
    if non_finite:
        raise OctoCheckpointError(
            f"{len(non_finite)} leaves of {source} hold NaN or inf ({examples(non_finite)}); "
            "the file is corrupt: download or convert it again."
        )
    report.missing = [n for n in targets if n not in assigned]
    if strict and not report.ok:
        raise OctoCheckpointError(report.disagreement(source))
    with torch.no_grad():
        for name, arr in assigned.items():
            targets[name].copy_(torch.from_numpy(np.require(arr, requirements=["C", "W"])))
    return report, t5


__all__ = [
    "LoadReport",
    "OctoCheckpoint",
    "OctoCheckpointError",
    "OctoShapeMismatchError",
    "OctoVersionMismatchError",
    "load_flax_params",
    "load_octo_checkpoint",
    "read_octo_params",
    "resolve_checkpoint_dir",
]
