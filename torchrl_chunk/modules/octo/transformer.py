"""The Octo transformer: a pre-LayerNorm ViT encoder (spec 1.6).

Module and parameter names mirror the Flax tree so that a Flax path maps onto a torch
key by replacing ``/`` with ``.`` and ``kernel``/``scale`` with ``weight``:
``Transformer_0.encoderblock_{i}.{LayerNorm_0, MultiHeadDotProductAttention_0.{query,
key,value,out}, LayerNorm_1, MlpBlock_0.{Dense_0, Dense_1}}`` and ``encoder_norm``.

Numerics follow Flax, not the PyTorch defaults: LayerNorm epsilon 1e-6, tanh-approximated
GELU, the query scaled by ``1/sqrt(head_dim)``, and disallowed attention logits pushed to
the most negative float32 rather than ``-inf`` (a fully masked query row then gets a
uniform distribution, as in Flax, instead of NaN).

Under bf16 autocast the bias is built in bf16 with bf16's own most negative value
(:func:`attention_bias` with the compute dtype). A float32 bias would be cast to bf16 by
autocast in every layer (``scaled_dot_product_attention`` is on its lower-precision list
on CPU and CUDA), and the float32 minimum rounds to ``-inf`` in bf16: fully masked rows
then come out as zeros (CPU kernel) or NaN instead of the uniform average. Outside
autocast, CUDA's memory-efficient kernel takes a float bias only in the query dtype. The
bias is also allocated with its key dimension padded to a multiple of 16 elements and
sliced back (``align=True``), so that kernel uses it as is instead of padding a copy in
every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


BIAS_ALIGNMENT = 16  # elements; CUDA's memory-efficient SDPA wants 16-byte aligned bias rows


def attention_bias(
    mask: torch.Tensor, dtype: torch.dtype = torch.float32, *, align: bool = False
) -> torch.Tensor:
    """Boolean mask (True = may attend) -> additive bias (0 or the dtype's minimum).

    A finite fill keeps fully masked rows NaN-free (spec 4.4, item 10); it is the
    minimum of ``dtype`` itself, so pass the dtype attention computes in (bf16 under
    autocast). ``align=True`` returns a view into a buffer whose last dim is padded to a
    multiple of :data:`BIAS_ALIGNMENT` (same values, aligned row strides).
    """
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    neg = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    n = mask.shape[-1]
    if align and n % BIAS_ALIGNMENT:
        padded = F.pad(mask, (0, BIAS_ALIGNMENT - n % BIAS_ALIGNMENT), value=False)
        return torch.where(padded, zero, neg)[..., :n]
    return torch.where(mask, zero, neg)


class MultiHeadDotProductAttention(nn.Module):
    """Self-attention with separate ``query``/``key``/``value``/``out`` projections.

    The Flax kernels ``(D, heads, head_dim)`` and ``(heads, head_dim, D)`` become
    ``Linear(D, D)`` weights with head-major feature order (``index = head * head_dim + d``).
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.query = nn.Linear(embed_dim, embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend within ``x`` ``[B, L, D]``.

        ``mask`` broadcasts to ``[B, heads, L, L]``: either bool (True = may attend) or an
        additive float bias already made by :func:`attention_bias` (reused across layers).
        """
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        bias = mask
        if mask is not None and mask.dtype == torch.bool:
            bias = attention_bias(mask, q.dtype)
        elif mask is not None and mask.dtype != q.dtype:
            # a bias made for another dtype (e.g. fp32 under bf16 autocast): cast it, and
            # keep the fill finite (the fp32 minimum is -inf in bf16)
            bias = mask.to(q.dtype).clamp_min(torch.finfo(q.dtype).min)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class MlpBlock(nn.Module):
    """``Dense_0`` -> tanh-GELU -> ``Dense_1`` (no dropout: the rates are 0)."""

    def __init__(self, embed_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.Dense_0 = nn.Linear(embed_dim, mlp_dim)
        self.Dense_1 = nn.Linear(mlp_dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.Dense_1(F.gelu(self.Dense_0(x), approximate="tanh"))


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(LN_0(x))`` then ``x + mlp(LN_1(x))``."""

    def __init__(self, embed_dim: int, num_heads: int, mlp_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.LayerNorm_0 = nn.LayerNorm(embed_dim, eps=eps)
        self.MultiHeadDotProductAttention_0 = MultiHeadDotProductAttention(embed_dim, num_heads)
        self.LayerNorm_1 = nn.LayerNorm(embed_dim, eps=eps)
        self.MlpBlock_0 = MlpBlock(embed_dim, mlp_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.MultiHeadDotProductAttention_0(self.LayerNorm_0(x), mask)
        return x + self.MlpBlock_0(self.LayerNorm_1(x))


class Transformer(nn.Module):
    """``num_layers`` encoder blocks (``encoderblock_i``) and a final ``encoder_norm``."""

    def __init__(
        self, embed_dim: int, num_layers: int, num_heads: int, mlp_dim: int, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            self.add_module(f"encoderblock_{i}", EncoderBlock(embed_dim, num_heads, mlp_dim, eps))
        self.encoder_norm = nn.LayerNorm(embed_dim, eps=eps)

    def blocks(self) -> list[EncoderBlock]:
        return [getattr(self, f"encoderblock_{i}") for i in range(self.num_layers)]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks():
            x = block(x, mask)
        return self.encoder_norm(x)


class BlockTransformer(nn.Module):
    """Holds ``Transformer_0`` (the Flax ``BlockTransformer_0`` scope).

    Token assembly and the block-wise mask live in :mod:`.attention_mask` and
    :class:`~torchrl_chunk.modules.octo.model.OctoTransformer`; this wrapper only exists
    so parameter names match the Flax tree.
    """

    def __init__(
        self, embed_dim: int, num_layers: int, num_heads: int, mlp_dim: int, eps: float = 1e-6
    ) -> None:
        super().__init__()
        self.Transformer_0 = Transformer(embed_dim, num_layers, num_heads, mlp_dim, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.Transformer_0(x, mask)
