"""Octo as a TorchRL backbone, and the actor/critic factory for the chunk PPO recipe.

:class:`OctoBackbone` adapts environment tensors to :class:`OctoTransformer`:

* ``("observation", "image")``: uint8 HWC, ``[*B, H, W, 3]`` for ``window_size == 1`` or
  ``[*B, W, H, W, 3]`` (oldest frame first, e.g. from TorchRL's ``CatFrames(dim=-4)``) for
  ``window_size == W > 1``. Frames are resized to the primary camera's size (256 for
  Octo-small) -- bilinear for upsampling, antialiased for downsampling -- rounded to whole
  pixel values like Octo's uint8 pipeline, then scaled with ``x / 127.5 - 1``. There is no
  goal image (zeros -> a -1 plane, Octo's language-conditioned mode); the wrist camera is
  not used (its tokens drop out of the sequence, as in Octo when the key is absent).
* ``("observation", "task_id")``: int64 ``[*B, 1]`` indexing a fixed instruction table
  (:class:`~.language.InstructionEmbeddings`).
* optionally a ``[*B, W]`` bool timestep pad mask (False for history slots before the
  episode start).

Time positions: window position ``t`` (0 = oldest) uses the time-position embedding index
``config.time_position_offset + t``. With the default offset 0 this is Octo's own rule
(``pos_embedding[:, :W]``): with ``W = 2`` the current frame gets index 1, exactly as in
pretraining; with ``W = 1`` it gets index 0 (what Octo's finetuning with window 1 does).
Set ``time_position_offset=1`` with ``W = 1`` to keep the pretraining index of the current
frame instead.

The backbone writes ``"embedding"`` ``[*B, D]``: the readout token of the current (last)
window step after the final LayerNorm. :func:`make_octo_actor_critic` puts the paper's
chunk Gaussian head and value head on top via
:func:`torchrl_chunk.modules.heads.make_chunk_actor_critic`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.modules import ProbabilisticActor

from torchrl_chunk._deprecation import renamed_kwarg
from torchrl_chunk.keys import IMAGE_KEY, TASK_ID_KEY
from torchrl_chunk.modules.heads import EMBEDDING_KEY, make_chunk_actor_critic
from torchrl_chunk.modules.octo.config import OctoConfig
from torchrl_chunk.modules.octo.language import InstructionEmbeddings, T5LanguageEncoder
from torchrl_chunk.modules.octo.model import OctoTransformer

NestedKey = str | tuple[str, ...]


def resize_images(images: torch.Tensor, size: int, mode: str = "bilinear") -> torch.Tensor:
    """``[N, 3, H, W]`` pixels (0..255) -> ``[N, 3, size, size]`` float, rounded and
    clamped to whole uint8 values (Octo resizes in uint8). Identity when already sized."""
    if images.shape[-2:] == (size, size):
        return images
    x = images.to(torch.float32)
    down = images.shape[-1] > size or images.shape[-2] > size
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    if mode in ("bilinear", "bicubic"):
        kwargs["antialias"] = down
    x = F.interpolate(x, size=(size, size), mode=mode, **kwargs)
    return x.round_().clamp_(0.0, 255.0)


class OctoBackbone(nn.Module):
    """Env observation -> Octo readout embedding ``[*B, D]``.

    Args:
        transformer: the :class:`OctoTransformer` (its ``config.window_size`` sets the
            expected history length).
        instructions: :class:`InstructionEmbeddings` (the per-task language tokens).
        camera: which image tokenizer the env image feeds (default ``"primary"``).
        interpolation: ``F.interpolate`` mode for resizing (``"bilinear"`` default;
            Octo's data pipeline uses Lanczos-3, which torch lacks).
    """

    def __init__(
        self,
        transformer: OctoTransformer,
        instructions: InstructionEmbeddings,
        *,
        camera: str = "primary",
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.instructions = instructions
        self.camera = camera
        self.image_size = transformer.config.image_tokenizer(camera).image_size
        self.interpolation = interpolation
        cfg = transformer.config
        if instructions.embeddings.shape[1:] != (cfg.language_tokens, cfg.language_dim):
            raise ValueError(
                f"instruction embeddings have shape {tuple(instructions.embeddings.shape)}; "
                f"this config needs [num_tasks, {cfg.language_tokens}, {cfg.language_dim}]."
            )

    @property
    def config(self) -> OctoConfig:
        return self.transformer.config

    @property
    def window_size(self) -> int:
        return self.transformer.config.window_size

    def forward(
        self,
        image: torch.Tensor,
        task_id: torch.Tensor,
        timestep_pad_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """See the module docstring for shapes; returns ``[*B, embed_dim]``."""
        w = self.window_size
        if task_id.ndim < 1 or task_id.shape[-1] != 1:
            raise ValueError(
                f"task_id must be int64 [*B, 1] (TASK_ID_KEY), got {tuple(task_id.shape)}."
            )
        batch = task_id.shape[:-1]
        frame = (w,) if w > 1 else ()
        if (
            image.shape[: len(batch)] != batch
            or image.shape[len(batch) : -3] != frame
            or image.shape[-1] != 3
        ):
            expected = f"[{', '.join(map(str, (*batch, *frame)))}, H, W, 3]"
            hint = "" if w == 1 else f" (stack the history, e.g. torchrl CatFrames(N={w}, dim=-4))"
            raise ValueError(
                f"OctoBackbone(window_size={w}) expects uint8 HWC images {expected} for "
                f"task_id of shape {tuple(task_id.shape)}{hint}; got {tuple(image.shape)}."
            )
        frames = image.reshape(-1, *image.shape[-3:])  # [N*W, H, W, 3]
        frames = frames.permute(0, 3, 1, 2)
        frames = resize_images(frames, self.image_size, self.interpolation)
        frames = frames.reshape(-1, w, *frames.shape[1:])  # [N, W, 3, S, S]
        n = frames.shape[0]
        language, language_mask = self.instructions(task_id.reshape(n).long())
        if timestep_pad_mask is not None:
            timestep_pad_mask = timestep_pad_mask.reshape(n, w).bool()
        out = self.transformer(
            {self.camera: frames},
            language,
            language_mask=language_mask,
            timestep_pad_mask=timestep_pad_mask,
        )
        emb = OctoTransformer.readout_embedding(out)
        return emb.reshape(*batch, emb.shape[-1])


def find_octo_backbones(module: nn.Module) -> list[OctoBackbone]:
    """Every distinct :class:`OctoBackbone` inside ``module`` (an actor, a critic, a loss),
    e.g. to build optimiser parameter groups or freeze the stems."""
    seen: dict[int, OctoBackbone] = {}
    for m in module.modules():
        if isinstance(m, OctoBackbone):
            seen.setdefault(id(m), m)
    return list(seen.values())


def as_instruction_table(
    instructions: InstructionEmbeddings | torch.Tensor | Sequence[str] | Path,
    *,
    t5_path: str | Path | None = None,
    t5_encoder: T5LanguageEncoder | None = None,
) -> InstructionEmbeddings:
    """Accept an instruction table, a ``[num_tasks, 16, 768]`` tensor of T5 outputs, a file
    written by ``python -m torchrl_chunk.modules.octo.convert instructions``, or a list of
    instruction strings ordered by task id (encoded once with T5 from ``t5_encoder`` or
    ``t5_path``)."""
    if isinstance(instructions, InstructionEmbeddings):
        return instructions
    if isinstance(instructions, Path) or (
        isinstance(instructions, str) and Path(instructions).expanduser().is_file()
    ):
        return load_instruction_table(instructions)
    if isinstance(instructions, str):
        raise ValueError(
            f"instructions={instructions!r} is not an existing file; pass the file written by "
            "`python -m torchrl_chunk.modules.octo.convert instructions`, a [num_tasks, 16, 768] "
            "tensor, or a list of instruction strings ordered by task_id."
        )
    if isinstance(instructions, torch.Tensor):
        return InstructionEmbeddings(instructions)
    if isinstance(instructions, (str, bytes)) or not isinstance(instructions, Sequence):
        raise TypeError(
            "instructions must be InstructionEmbeddings, a [num_tasks, 16, 768] tensor or a "
            f"list of strings ordered by task_id, got {type(instructions).__name__} (for a "
            "{task: instruction} dict pass [d[t] for t in task_list])."
        )
    if t5_encoder is None:
        if t5_path is None:
            raise ValueError(
                "instruction strings need a T5 encoder: pass t5_path=<local t5-base dir> "
                "(see docs/octo.md) or precomputed embeddings."
            )
        t5_encoder = T5LanguageEncoder.from_pretrained(t5_path)
    return InstructionEmbeddings.from_instructions(list(instructions), t5_encoder)


def load_instruction_table(path: str | Path) -> InstructionEmbeddings:
    """Read a table written by ``python -m torchrl_chunk.modules.octo.convert instructions``."""
    p = Path(path).expanduser()
    fix = "write it with `python -m torchrl_chunk.modules.octo.convert instructions T5_DIR DST --file ...`"
    if not p.is_file():
        raise ValueError(f"instruction table {p} does not exist; {fix}.")
    from torchrl_chunk.modules.octo.torch_checkpoint import torch_load

    blob = torch_load(p, fix, error=ValueError)
    if not isinstance(blob, dict) or not isinstance(blob.get("embeddings"), torch.Tensor):
        raise ValueError(f"instruction table {p} has no 'embeddings' tensor; {fix}.")
    return InstructionEmbeddings(blob["embeddings"], blob.get("mask"))


def make_octo_backbone(
    config: OctoConfig | None = None,
    *,
    instructions: InstructionEmbeddings | torch.Tensor | Sequence[str] | Path,
    checkpoint: str | Path | None = None,
    t5_path: str | Path | None = None,
    image_key: NestedKey = IMAGE_KEY,
    task_id_key: NestedKey = TASK_ID_KEY,
    timestep_pad_mask_key: NestedKey | None = None,
    out_key: NestedKey = EMBEDDING_KEY,
    camera: str = "primary",
) -> TensorDictModule:
    """A ``TensorDictModule`` wrapping :class:`OctoBackbone`.

    Args:
        config: model config; ``None`` takes it from ``checkpoint`` (or octo-small-1.5).
            With both, ``config`` wins for run-time fields (``window_size``,
            ``time_position_offset``) and must match the checkpoint's architecture.
        instructions: see :func:`as_instruction_table`.
        checkpoint: an official checkpoint directory or a file from
            :func:`~torchrl_chunk.modules.octo.torch_checkpoint.save_torch_checkpoint`;
            ``None`` = random init.
        t5_path: local t5-base directory, only used to encode instruction strings.
        image_key, task_id_key, timestep_pad_mask_key: input keys (pad mask optional).
        out_key: where the embedding goes.
    """
    from torchrl_chunk.modules.octo.checkpoint import load_octo_checkpoint
    from torchrl_chunk.modules.octo.torch_checkpoint import load_torch_checkpoint

    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        loader = load_torch_checkpoint if path.is_file() and path.name != "checkpoint" else load_octo_checkpoint
        if config is None:
            transformer = loader(path).transformer
        else:
            transformer = OctoTransformer(config)
            loader(path, transformer)  # strict: refuses missing or unexpected weights
    else:
        transformer = OctoTransformer(config or OctoConfig())
    table = as_instruction_table(instructions, t5_path=t5_path)
    backbone = OctoBackbone(transformer, table, camera=camera)
    in_keys = [image_key, task_id_key]
    if timestep_pad_mask_key is not None:
        in_keys.append(timestep_pad_mask_key)
    return TensorDictModule(backbone, in_keys=in_keys, out_keys=[out_key])


@renamed_kwarg("horizon", "chunk_size")
def make_octo_actor_critic(
    config: OctoConfig | None = None,
    chunk_size: int = 4,
    action_dim: int = 4,
    *,
    instructions: InstructionEmbeddings | torch.Tensor | Sequence[str] | Path,
    checkpoint: str | Path | None = None,
    separate_critic: bool = False,
    t5_path: str | Path | None = None,
    log_std_init: float = -1.0,
    image_key: NestedKey = IMAGE_KEY,
    task_id_key: NestedKey = TASK_ID_KEY,
    timestep_pad_mask_key: NestedKey | None = None,
) -> tuple[ProbabilisticActor, TensorDictSequential]:
    """Octo-small chunk actor and critic for chunk PPO / self-BC (paper Fig. 1).

    Args:
        config: :class:`OctoConfig` (default octo-small-1.5, or the checkpoint's).
        chunk_size, action_dim: chunk size ``h`` and action size (MetaWorld: 4, 4);
            ``horizon=`` is the deprecated old name of ``chunk_size``. (The config's
            ``action_horizon`` is Octo's own name for its pretrained head's chunk.)
        instructions: the task instruction table (see :func:`as_instruction_table`).
        checkpoint: pretrained weights (official directory or our torch file).
        separate_critic: give the critic its own copy of the backbone (initialised with
            the same weights) instead of sharing it with the actor.
        t5_path: local t5-base directory, to encode instruction strings.
        log_std_init: initial log-std of the chunk Gaussian.
        image_key, task_id_key, timestep_pad_mask_key: observation keys.

    Returns:
        ``(actor, critic)`` from :func:`torchrl_chunk.modules.heads.make_chunk_actor_critic`:
        the actor writes ``"action"`` ``[*B, h, action_dim]`` and its joint log-prob
        ``"action_log_prob"`` ``[*B]``; the critic writes ``"state_value"`` ``[*B, 1]``.
    """
    backbone = make_octo_backbone(
        config,
        instructions=instructions,
        checkpoint=checkpoint,
        t5_path=t5_path,
        image_key=image_key,
        task_id_key=task_id_key,
        timestep_pad_mask_key=timestep_pad_mask_key,
    )
    embed_dim = backbone.module.config.embed_dim
    critic_backbone = copy.deepcopy(backbone) if separate_critic else None
    return make_chunk_actor_critic(
        backbone,
        embed_dim,
        chunk_size,
        action_dim,
        critic_backbone=critic_backbone,
        log_std_init=log_std_init,
    )
