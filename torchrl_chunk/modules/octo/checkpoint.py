"""Read official Octo checkpoints into :class:`OctoTransformer`; save/load our own.

An official checkpoint directory (spec 2.1) holds ``config.json``,
``dataset_statistics.json``, ``example_batch.msgpack`` and ``<step>/default/checkpoint``
(the Flax ``params`` tree as one msgpack blob). :func:`load_octo_checkpoint` reads it with
``msgpack`` + ``numpy`` only (no ``octo``, JAX or Flax), checks the architecture in
``config.json``, and maps every policy leaf onto the torch module:

====================================  =================================================
Flax leaf                             torch tensor
====================================  =================================================
``.../kernel`` (kh, kw, in, out)      ``Conv2d.weight`` (out, in, kh, kw): permute (3,2,0,1)
``.../kernel`` (in, out)              ``Linear.weight`` (out, in): transpose
``.../{query,key,value}/kernel``      ``Linear.weight``: reshape (D, H*d) then transpose
``.../{query,key,value}/bias``        ``Linear.bias``: reshape (H*d,)
``.../out/kernel`` (H, d, D)          ``Linear.weight``: reshape (H*d, D) then transpose
``.../scale``                         ``LayerNorm``/``GroupNorm`` ``.weight``
``*_pos_embedding``, ``.../bias``     same shape
====================================  =================================================

The torch key is the Flax path below ``octo_transformer/`` with ``/`` -> ``.`` and
``kernel``/``scale`` -> ``weight``. ``heads_action/*`` (the diffusion head) is skipped --
the RL heads replace it -- and the frozen T5 encoder
(``octo_transformer/task_tokenizers_language/hf_model/*``) is converted to HuggingFace
``T5EncoderModel`` names and returned separately (see :mod:`.language`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchrl_chunk.modules.octo.config import T5_WIDTHS, ImageTokenizerConfig, OctoConfig
from torchrl_chunk.modules.octo.model import OctoTransformer
from torchrl_chunk.modules.octo.serialization import (
    PLACEHOLDER_PREFIX,
    flatten_tree,
    read_msgpack_file,
    unflatten_tree,
    write_msgpack_file,
)

BACKBONE_PREFIX = "octo_transformer/"
T5_PREFIX = "octo_transformer/task_tokenizers_language/hf_model/"
HEADS_PREFIX = "heads_"
TORCH_FORMAT = "torchrl_chunk.octo"
TORCH_FORMAT_VERSION = 1

_DEFAULT_IMAGE_SIZES = {"primary": 256, "wrist": 128}
_ATTN_IN = ("query", "key", "value")


class OctoCheckpointError(ValueError):
    """The path is not a usable Octo checkpoint (message says what is wrong and the fix)."""


class OctoVersionMismatchError(OctoCheckpointError):
    """An Octo 1.0 checkpoint was loaded as 1.5 (or the reverse)."""


class OctoShapeMismatchError(OctoCheckpointError):
    """Some checkpoint leaves do not fit the module's parameter shapes."""


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


# ---------------------------------------------------------------------------- names
def flax_to_torch_name(flax_path: str) -> str:
    """``octo_transformer/A/B/kernel`` -> ``A.B.weight`` (backbone leaves only)."""
    if not flax_path.startswith(BACKBONE_PREFIX):
        raise KeyError(f"{flax_path!r} is not below {BACKBONE_PREFIX!r}.")
    parts = flax_path[len(BACKBONE_PREFIX) :].split("/")
    if parts[-1] in ("kernel", "scale"):
        parts[-1] = "weight"
    return ".".join(parts)


def flax_to_torch_array(flax_path: str, array: np.ndarray) -> np.ndarray:
    """Apply the layout transform of the table in the module docstring."""
    parts = flax_path.split("/")
    leaf, parent = parts[-1], (parts[-2] if len(parts) > 1 else "")
    if leaf == "kernel":
        if array.ndim == 4:
            return array.transpose(3, 2, 0, 1)
        if array.ndim == 3 and parent in _ATTN_IN:
            return array.reshape(array.shape[0], -1).T
        if array.ndim == 3 and parent == "out":
            return array.reshape(-1, array.shape[-1]).T
        if array.ndim == 2:
            return array.T
    if leaf == "bias" and array.ndim == 2 and parent in _ATTN_IN:
        return array.reshape(-1)
    return array


