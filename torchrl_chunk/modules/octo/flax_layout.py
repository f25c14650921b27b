"""The one table of correspondences between Flax leaves and torch parameters.

Module and parameter names of the port are the Flax names (see :mod:`.model`), so a
torch parameter ``A.B.weight`` is the Flax leaf ``A/B/{kernel|scale}``; what differs is
the array layout. :func:`leaf_table` walks a module and gives every parameter its Flax
path and one row of the table below. Reading a checkpoint (:meth:`LeafMapping.to_torch`)
and exporting one (:meth:`LeafMapping.to_flax`) use the same row, so the two directions
cannot drift apart; each pair of transforms is a permutation/reshape and exactly inverse.

================  ==================================  ==============================  ==========================
row               Flax leaf                           torch parameter                 Flax -> torch
================  ==================================  ==============================  ==========================
conv_kernel       ``kernel`` (kh, kw, in, out)        ``Conv2d.weight`` (out, in,     permute (3, 2, 0, 1)
                                                      kh, kw)
heads_in_kernel   ``{query,key,value}/kernel``        ``Linear.weight`` (H*d, D)      reshape (D, H*d), transpose
                  (D, H, d)
heads_in_bias     ``{query,key,value}/bias`` (H, d)   ``Linear.bias`` (H*d,)          reshape (H*d,)
heads_out_kernel  ``out/kernel`` (H, d, D)            ``Linear.weight`` (D, H*d)      reshape (H*d, D), transpose
dense_kernel      ``kernel`` (in, out)                ``Linear.weight`` (out, in)     transpose
norm_scale        ``scale``                           ``LayerNorm``/``GroupNorm``     same array
                                                      ``.weight``
same              ``bias``, ``*_pos_embedding``       same name                       same array
================  ==================================  ==============================  ==========================

(``H`` heads of width ``d``, ``D = H d``; the torch feature index is ``h * d + i``.)

The frozen T5 encoder has its own, read-only rule (:func:`t5_flax_to_torch`): HuggingFace
Flax T5 ``kernel`` (in, out) -> ``weight`` (out, in), ``embedding`` -> ``weight``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

from torchrl_chunk.modules.octo.transformer import MultiHeadDotProductAttention

BACKBONE_PREFIX = "octo_transformer/"
T5_PREFIX = "octo_transformer/task_tokenizers_language/hf_model/"

Transform = Callable[[np.ndarray, int], np.ndarray]  # (array, num_heads) -> array


@dataclass(frozen=True)
class Layout:
    """One row of the table: the Flax leaf name and the two mutually inverse transforms."""

    name: str
    flax_leaf: str | None  # None: the Flax leaf has the torch name (bias, embeddings)
    to_torch: Transform
    to_flax: Transform


CONV_KERNEL = Layout(
    "conv_kernel", "kernel", lambda a, h: a.transpose(3, 2, 0, 1), lambda a, h: a.transpose(2, 3, 1, 0)
)
HEADS_IN_KERNEL = Layout(
    "heads_in_kernel",
    "kernel",
    lambda a, h: a.reshape(a.shape[0], -1).T,
    lambda a, h: a.T.reshape(a.shape[1], h, -1),
)
HEADS_IN_BIAS = Layout("heads_in_bias", "bias", lambda a, h: a.reshape(-1), lambda a, h: a.reshape(h, -1))
HEADS_OUT_KERNEL = Layout(
    "heads_out_kernel",
    "kernel",
    lambda a, h: a.reshape(-1, a.shape[-1]).T,
    lambda a, h: a.T.reshape(h, -1, a.shape[0]),
)
DENSE_KERNEL = Layout("dense_kernel", "kernel", lambda a, h: a.T, lambda a, h: a.T)
NORM_SCALE = Layout("norm_scale", "scale", lambda a, h: a, lambda a, h: a)
SAME = Layout("same", None, lambda a, h: a, lambda a, h: a)
LAYOUTS = (CONV_KERNEL, HEADS_IN_KERNEL, HEADS_IN_BIAS, HEADS_OUT_KERNEL, DENSE_KERNEL, NORM_SCALE, SAME)


@dataclass(frozen=True)
class LeafMapping:
    """A torch parameter, its Flax leaf, and the row that converts between them."""

    torch_name: str
    flax_path: str
    layout: Layout
    num_heads: int = 1

    def to_torch(self, array: np.ndarray) -> np.ndarray:
        return self.layout.to_torch(array, self.num_heads)

    def to_flax(self, array: np.ndarray) -> np.ndarray:
        return self.layout.to_flax(array, self.num_heads)


def layout_of(module: nn.Module, torch_name: str) -> tuple[Layout, int]:
    """``(row, num_heads)`` for parameter ``torch_name`` of ``module``, chosen by the type of
    the layer that owns it (and, for attention projections, by the projection's name)."""
    owner_name, _, attr = torch_name.rpartition(".")
    owner = module.get_submodule(owner_name)
    parent_name, _, projection = owner_name.rpartition(".")
    parent = module.get_submodule(parent_name) if owner_name else None
    if isinstance(parent, MultiHeadDotProductAttention) and isinstance(owner, nn.Linear):
        if projection == "out":
            return (HEADS_OUT_KERNEL if attr == "weight" else SAME), parent.num_heads
        return (HEADS_IN_KERNEL if attr == "weight" else HEADS_IN_BIAS), parent.num_heads
    if attr != "weight":
        return SAME, 1
    if isinstance(owner, nn.Conv2d):
        return CONV_KERNEL, 1
    if isinstance(owner, nn.Linear):
        return DENSE_KERNEL, 1
    if isinstance(owner, (nn.LayerNorm, nn.GroupNorm)):
        return NORM_SCALE, 1
    return SAME, 1


def leaf_table(module: nn.Module, prefix: str = "") -> list[LeafMapping]:
    """Every parameter of ``module`` with its Flax path (``prefix`` + ``/``-joined name)."""
    rows = []
    for name, _ in module.named_parameters():
        layout, heads = layout_of(module, name)
        parts = name.split(".")
        if layout.flax_leaf is not None:
            parts[-1] = layout.flax_leaf
        rows.append(LeafMapping(name, prefix + "/".join(parts), layout, heads))
    return rows


def export_flax_params(transformer: nn.Module) -> dict[str, np.ndarray]:
    """The backbone's parameters as flat Flax paths and layouts (inverse of loading)."""
    params = dict(transformer.named_parameters())
    return {
        row.flax_path: row.to_flax(params[row.torch_name].detach().cpu().numpy())
        for row in leaf_table(transformer, BACKBONE_PREFIX)
    }


def t5_flax_to_torch(flax_path: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """A T5 leaf (relative to ``hf_model/``) -> ``(T5EncoderModel key, array)``."""
    parts = flax_path.split("/")
    if parts[-1] == "kernel":
        parts[-1] = "weight"
        array = array.T
    elif parts[-1] == "embedding":
        parts[-1] = "weight"
    return ".".join(parts), array


__all__ = [
    "BACKBONE_PREFIX",
    "LAYOUTS",
    "T5_PREFIX",
    "Layout",
    "LeafMapping",
    "export_flax_params",
    "layout_of",
    "leaf_table",
    "t5_flax_to_torch",
]
