"""Test support: write checkpoints in the official Octo layout (what Octo/Orbax write).

Not part of the library: the loader only reads. The tests use this writer to build
synthetic checkpoints, with the parameter names and shapes of ``conftest.py`` (restated
from the spec) or with :func:`~torchrl_chunk.modules.octo.export_flax_params` of a module.
:func:`octo_config_json` is the inverse of
:func:`~torchrl_chunk.modules.octo.config_from_octo_json` for every config the port
supports (the round-trip tests check that).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from torchrl_chunk.modules.octo import OctoConfig
from torchrl_chunk.modules.octo.serialization import unflatten_tree, write_msgpack_file


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