def torch_to_flax_array(flax_path: str, array: np.ndarray, num_heads: int) -> np.ndarray:
    """Inverse of :func:`flax_to_torch_array` (exact: transposes and reshapes only)."""
    parts = flax_path.split("/")
    leaf, parent = parts[-1], (parts[-2] if len(parts) > 1 else "")
    if leaf == "kernel":
        if array.ndim == 4:
            return array.transpose(2, 3, 1, 0)
        if parent in _ATTN_IN:
            return array.T.reshape(array.shape[1], num_heads, -1)
        if parent == "out" and "MultiHeadDotProductAttention" in flax_path:
            return array.T.reshape(num_heads, -1, array.shape[0])
        return array.T
    if leaf == "bias" and parent in _ATTN_IN and "MultiHeadDotProductAttention" in flax_path:
        return array.reshape(num_heads, -1)
    return array


def torch_to_flax_name(torch_name: str, module: torch.nn.Module) -> str:
    """``A.B.weight`` -> ``octo_transformer/A/B/{kernel|scale}`` for an OctoTransformer."""
    parts = torch_name.split(".")
    if parts[-1] == "weight":
        owner = module.get_submodule(".".join(parts[:-1]))
        norm = isinstance(owner, (torch.nn.LayerNorm, torch.nn.GroupNorm))
        parts[-1] = "scale" if norm else "kernel"
    return BACKBONE_PREFIX + "/".join(parts)


def export_flax_params(transformer: OctoTransformer) -> dict[str, np.ndarray]:
    """The module's parameters as flat Flax paths and layouts (inverse of loading)."""
    heads = transformer.config.num_heads
    out = {}
    for name, param in transformer.named_parameters():
        path = torch_to_flax_name(name, transformer)
        out[path] = torch_to_flax_array(path, param.detach().cpu().numpy(), heads)
    return out


