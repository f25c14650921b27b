"""``OctoTransformer``: tokenizers -> projections + position embeddings -> block transformer.

This is the Flax ``octo_transformer`` scope without its T5 encoder (which lives in
:mod:`.language` and is frozen, so its output can be cached per instruction). Attribute
names are the Flax names, so every checkpoint leaf maps onto one tensor:

* ``observation_tokenizers_{camera}.SmallStem16_0.*`` (:class:`~.tokenizers.ImageTokenizer`)
* ``task_language_projection``, ``task_language_pos_embedding`` ``[1, 16, D]``
* ``obs_{camera}_projection``, ``obs_{camera}_pos_embedding`` ``[1, max_horizon, tokens, D]``
* ``readout_action_pos_embedding`` ``[1, max_horizon, 1, D]``
* ``BlockTransformer_0.Transformer_0.*`` (:class:`~.transformer.Transformer`)

Sequence (spec 1.5): ``[task_language x16]`` then for each window position ``t``:
``[obs_{camera} ..., obs_task_language x16 (1.5 only), readout_action x1]``. Window position
``t`` uses time-position index ``config.time_position_offset + t``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from torchrl_chunk.modules.octo.attention_mask import (
    block_attention_mask,
    combine_with_padding,
    octo_token_groups,
)
from torchrl_chunk.modules.octo.config import OctoConfig
from torchrl_chunk.modules.octo.tokenizers import ImageTokenizer
from torchrl_chunk.modules.octo.transformer import BlockTransformer, attention_bias
from torchrl_chunk.precision import compute_dtype

POS_EMBEDDING_STD = 0.02


def _pos_embedding(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * POS_EMBEDDING_STD)


class OctoTransformer(nn.Module):
    """The Octo backbone (Flax ``octo_transformer`` minus T5).

    Args:
        config: an :class:`OctoConfig`.
    """

    def __init__(self, config: OctoConfig) -> None:
        super().__init__()
        self.config = config
        d = config.embed_dim
        for tok in config.image_tokenizers:
            self.add_module(
                f"observation_tokenizers_{tok.name}",
                ImageTokenizer(tok, config.group_norm_eps, config.std_conv_eps),
            )
        self.task_language_projection = nn.Linear(config.language_dim, d)
        self.task_language_pos_embedding = _pos_embedding(1, config.language_tokens, d)
        for tok in config.image_tokenizers:
            self.add_module(f"obs_{tok.name}_projection", nn.Linear(tok.num_features, d))
            self.register_parameter(
                f"obs_{tok.name}_pos_embedding",
                _pos_embedding(1, config.max_horizon, tok.num_tokens, d),
            )
        self.readout_action_pos_embedding = _pos_embedding(
            1, config.max_horizon, config.num_readout_tokens, d
        )
        self.BlockTransformer_0 = BlockTransformer(
            d, config.num_layers, config.num_heads, config.mlp_dim, config.layer_norm_eps
        )
        self._mask_cache: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ pieces
    def image_tokenizer(self, camera: str) -> ImageTokenizer:
        return getattr(self, f"observation_tokenizers_{camera}")

    def structural_mask(
        self, cameras: tuple[str, ...], window: int, with_language: bool, device: torch.device
    ) -> torch.Tensor:
        """Cached ``[L, L]`` bool block mask for this group layout (True = may attend)."""
        key = (cameras, window, with_language, device)
        mask = self._mask_cache.get(key)
        if mask is None:
            cfg = self.config
            prefix, steps = octo_token_groups(
                [(c, cfg.image_tokenizer(c).num_tokens) for c in cameras],
                language_tokens=cfg.language_tokens if with_language else None,
                num_readout_tokens=cfg.num_readout_tokens,
                repeat_task_tokens=cfg.repeat_task_tokens,
            )
            mask = torch.from_numpy(
                block_attention_mask(
                    prefix, steps, window, use_correct_attention=cfg.use_correct_attention
                )
            ).to(device)
            self._mask_cache[key] = mask
        return mask

    def _time_slice(self, window: int) -> slice:
        start = self.config.time_position_offset
        if start + window > self.config.max_horizon:
            raise ValueError(
                f"window of {window} steps starting at time position {start} exceeds "
                f"max_horizon={self.config.max_horizon}."
            )
        return slice(start, start + window)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        images: Mapping[str, torch.Tensor],
        language: torch.Tensor | None = None,
        *,
        language_mask: torch.Tensor | None = None,
        goal_images: Mapping[str, torch.Tensor] | None = None,
        timestep_pad_mask: torch.Tensor | None = None,
        image_pad_masks: Mapping[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Run the backbone on one batch.

        Args:
            images: ``{camera: [B, W, 3, H, W] pixels in 0..255}`` (uint8 or float), at the
                camera's configured size. Cameras left out are skipped (their groups vanish
                from the sequence, as in Octo).
            language: frozen language-encoder output ``[B, language_tokens, language_dim]``,
                or ``None`` to drop the language groups.
            language_mask: ``[B]`` bool, False where the instruction is absent.
            goal_images: ``{camera: [B, 3, H, W]}`` goal images; absent = zeros (-1 plane).
            timestep_pad_mask: ``[B, W]`` bool, False for padded history steps.
            image_pad_masks: ``{camera: [B, W]}`` bool, False where that image is absent.

        Returns:
            ``{group name: tokens}`` after ``encoder_norm``: ``"task_language"``
            ``[B, 16, D]``, ``"obs_{camera}"`` / ``"obs_task_language"`` /
            ``"readout_action"`` ``[B, W, n, D]``.
        """
        cfg = self.config
        cameras = tuple(c.name for c in cfg.image_tokenizers if c.name in images)
        unknown = set(images) - {c.name for c in cfg.image_tokenizers}
        if unknown or not cameras:
            raise ValueError(
                f"images must be keyed by configured cameras "
                f"{[c.name for c in cfg.image_tokenizers]}, got {sorted(images)}."
            )
        first = images[cameras[0]]
        b, w = first.shape[:2]
        device = first.device
        ts = self._time_slice(w)
        if timestep_pad_mask is None:
            timestep_pad_mask = torch.ones(b, w, dtype=torch.bool, device=device)

        prefix_tokens: list[torch.Tensor] = []
        prefix_masks: list[torch.Tensor] = []
        step_groups: list[tuple[str, torch.Tensor, torch.Tensor]] = []  # [B, W, n, D], [B, W, n]

        for cam in cameras:
            img = images[cam]
            if img.shape[:2] != (b, w):
                raise ValueError(
                    f"camera {cam!r} has batch/window {tuple(img.shape[:2])}, expected {(b, w)}."
                )
            goal = None if goal_images is None else goal_images.get(cam)
            if goal is not None:
                goal = goal[:, None].expand(b, w, *goal.shape[1:]).flatten(0, 1)
            tokens = self.image_tokenizer(cam)(img.flatten(0, 1), goal)  # [B*W, n, C]
            tokens = getattr(self, f"obs_{cam}_projection")(tokens).unflatten(0, (b, w))
            tokens = tokens + getattr(self, f"obs_{cam}_pos_embedding")[:, ts]
            mask = timestep_pad_mask
            if image_pad_masks is not None and cam in image_pad_masks:
                mask = mask & image_pad_masks[cam]
            step_groups.append(
                (f"obs_{cam}", tokens, mask[:, :, None].expand(b, w, tokens.shape[2]))
            )

        with_language = language is not None
        if with_language:
            if language.shape[1:] != (cfg.language_tokens, cfg.language_dim):
                raise ValueError(
                    f"language embeddings must be [B, {cfg.language_tokens}, "
                    f"{cfg.language_dim}], got {tuple(language.shape)}."
                )
            proj = self.task_language_projection
            lang = proj(language.to(proj.weight.dtype))
            lang = lang + self.task_language_pos_embedding
            if language_mask is None:
                language_mask = torch.ones(b, dtype=torch.bool, device=device)
            lang_mask = language_mask[:, None].expand(b, cfg.language_tokens)
            prefix_tokens.append(lang)
            prefix_masks.append(lang_mask)
            if cfg.repeat_task_tokens:
                step_groups.append(
                    (
                        "obs_task_language",
                        lang[:, None].expand(b, w, *lang.shape[1:]),
                        lang_mask[:, None].expand(b, w, cfg.language_tokens),
                    )
                )

        readout = self.readout_action_pos_embedding[:, ts].expand(
            b, w, cfg.num_readout_tokens, cfg.embed_dim
        )
        step_groups.append(
            (
                "readout_action",
                readout,
                torch.ones(b, w, cfg.num_readout_tokens, dtype=torch.bool, device=device),
            )
        )

        # Assemble: prefix, then per timestep all groups.
        step_tokens = torch.cat([g[1] for g in step_groups], dim=2)  # [B, W, per_step, D]
        step_masks = torch.cat([g[2] for g in step_groups], dim=2)
        seq = torch.cat(prefix_tokens + [step_tokens.flatten(1, 2)], dim=1)
        key_mask = torch.cat(prefix_masks + [step_masks.flatten(1, 2)], dim=1)
        structure = self.structural_mask(cameras, w, with_language, device)
        if structure.shape[0] != seq.shape[1]:  # pragma: no cover - internal consistency
            raise RuntimeError(f"mask of {structure.shape[0]} tokens for {seq.shape[1]} tokens")
        # the bias in the dtype attention runs in (bf16 under autocast), aligned for the
        # fused kernels; built once, shared by every layer
        dtype = compute_dtype(device, seq.dtype)
        bias = attention_bias(combine_with_padding(structure, key_mask), dtype, align=True)

        out = self.BlockTransformer_0(seq, bias)

        # Split back into groups.
        result: dict[str, torch.Tensor] = {}
        n_prefix = sum(t.shape[1] for t in prefix_tokens)
        if with_language:
            result["task_language"] = out[:, :n_prefix]
        steps = out[:, n_prefix:].unflatten(1, (w, step_tokens.shape[2]))
        start = 0
        for name, tokens, _ in step_groups:
            n = tokens.shape[2]
            result[name] = steps[:, :, start : start + n]
            start += n
        return result

    @staticmethod
    def readout_embedding(outputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The ``[B, D]`` readout of the last (current) window position, averaged over the
        readout tokens -- the feature Octo's action heads use at inference."""
        return outputs["readout_action"][:, -1].mean(dim=-2)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (25,338,496 for the octo-small-1.5 backbone, spec 5.1)."""
    return sum(p.numel() for p in module.parameters())
