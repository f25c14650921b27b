"""Language tokens: a frozen T5 encoder and per-instruction embedding tables (spec 1.4).

Octo tokenises the instruction with the T5 tokenizer (``max_length`` 16, padded,
truncated), runs the frozen T5-base *encoder* and uses all 16 output vectors as tokens,
padding positions included. Because T5 is frozen and MetaWorld has a fixed instruction
list, we run it once per instruction and keep an ``[num_tasks, 16, 768]`` table
(:class:`InstructionEmbeddings`); the policy then only indexes it with ``task_id``.

``transformers`` is optional: it is only needed to *compute* embeddings
(:class:`T5LanguageEncoder`); precomputed tables can be passed as tensors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            "computing T5 instruction embeddings needs `transformers` (and `sentencepiece` "
            "for the T5 tokenizer): pip install 'torchrl_chunk[octo]'. Alternatively pass "
            "precomputed embeddings ([num_tasks, 16, 768] tensor) instead of strings."
        ) from err
    return transformers


class T5LanguageEncoder(nn.Module):
    """Frozen T5 encoder + tokenizer: ``list[str]`` -> ``([N, 16, 768], [N, 16])``.

    Args:
        encoder: a ``transformers.T5EncoderModel`` (its parameters are frozen here).
        tokenizer: the matching tokenizer (``AutoTokenizer`` of ``t5-base``), or ``None``
            when only :meth:`encode_ids` is used.
        max_length: token count (Octo: 16; the position embedding fixes it).
    """

    def __init__(self, encoder: nn.Module, tokenizer=None, max_length: int = 16) -> None:
        super().__init__()
        self.hf_model = encoder.eval()
        for p in self.hf_model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, tokenizer_path: str | Path | None = None, max_length: int = 16
    ) -> T5LanguageEncoder:
        """Load from a *local* HuggingFace directory (``t5-base`` downloaded by the user).

        No network access is attempted (``local_files_only=True``).
        """
        tr = _transformers()
        path = Path(path).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(
                f"T5 directory {path} does not exist. Download it on a machine with hub "
                "access (huggingface-cli download google-t5/t5-base --local-dir DIR) and pass DIR."
            )
        encoder = tr.T5EncoderModel.from_pretrained(path, local_files_only=True)
        tokenizer = tr.AutoTokenizer.from_pretrained(tokenizer_path or path, local_files_only=True)
        return cls(encoder, tokenizer, max_length)

    @classmethod
    def from_state_dict(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        *,
        tokenizer_path: str | Path | None = None,
        config=None,
        max_length: int = 16,
    ) -> T5LanguageEncoder:
        """Build from the T5 weights stored in an Octo checkpoint
        (:attr:`OctoCheckpoint.t5_state_dict`). ``config`` defaults to the t5-base
        ``T5Config``; the tokenizer files are not in the Octo checkpoint, so give
        ``tokenizer_path`` (a local ``t5-base`` download) to encode strings."""
        tr = _transformers()
        encoder = t5_encoder_from_state_dict(state_dict, config)
        tokenizer = None
        if tokenizer_path is not None:
            tokenizer = tr.AutoTokenizer.from_pretrained(tokenizer_path, local_files_only=True)
        return cls(encoder, tokenizer, max_length)

    def tokenize(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            raise RuntimeError("this T5LanguageEncoder has no tokenizer; pass tokenizer_path.")
        out = self.tokenizer(
            list(instructions),
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_tensors="pt",
        )
        return out["input_ids"], out["attention_mask"]

    @torch.no_grad()
    def encode_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``last_hidden_state`` ``[N, L, d_model]`` of the frozen encoder."""
        return self.hf_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def encode(self, instructions: Sequence[str]) -> torch.Tensor:
        """Instructions -> ``[N, max_length, d_model]`` token embeddings."""
        ids, mask = self.tokenize(instructions)
        return self.encode_ids(ids, mask)


def t5_base_config(**overrides):
    """``transformers.T5Config`` of t5-base (the encoder Octo uses)."""
    tr = _transformers()
    kwargs = dict(
        vocab_size=32128,
        d_model=768,
        d_kv=64,
        d_ff=3072,
        num_layers=12,
        num_heads=12,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="relu",
        layer_norm_epsilon=1e-6,
        dropout_rate=0.0,
    )
    kwargs.update(overrides)
    return tr.T5Config(**kwargs)


def t5_encoder_from_state_dict(state_dict: Mapping[str, torch.Tensor], config=None) -> nn.Module:
    """A ``T5EncoderModel`` holding the converted checkpoint weights.

    ``encoder.embed_tokens.weight`` is tied to ``shared.weight`` (the checkpoint only has
    ``shared``). Raises ``ValueError`` naming missing/unexpected keys.
    """
    tr = _transformers()
    model = tr.T5EncoderModel(config or t5_base_config())
    result = model.load_state_dict(dict(state_dict), strict=False)
    missing = [k for k in result.missing_keys if k != "encoder.embed_tokens.weight"]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"T5 weights do not match the T5 config: missing {missing[:10]}, unexpected "
            f"{list(result.unexpected_keys)[:10]}."
        )
    model.encoder.embed_tokens = model.shared
    return model.eval()


class InstructionEmbeddings(nn.Module):
    """Fixed table of language-encoder outputs, indexed by task id.

    Args:
        embeddings: ``[num_tasks, language_tokens, language_dim]`` (e.g. T5 outputs).
        mask: ``[num_tasks]`` bool, False for tasks without an instruction (their language
            tokens are then masked out, as Octo does for an absent instruction).
    """

    def __init__(self, embeddings: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        super().__init__()
        if embeddings.ndim != 3:
            raise ValueError(
                f"instruction embeddings must be [num_tasks, tokens, dim], got "
                f"{tuple(embeddings.shape)}."
            )
        if mask is None:
            mask = torch.ones(embeddings.shape[0], dtype=torch.bool)
        self.register_buffer("embeddings", embeddings.detach().to(torch.float32).clone())
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    @property
    def num_tasks(self) -> int:
        return self.embeddings.shape[0]

    def forward(self, task_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``task_id`` int ``[N]`` -> ``([N, tokens, dim], [N] bool)``."""
        # Bounds check on CPU only (on GPU it would force a sync every step).
        if task_id.device.type == "cpu" and task_id.numel() and (int(task_id.min()) < 0 or int(task_id.max()) >= self.num_tasks):
            raise IndexError(
                f"task_id out of range [0, {self.num_tasks}): got values "
                f"{int(task_id.min())}..{int(task_id.max())}; the instruction table has "
                f"{self.num_tasks} entries."
            )
        return self.embeddings[task_id], self.mask[task_id]

    @classmethod
    def from_instructions(
        cls, instructions: Sequence[str], encoder: T5LanguageEncoder
    ) -> InstructionEmbeddings:
        """Encode a list of instruction strings once (empty string = no instruction)."""
        emb = encoder.encode(list(instructions))
        mask = torch.tensor([bool(s) for s in instructions])
        return cls(emb, mask)