def t5_flax_to_torch(flax_path: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """A T5 leaf (relative to ``hf_model/``) -> ``(T5EncoderModel key, array)``."""
    parts = flax_path.split("/")
    if parts[-1] == "kernel":
        parts[-1] = "weight"
        array = array.T
    elif parts[-1] == "embedding":
        parts[-1] = "weight"
    return ".".join(parts), array


# ---------------------------------------------------------------------------- config
def _spec_name(spec: Any) -> str:
    if isinstance(spec, Mapping):
        return str(spec.get("name", ""))
    return str(spec)


def _spec_kwargs(spec: Any) -> dict[str, Any]:
    return dict(spec.get("kwargs") or {}) if isinstance(spec, Mapping) else {}


def config_from_octo_json(
    raw: Mapping[str, Any], example_batch: Mapping[str, Any] | None = None
) -> OctoConfig:
    """Build an :class:`OctoConfig` from an official ``config.json`` (spec 1.1, 2.6).

    Image sizes are not in ``config.json``; they come from ``example_batch.msgpack``
    (``observation/image_{camera}``) when given, else 256 (primary) / 128 (wrist).

    Raises:
        OctoCheckpointError: for a config that is not an Octo model config or uses
            components this port does not implement (named in the message).
    """
    model = raw.get("model")
    if not isinstance(model, Mapping):
        raise OctoCheckpointError(
            "config.json has no 'model' section; this does not look like an Octo "
            "checkpoint config (expected keys model.token_embedding_size, "
            "model.transformer_kwargs, model.observation_tokenizers, ...)."
        )
    try:
        tkw = model["transformer_kwargs"]
        embed_dim = int(model["token_embedding_size"])
    except KeyError as err:
        raise OctoCheckpointError(f"config.json model section lacks {err}.") from err
    readouts = dict(model.get("readouts") or {})
    if set(readouts) != {"action"}:
        raise OctoCheckpointError(
            f"config.json readouts {readouts} not supported: this port expects exactly one "
            "readout group, 'action'."
        )
    obs_images = (example_batch or {}).get("observation", {})
    cameras = []
    for name, spec in (model.get("observation_tokenizers") or {}).items():
        if _spec_name(spec) != "ImageTokenizer":
            raise OctoCheckpointError(
                f"observation tokenizer {name!r} is a {_spec_name(spec)!r}; only "
                "ImageTokenizer (SmallStem) is ported. Remove it from the config or extend "
                "torchrl_chunk.modules.octo.tokenizers."
            )
        kw = _spec_kwargs(spec)
        enc = kw.get("encoder", {})
        enc_name = _spec_name(enc)
        enc_kw = _spec_kwargs(enc)
        if enc_name == "SmallStem16":
            patch = 16
        elif enc_name == "SmallStem":
            patch = int(enc_kw.get("patch_size", 32))
        else:
            raise OctoCheckpointError(
                f"image tokenizer {name!r} uses encoder {enc_name!r}; only SmallStem16 / "
                "SmallStem are ported."
            )
        for unsupported in ("use_film", "use_token_learner"):
            if kw.get(unsupported) or enc_kw.get(unsupported):
                raise OctoCheckpointError(f"image tokenizer {name!r}: {unsupported} is not ported.")
        keys = kw.get("obs_stack_keys") or [f"image_{name}"]
        size = None
        img = obs_images.get(keys[0]) if len(keys) == 1 else None
        if isinstance(img, np.ndarray) and img.ndim >= 3:
            size = int(img.shape[-2])
        if size is None:
            if name not in _DEFAULT_IMAGE_SIZES:
                raise OctoCheckpointError(
                    f"cannot tell the image size of tokenizer {name!r}: no "
                    "example_batch.msgpack entry and no default for that camera."
                )
            size = _DEFAULT_IMAGE_SIZES[name]
        cameras.append(
            ImageTokenizerConfig(
                name=name,
                image_size=size,
                features=tuple(enc_kw.get("features", (32, 96, 192, 384))),
                num_features=int(enc_kw.get("num_features", 512)),
                patch_size=patch,
            )
        )
    lang = (model.get("task_tokenizers") or {}).get("language")
    if lang is None:
        raise OctoCheckpointError(
            "config.json has no task_tokenizers.language; goal-image-only Octo models are "
            "not supported by this port."
        )
    enc = _spec_kwargs(lang).get("encoder", "t5-base")
    if enc not in T5_WIDTHS:
        raise OctoCheckpointError(f"language encoder {enc!r} unknown; expected one of {list(T5_WIDTHS)}.")
    text = raw.get("text_processor") or {}
    max_len = int(_spec_kwargs(text).get("tokenizer_kwargs", {}).get("max_length", 16))
    head = _spec_kwargs((model.get("heads") or {}).get("action", {}))
    horizon = head.get("action_horizon", head.get("pred_horizon", 4))
    traj = ((raw.get("dataset_kwargs") or {}).get("traj_transform_kwargs") or {})
    window = int(raw.get("window_size", traj.get("window_size", 2)))
    max_horizon = int(model.get("max_horizon", 10))
    return OctoConfig(
        embed_dim=embed_dim,
        num_layers=int(tkw["num_layers"]),
        num_heads=int(tkw["num_attention_heads"]),
        mlp_dim=int(tkw["mlp_dim"]),
        max_horizon=max_horizon,
        window_size=min(window, max_horizon),
        image_tokenizers=tuple(cameras),
        language_dim=T5_WIDTHS[enc],
        language_tokens=max_len,
        language_encoder=enc,
        num_readout_tokens=int(readouts["action"]),
        repeat_task_tokens=bool(model.get("repeat_task_tokens", False)),
        use_correct_attention=bool(model.get("use_correct_attention", False)),
        action_horizon=int(horizon),
        action_dim=int(head.get("action_dim", 7)),
    )


def _module_spec(module: str, name: str, **kwargs: Any) -> dict[str, Any]:
    return {"module": module, "name": name, "args": [], "kwargs": kwargs}


def octo_config_json(config: OctoConfig) -> dict[str, Any]:
    """The official-format ``config.json`` content for ``config`` (model section, window,
    text processor): what Octo would write for this architecture."""
    tokenizers = {}
    for tok in config.image_tokenizers:
        enc_kw: dict[str, Any] = {}
        if tok.features != (32, 96, 192, 384):
            enc_kw["features"] = list(tok.features)
        if tok.num_features != 512:
            enc_kw["num_features"] = tok.num_features
        if tok.patch_size == 16:
            enc = _module_spec("octo.model.components.vit_encoders", "SmallStem16", **enc_kw)
        else:
            enc = _module_spec(
                "octo.model.components.vit_encoders", "SmallStem", patch_size=tok.patch_size, **enc_kw
            )
        tokenizers[tok.name] = _module_spec(
            "octo.model.components.tokenizers",
            "ImageTokenizer",
            obs_stack_keys=[f"image_{tok.name}"],
            task_stack_keys=[f"image_{tok.name}"],
            encoder=enc,
        )
    model: dict[str, Any] = {
        "observation_tokenizers": tokenizers,
        "task_tokenizers": {
            "language": _module_spec(
                "octo.model.components.tokenizers",
                "LanguageTokenizer",
                encoder=config.language_encoder,
                finetune_encoder=False,
            )
        },
        "heads": {
            "action": _module_spec(
                "octo.model.components.action_heads",
                "DiffusionActionHead",
                readout_key="readout_action",
                use_map=False,
                action_dim=config.action_dim,
                n_diffusion_samples=1,
                dropout_rate=0.0,
                **(
                    {"action_horizon": config.action_horizon}
                    if config.version != "1.0"
                    else {"pred_horizon": config.action_horizon}
                ),
            )
        },
        "readouts": {"action": config.num_readout_tokens},
        "token_embedding_size": config.embed_dim,
        "transformer_kwargs": {
            "mlp_dim": config.mlp_dim,
            "num_layers": config.num_layers,
            "num_attention_heads": config.num_heads,
            "dropout_rate": 0.0,
            "attention_dropout_rate": 0.0,
            "add_position_embedding": False,
        },
        "max_horizon": config.max_horizon,
    }
    if config.repeat_task_tokens:
        model["repeat_task_tokens"] = True
    if config.use_correct_attention:
        model["use_correct_attention"] = True
    return {
        "model": model,
        "window_size": config.window_size,
        "text_processor": _module_spec(
            "octo.components.text_processing",
            "HFTokenizer",
            tokenizer_name=config.language_encoder,
            encode_with_model=False,
            tokenizer_kwargs={
                "max_length": config.language_tokens,
                "padding": "max_length",
                "truncation": True,
                "return_tensors": "np",
            },
        ),
    }


# ---------------------------------------------------------------------------- files
def _find_step_dir(root: Path, step: int | None) -> Path:
    steps = sorted(
        (int(p.name), p) for p in root.iterdir() if p.is_dir() and p.name.isdigit()
    )
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
        raise OctoCheckpointError(f"{p} does not exist; pass an Octo checkpoint directory.")
    candidates = [p, p.parent, p.parent.parent, p.parent.parent.parent]
    root = next((c for c in candidates if (c / "config.json").is_file()), None)
    if root is None:
        raise OctoCheckpointError(
            f"{p} is not an Octo checkpoint: no config.json there (expected "
            "<dir>/config.json, <dir>/dataset_statistics.json and <dir>/<step>/default/"
            "checkpoint, e.g. a local copy of hf://rail-berkeley/octo-small-1.5)."
        )
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
            "may be incomplete."
        )
    return f


