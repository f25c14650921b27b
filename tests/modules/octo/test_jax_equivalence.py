"""Layer-level equivalence with ``flax.linen`` run in JAX on CPU (same weights).

Each test draws Flax-layout parameters, runs the Flax module, converts the parameters
with the checkpoint loader's own correspondence table (``flax_layout.leaf_table``) and compares the
torch output. Tolerance: max |torch - flax| <= 1e-5 * max(1, max |flax|).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("JAX_PLATFORMS", "cpu")
jax = pytest.importorskip("jax", reason="jax not installed (pip install 'torchrl_chunk[test]')")
flax = pytest.importorskip("flax", reason="flax not installed")
import flax.linen as fnn  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax.traverse_util import flatten_dict  # noqa: E402

from torchrl_chunk.modules.octo.flax_layout import leaf_table  # noqa: E402
from torchrl_chunk.modules.octo.tokenizers import SmallStem, StdConv  # noqa: E402
from torchrl_chunk.modules.octo.transformer import (  # noqa: E402
    EncoderBlock,
    MlpBlock,
    MultiHeadDotProductAttention,
)

pytestmark = pytest.mark.jax
TOL = 1e-5


def close(torch_out: torch.Tensor, flax_out, tol: float = TOL) -> None:
    ref = np.asarray(flax_out, dtype=np.float64)
    got = torch_out.detach().numpy().astype(np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    err = np.abs(got - ref).max()
    scale = max(1.0, np.abs(ref).max())
    print(f"max abs err {err:.2e} (reference max {scale:.3g})")
    assert err <= tol * scale, f"max abs err {err:.3e} > {tol} * {scale:.3g}"


def init(module: fnn.Module, *inputs, seed: int = 0, **kw):
    params = module.init(jax.random.PRNGKey(seed), *inputs, **kw)["params"]
    # Perturb every leaf so biases / norm scales are not at their trivial init.
    flat = flatten_dict(params, sep="/")
    rng = np.random.default_rng(seed)
    flat = {k: np.asarray(v) + 0.1 * rng.standard_normal(v.shape).astype(np.float32) for k, v in flat.items()}
    return flat


def unflat(flat):
    from flax.traverse_util import unflatten_dict

    return unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in flat.items()})


def load(module: torch.nn.Module, flat: dict) -> None:
    """Load flat Flax leaves (paths relative to the module) with the loader's table."""
    rows = leaf_table(module)
    assert {r.flax_path for r in rows} == set(flat)  # every leaf used, every tensor filled
    state = {r.torch_name: torch.from_numpy(np.ascontiguousarray(r.to_torch(flat[r.flax_path]))) for r in rows}
    module.load_state_dict(state, strict=True)


