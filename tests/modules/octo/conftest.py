"""Shared helpers for the Octo tests.

``spec_policy_shapes`` restates the parameter tree of /work/shared/notes/octo-spec.md
section 2.4 by hand (names and shapes), independently of the package, so the synthetic
checkpoints the tests write are what the *spec* says the official file holds -- not what
our module happens to contain.
"""

from __future__ import annotations

import numpy as np
import pytest


def spec_policy_shapes(
    *,
    d: int = 384,
    layers: int = 12,
    heads: int = 6,
    mlp: int = 1536,
    features: tuple[int, ...] = (32, 96, 192, 384),
    num_features: int = 512,
    cameras: dict[str, int] | None = None,
    language_dim: int = 768,
    language_tokens: int = 16,
    max_horizon: int = 10,
    action_horizon: int = 4,
    action_dim: int = 7,
    diffusion_head: bool = True,
) -> dict[str, tuple[int, ...]]:
    """``{flax path: shape}`` of the policy tree (everything but T5), spec 2.4."""
    cameras = cameras if cameras is not None else {"primary": 256, "wrist": 64}
    shapes: dict[str, tuple[int, ...]] = {}
    ot = "octo_transformer"
    for cam in cameras:
        p = f"{ot}/observation_tokenizers_{cam}/SmallStem16_0"
        prev = 6
        for i, f in enumerate(features):
            shapes[f"{p}/StdConv_{i}/kernel"] = (3, 3, prev, f)
            shapes[f"{p}/StdConv_{i}/bias"] = (f,)
            shapes[f"{p}/GroupNorm_{i}/scale"] = (f,)
            shapes[f"{p}/GroupNorm_{i}/bias"] = (f,)
            prev = f
        shapes[f"{p}/embedding/kernel"] = (1, 1, prev, num_features)
        shapes[f"{p}/embedding/bias"] = (num_features,)
    shapes[f"{ot}/task_language_projection/kernel"] = (language_dim, d)
    shapes[f"{ot}/task_language_projection/bias"] = (d,)
    shapes[f"{ot}/task_language_pos_embedding"] = (1, language_tokens, d)
    for cam, tokens in cameras.items():
        shapes[f"{ot}/obs_{cam}_projection/kernel"] = (num_features, d)
        shapes[f"{ot}/obs_{cam}_projection/bias"] = (d,)
        shapes[f"{ot}/obs_{cam}_pos_embedding"] = (1, max_horizon, tokens, d)
    shapes[f"{ot}/readout_action_pos_embedding"] = (1, max_horizon, 1, d)
    t = f"{ot}/BlockTransformer_0/Transformer_0"
    hd = d // heads
    for i in range(layers):
        b = f"{t}/encoderblock_{i}"
        shapes[f"{b}/LayerNorm_0/scale"] = (d,)
        shapes[f"{b}/LayerNorm_0/bias"] = (d,)
        for proj in ("query", "key", "value"):
            shapes[f"{b}/MultiHeadDotProductAttention_0/{proj}/kernel"] = (d, heads, hd)
            shapes[f"{b}/MultiHeadDotProductAttention_0/{proj}/bias"] = (heads, hd)
        shapes[f"{b}/MultiHeadDotProductAttention_0/out/kernel"] = (heads, hd, d)
        shapes[f"{b}/MultiHeadDotProductAttention_0/out/bias"] = (d,)
        shapes[f"{b}/LayerNorm_1/scale"] = (d,)
        shapes[f"{b}/LayerNorm_1/bias"] = (d,)
        shapes[f"{b}/MlpBlock_0/Dense_0/kernel"] = (d, mlp)
        shapes[f"{b}/MlpBlock_0/Dense_0/bias"] = (mlp,)
        shapes[f"{b}/MlpBlock_0/Dense_1/kernel"] = (mlp, d)
        shapes[f"{b}/MlpBlock_0/Dense_1/bias"] = (d,)
    shapes[f"{t}/encoder_norm/scale"] = (d,)
    shapes[f"{t}/encoder_norm/bias"] = (d,)
    if diffusion_head:
        h = "heads_action/diffusion_model"
        a = action_horizon * action_dim
        shapes[f"{h}/time_preprocess/kernel"] = (16, 1)
        shapes[f"{h}/cond_encoder/Dense_0/kernel"] = (32, 64)
        shapes[f"{h}/cond_encoder/Dense_0/bias"] = (64,)
        shapes[f"{h}/cond_encoder/Dense_1/kernel"] = (64, 32)
        shapes[f"{h}/cond_encoder/Dense_1/bias"] = (32,)
        shapes[f"{h}/reverse_network/Dense_0/kernel"] = (32 + d + a, 256)
        shapes[f"{h}/reverse_network/Dense_0/bias"] = (256,)
        for k in range(3):
            r = f"{h}/reverse_network/MLPResNetBlock_{k}"
            shapes[f"{r}/LayerNorm_0/scale"] = (256,)
            shapes[f"{r}/LayerNorm_0/bias"] = (256,)
            shapes[f"{r}/Dense_0/kernel"] = (256, 1024)
            shapes[f"{r}/Dense_0/bias"] = (1024,)
            shapes[f"{r}/Dense_1/kernel"] = (1024, 256)
            shapes[f"{r}/Dense_1/bias"] = (256,)
        shapes[f"{h}/reverse_network/Dense_1/kernel"] = (256, a)
        shapes[f"{h}/reverse_network/Dense_1/bias"] = (a,)
    return shapes


def spec_t5_shapes(
    *, vocab: int = 32128, d: int = 768, ff: int = 3072, layers: int = 12, heads: int = 12,
    buckets: int = 32,
) -> dict[str, tuple[int, ...]]:
    """Flax T5 encoder leaves under ``.../hf_model`` (spec 2.4, last table)."""
    f = "octo_transformer/task_tokenizers_language/hf_model"
    shapes = {f"{f}/shared/embedding": (vocab, d)}
    for n in range(layers):
        blk = f"{f}/encoder/block/{n}/layer"
        for w in "qkvo":
            shapes[f"{blk}/0/SelfAttention/{w}/kernel"] = (d, d)
        if n == 0:
            shapes[f"{blk}/0/SelfAttention/relative_attention_bias/embedding"] = (buckets, heads)
        shapes[f"{blk}/0/layer_norm/weight"] = (d,)
        shapes[f"{blk}/1/DenseReluDense/wi/kernel"] = (d, ff)
        shapes[f"{blk}/1/DenseReluDense/wo/kernel"] = (ff, d)
        shapes[f"{blk}/1/layer_norm/weight"] = (d,)
    shapes[f"{f}/encoder/final_layer_norm/weight"] = (d,)
    return shapes


def random_tree(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 leaves; scaled small so a forward pass stays well conditioned."""
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s, dtype=np.float32) * 0.05) for k, s in shapes.items()}


def tiny_spec_kwargs() -> dict:
    """``spec_policy_shapes`` arguments matching ``OctoConfig.tiny()``."""
    return dict(
        d=32, layers=2, heads=2, mlp=64, features=(32, 32, 32, 32), num_features=32,
        cameras={"primary": 4, "wrist": 1},
    )


@pytest.fixture
def spec():
    """Access to the helpers above from tests (conftest modules are not importable
    under --import-mode=importlib)."""

    class _Spec:
        policy_shapes = staticmethod(spec_policy_shapes)
        t5_shapes = staticmethod(spec_t5_shapes)
        random_tree = staticmethod(random_tree)
        tiny_kwargs = staticmethod(tiny_spec_kwargs)

    return _Spec