def read_octo_params(path: str | Path) -> dict[str, Any]:
    """Flat ``{flax path: np.ndarray}`` of a params file; refuses TensorStore placeholders."""
    flat = flatten_tree(read_msgpack_file(path))
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
        raise OctoCheckpointError(f"{path}: non-array leaves {bad[:5]}; not an Octo params tree.")
    return flat


def checkpoint_version(raw_config: Mapping[str, Any]) -> str:
    """``"1.5"`` or ``"1.0"`` from an official ``config.json``."""
    model = raw_config.get("model", {})
    return "1.5" if model.get("use_correct_attention") and model.get("repeat_task_tokens") else "1.0"


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
        OctoCheckpointError: not a checkpoint / unsupported architecture.
        OctoVersionMismatchError: 1.0 vs 1.5 mismatch.
        OctoShapeMismatchError: a leaf's shape does not fit (leaf and both shapes named).
    """
    root, params_file = resolve_checkpoint_dir(path, step)
    try:
        raw = json.loads((root / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise OctoCheckpointError(f"{root / 'config.json'} is not valid JSON: {err}") from err
    example = None
    if (root / "example_batch.msgpack").is_file():
        example = read_msgpack_file(root / "example_batch.msgpack")
    ckpt_config = config_from_octo_json(raw, example)
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
        stats = json.loads((root / "dataset_statistics.json").read_text())
    report, t5 = load_flax_params(transformer, flat, strict=strict)
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
    transformer: OctoTransformer, flat: Mapping[str, np.ndarray], *, strict: bool = True
) -> tuple[LoadReport, dict[str, torch.Tensor]]:
    """Copy flat Flax leaves into ``transformer``; returns the report and T5 state dict."""
    report = LoadReport()
    targets = dict(transformer.named_parameters())
    assigned: dict[str, np.ndarray] = {}
    mismatches = []
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
        name = flax_to_torch_name(path)
        if name not in targets:
            report.unexpected.append(path)
            continue
        arr = flax_to_torch_array(path, array)
        want = tuple(targets[name].shape)
        if arr.shape != want:
            mismatches.append(
                f"{path}: checkpoint {tuple(array.shape)} (-> {tuple(arr.shape)} in torch "
                f"layout) vs module {name} {want}"
            )
            continue
        assigned[name] = arr
        report.loaded.append(path)
        report.loaded_params += size
    if mismatches:
        raise OctoShapeMismatchError(
            f"{len(mismatches)} checkpoint leaves do not fit the module (is the config right? "
            "image size, embed_dim, layers):\n  " + "\n  ".join(mismatches[:20])
        )
    report.missing = [n for n in targets if n not in assigned]
    if strict and not report.ok:
        raise OctoCheckpointError(
            "checkpoint and module disagree (pass strict=False to load anyway):\n" + str(report)
        )
    with torch.no_grad():
        for name, arr in assigned.items():
            targets[name].copy_(torch.from_numpy(np.require(arr, requirements=["C", "W"])))
    return report, t5


# ---------------------------------------------------------------------------- writing
def write_octo_checkpoint(
    directory: str | Path,
    params: Mapping[str, np.ndarray],
    config: OctoConfig | Mapping[str, Any],
    *,
    step: int = 300000,
    dataset_statistics: Mapping[str, Any] | None = None,
    example_batch: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory in the official layout (what Octo/Orbax write).

    Args:
        directory: output root; gets ``config.json``, ``dataset_statistics.json``,
            ``example_batch.msgpack`` and ``<step>/default/checkpoint``.
        params: flat ``{flax path: array}`` (or nested) parameter tree.
        config: an :class:`OctoConfig` (converted with :func:`octo_config_json`) or a
            ready ``config.json`` dict.
        example_batch: nested dict; default: zero images of the config's sizes.

    Returns:
        the params file path.
    """
    root = Path(directory)
    step_dir = root / str(step) / "default"
    step_dir.mkdir(parents=True, exist_ok=True)
    raw = octo_config_json(config) if isinstance(config, OctoConfig) else dict(config)
    (root / "config.json").write_text(json.dumps(raw, indent=2))
    (root / "dataset_statistics.json").write_text(json.dumps(dataset_statistics or {}))
    if example_batch is None and isinstance(config, OctoConfig):
        w = config.window_size
        example_batch = {
            "observation": {
                f"image_{t.name}": np.zeros((1, w, t.image_size, t.image_size, 3), np.uint8)
                for t in config.image_tokenizers
            }
            | {"timestep_pad_mask": np.ones((1, w), bool)},
        }
    if example_batch is not None:
        write_msgpack_file(root / "example_batch.msgpack", example_batch)
    nested = params if any(isinstance(v, Mapping) for v in params.values()) else unflatten_tree(params)
    params_file = step_dir / "checkpoint"
    write_msgpack_file(params_file, nested)
    for marker in (root / str(step) / "commit_success.txt", step_dir / "commit_success.txt"):
        marker.write_text("Checkpoint commit was successful.")
    return params_file