def rand(*shape, seed=1, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ----------------------------------------------------------------------- reference modules
class FlaxStdConv(fnn.Conv):
    """Weight-standardised conv as Octo defines it: (w - mean) / (std + 1e-5) over HWI."""

    def param(self, name, *args, **kwargs):
        p = super().param(name, *args, **kwargs)
        if name == "kernel":
            p = p - jnp.mean(p, axis=(0, 1, 2))
            p = p / (jnp.std(p, axis=(0, 1, 2)) + 1e-5)
        return p


class FlaxSmallStem(fnn.Module):
    features: tuple = (32, 96, 192, 384)
    num_features: int = 512

    @fnn.compact
    def __call__(self, x):
        for i, f in enumerate(self.features):
            x = FlaxStdConv(f, (3, 3), (2, 2), padding=((1, 1), (1, 1)), name=f"StdConv_{i}")(x)
            x = fnn.GroupNorm(num_groups=32, epsilon=1e-6, name=f"GroupNorm_{i}")(x)
            x = fnn.relu(x)
        x = fnn.Conv(self.num_features, (1, 1), (1, 1), padding="VALID", name="embedding")(x)
        return x.reshape(x.shape[0], -1, x.shape[-1])


class FlaxMlp(fnn.Module):
    mlp_dim: int

    @fnn.compact
    def __call__(self, x):
        d = x.shape[-1]
        x = fnn.Dense(self.mlp_dim, name="Dense_0")(x)
        x = fnn.gelu(x)  # approximate=True is jax's default (tanh form)
        return fnn.Dense(d, name="Dense_1")(x)


class FlaxBlock(fnn.Module):
    heads: int
    mlp_dim: int

    @fnn.compact
    def __call__(self, x, mask):
        y = fnn.LayerNorm(epsilon=1e-6, name="LayerNorm_0")(x)
        y = fnn.MultiHeadDotProductAttention(num_heads=self.heads, name="MultiHeadDotProductAttention_0")(
            y, y, mask=mask, deterministic=True
        )
        x = x + y
        y = fnn.LayerNorm(epsilon=1e-6, name="LayerNorm_1")(x)
        return x + FlaxMlp(self.mlp_dim, name="MlpBlock_0")(y)


# ----------------------------------------------------------------------- tests
def test_conv_hwio_kernel():
    x = rand(2, 16, 16, 6)
    mod = fnn.Conv(32, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    flat = init(mod, x)
    ref = mod.apply({"params": unflat(flat)}, x)
    conv = torch.nn.Conv2d(6, 32, 3, stride=2, padding=1)
    load(conv, flat)
    out = conv(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    close(out, ref)


def test_std_conv():
    x = rand(2, 16, 16, 32)
    mod = FlaxStdConv(96, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    flat = init(mod, x)
    ref = mod.apply({"params": unflat(flat)}, x)
    conv = StdConv(32, 96, 3, stride=2, padding=1)
    load(conv, flat)
    close(conv(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1), ref)


@pytest.mark.parametrize("channels", [32, 96])  # 1 and 3 channels per group
def test_group_norm(channels):
    x = rand(2, 8, 8, channels, scale=3.0) + 0.5
    mod = fnn.GroupNorm(num_groups=32, epsilon=1e-6)
    flat = init(mod, x)
    ref = mod.apply({"params": unflat(flat)}, x)
    gn = torch.nn.GroupNorm(32, channels, eps=1e-6)
    load(gn, flat)
    close(gn(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1), ref)


def test_layer_norm():
    x = rand(2, 7, 384, scale=2.0)
    mod = fnn.LayerNorm(epsilon=1e-6)
    flat = init(mod, x)
    ref = mod.apply({"params": unflat(flat)}, x)
    ln = torch.nn.LayerNorm(384, eps=1e-6)
    load(ln, flat)
    close(ln(torch.from_numpy(x)), ref)


def test_dense_and_tanh_gelu_mlp():
    x = rand(2, 5, 384)
    mod = FlaxMlp(1536)
    flat = init(mod, x)
    ref = mod.apply({"params": unflat(flat)}, x)
    mlp = MlpBlock(384, 1536)
    load(mlp, flat)
    close(mlp(torch.from_numpy(x)), ref)
    # and the exact-erf GELU would NOT pass: the port really uses the tanh form
    exact = mlp.Dense_1(torch.nn.functional.gelu(mlp.Dense_0(torch.from_numpy(x))))
    assert np.abs(exact.detach().numpy() - np.asarray(ref)).max() > 1e-5


def test_multi_head_attention_with_mask_and_fully_masked_row():
    x = rand(2, 9, 384)
    mask = np.random.default_rng(3).random((2, 1, 9, 9)) > 0.4
    mask[:, :, np.arange(9), np.arange(9)] = True
    mask[1, :, 0, :] = False  # a fully masked query row: Flax gives uniform weights
    mod = fnn.MultiHeadDotProductAttention(num_heads=6)
    flat = init(mod, x, x, mask=jnp.asarray(mask))
    assert flat["query/kernel"].shape == (384, 6, 64) and flat["out/kernel"].shape == (6, 64, 384)
    ref = mod.apply({"params": unflat(flat)}, x, x, mask=jnp.asarray(mask))
    attn = MultiHeadDotProductAttention(384, 6)
    load(attn, flat)
    out = attn(torch.from_numpy(x), torch.from_numpy(mask))
    assert torch.isfinite(out).all()
    close(out, ref)


def test_encoder_block():
    x = rand(2, 11, 384)
    mask = np.tril(np.ones((11, 11), bool))[None, None].repeat(2, 0)
    mod = FlaxBlock(heads=6, mlp_dim=1536)
    flat = init(mod, x, jnp.asarray(mask))
    ref = mod.apply({"params": unflat(flat)}, x, jnp.asarray(mask))
    block = EncoderBlock(384, 6, 1536, eps=1e-6)
    load(block, flat)
    close(block(torch.from_numpy(x), torch.from_numpy(mask)), ref)


def test_small_stem16_six_channel_input():
    # 32 px keeps it quick; the stem is size-agnostic (256 px -> 16x16 tokens likewise).
    img = np.random.default_rng(4).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    goal = np.zeros_like(img)
    x = np.concatenate([img, goal], -1).astype(np.float32) / 127.5 - 1.0
    mod = FlaxSmallStem()
    flat = init(mod, x)
    ref = mod.apply({"params": unflat(flat)}, x)
    stem = SmallStem()
    load(stem, flat)
    out = stem(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert out.shape == (2, 4, 512)  # 2x2 tokens, row-major like NHWC
    close(out, ref)
