"""The one Flax <-> torch correspondence table: complete, exact in both directions, and
giving the spec's leaf names and shapes (``conftest.spec_policy_shapes``, restated by hand)."""

from __future__ import annotations

import numpy as np
import torch

from torchrl_chunk.modules.octo import OctoConfig, OctoTransformer, export_flax_params
from torchrl_chunk.modules.octo.flax_layout import BACKBONE_PREFIX, LAYOUTS, leaf_table


def test_table_gives_the_spec_names_and_shapes(spec):
    m = OctoTransformer(OctoConfig.tiny())
    want = {
        k: s for k, s in spec.policy_shapes(**spec.tiny_kwargs()).items() if k.startswith(BACKBONE_PREFIX)
    }
    got = {k: v.shape for k, v in export_flax_params(m).items()}
    assert got == want
    # every row of the table is used by the backbone (no dead row, no unlisted layout)
    assert {row.layout.name for row in leaf_table(m)} == {layout.name for layout in LAYOUTS}


def test_read_and_write_are_exact_inverses(spec):
    m = OctoTransformer(OctoConfig.tiny())
    params = dict(m.named_parameters())
    flat = spec.random_tree(spec.policy_shapes(**spec.tiny_kwargs()), seed=11)
    for row in leaf_table(m, BACKBONE_PREFIX):
        p = params[row.torch_name].detach().numpy()
        assert np.array_equal(row.to_torch(row.to_flax(p)), p), row.torch_name
        x = flat[row.flax_path]
        back = row.to_flax(row.to_torch(x))
        assert back.shape == x.shape and np.array_equal(back, x), row.flax_path
        # names mirror each other: the torch name is the Flax path with / -> . and
        # kernel/scale -> weight
        parts = row.flax_path[len(BACKBONE_PREFIX) :].split("/")
        if parts[-1] in ("kernel", "scale"):
            parts[-1] = "weight"
        assert ".".join(parts) == row.torch_name


def test_attention_rows_are_head_major():
    m = OctoTransformer(OctoConfig.tiny())  # 2 heads of width 16
    attn = m.BlockTransformer_0.Transformer_0.encoderblock_1.MultiHeadDotProductAttention_0
    with torch.no_grad():
        for lin in (attn.query, attn.out):
            lin.weight.copy_(torch.arange(lin.weight.numel(), dtype=torch.float32).view_as(lin.weight))
    flat = export_flax_params(m)
    pre = f"{BACKBONE_PREFIX}BlockTransformer_0/Transformer_0/encoderblock_1/MultiHeadDotProductAttention_0"
    q, o = flat[f"{pre}/query/kernel"], flat[f"{pre}/out/kernel"]  # (D, H, d), (H, d, D)
    assert q.shape == (32, 2, 16) and o.shape == (2, 16, 32)
    assert np.array_equal(q[:, 1, 5], attn.query.weight[16 + 5].detach().numpy())
    assert np.array_equal(o[1, 7], attn.out.weight[:, 16 + 7].detach().numpy())