# ---------------------------------------------------------------------------- torch files
def save_torch_checkpoint(
    path: str | Path,
    transformer: OctoTransformer,
    *,
    t5_state_dict: Mapping[str, torch.Tensor] | None = None,
    dataset_statistics: Mapping[str, Any] | None = None,
) -> None:
    """Save the backbone (and optionally T5) as one ``torch.save`` file.

    The file holds ``{"format", "format_version", "config", "state_dict",
    "t5_state_dict", "dataset_statistics"}``; load with :func:`load_torch_checkpoint`
    (no msgpack needed). T5 adds ~440 MB; leave it out if you cache instruction
    embeddings.
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


def load_torch_checkpoint(
    path: str | Path, transformer: OctoTransformer | None = None, *, strict: bool = True
) -> OctoCheckpoint:
    """Load a file written by :func:`save_torch_checkpoint`."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise OctoCheckpointError(f"{p} is not a file; expected a torch Octo checkpoint (.pt).")
    blob = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != TORCH_FORMAT:
        raise OctoCheckpointError(
            f"{p} is not a torchrl_chunk Octo checkpoint (no format={TORCH_FORMAT!r}); for an "
            "official checkpoint directory use load_octo_checkpoint()."
        )
    config = OctoConfig.from_dict(blob["config"])
    if transformer is None:
        transformer = OctoTransformer(config)
    elif transformer.config.version != config.version:
        raise OctoVersionMismatchError(
            f"{p} holds an Octo {config.version} backbone but the module is Octo "
            f"{transformer.config.version}."
        )
    state = blob["state_dict"]
    own = transformer.state_dict()
    bad = [
        f"{k}: file {tuple(v.shape)} vs module {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise OctoShapeMismatchError("shape mismatch:\n  " + "\n  ".join(bad[:20]))
    result = transformer.load_state_dict(state, strict=strict)
    report = LoadReport(
        loaded=[k for k in state if k in own],
        missing=list(result.missing_keys),
        unexpected=list(result.unexpected_keys),
        loaded_params=sum(v.numel() for k, v in state.items() if k in own),
        checkpoint_policy_params=sum(v.numel() for v in state.values()),
    )
    t5 = blob.get("t5_state_dict") or {}
    report.t5_params = sum(v.numel() for v in t5.values())
    return OctoCheckpoint(
        transformer=transformer,
        config=transformer.config,
        report=report,
        t5_state_dict=dict(t5),
        dataset_statistics=blob.get("dataset_statistics") or {},
    )


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = [
    "LoadReport",
    "OctoCheckpoint",
    "OctoCheckpointError",
    "OctoShapeMismatchError",
    "OctoVersionMismatchError",
    "checkpoint_version",
    "config_from_octo_json",
    "count_parameters",
    "export_flax_params",
    "flax_to_torch_array",
    "flax_to_torch_name",
    "load_flax_params",
    "load_octo_checkpoint",
    "load_torch_checkpoint",
    "octo_config_json",
    "read_octo_params",
    "save_torch_checkpoint",
    "write_octo_checkpoint",
]

