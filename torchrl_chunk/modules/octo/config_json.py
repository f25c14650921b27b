"""Read an official Octo ``config.json`` into an :class:`OctoConfig` (spec 1.1, 1.11, 2.6).

Only what the port implements is accepted -- ``ImageTokenizer`` with ``SmallStem`` /
``SmallStem16``, one ``action`` readout group, a T5 language tokenizer -- and anything else
is refused by name. :func:`checkpoint_version` tells Octo 1.5 (``repeat_task_tokens`` and
``use_correct_attention``) from the December 2023 Octo 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from torchrl_chunk.modules.octo.config import T5_WIDTHS, ImageTokenizerConfig, OctoConfig
from torchrl_chunk.modules.octo.errors import OctoCheckpointError

_DEFAULT_IMAGE_SIZES = {"primary": 256, "wrist": 128}


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
        OctoCheckpointError: for a config that is not an Octo model config, is malformed
            (a field of the wrong type, a missing field), or uses components this port
            does not implement (named in the message).
    """
    if not isinstance(raw, Mapping):
        raise OctoCheckpointError(
            f"config.json holds a {type(raw).__name__}, not an Octo config object; "
            "re-download the checkpoint directory."
        )
    if example_batch is not None and not isinstance(example_batch, Mapping):
        raise OctoCheckpointError(
            f"example_batch.msgpack holds a {type(example_batch).__name__}, not a batch dict; "
            "re-download the checkpoint directory (or delete that file to use default image sizes)."
        )
    try:
        return _config_from_octo_json(raw, example_batch)
    except OctoCheckpointError:
        raise
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise OctoCheckpointError(
            f"config.json is malformed ({type(err).__name__}: {err}); expected the config.json "
            "of an official Octo checkpoint: re-download the checkpoint directory."
        ) from err


def _config_from_octo_json(
    raw: Mapping[str, Any], example_batch: Mapping[str, Any] | None
) -> OctoConfig:
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


def checkpoint_version(raw_config: Mapping[str, Any]) -> str:
    """``"1.5"`` or ``"1.0"`` from an official ``config.json``."""
    model = raw_config.get("model", {})
    return "1.5" if model.get("use_correct_attention") and model.get("repeat_task_tokens") else "1.0"


__all__ = ["checkpoint_version", "config_from_octo_json"]
