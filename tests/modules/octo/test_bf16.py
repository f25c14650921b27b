"""Octo under bf16 autocast: the attention bias is built in the compute dtype (finite,
aligned), fully masked rows keep Flax's uniform attention, fp32 is unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torchrl_chunk.modules.octo import OctoConfig, OctoTransformer
from torchrl_chunk.modules.octo import transformer as transformer_module
from torchrl_chunk.modules.octo.transformer import BIAS_ALIGNMENT, attention_bias


def inputs(b=3, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    images = {"primary": torch.randint(0, 256, (b, 2, 3, 32, 32), generator=g).float()}
    language = torch.randn(b, 16, 768, generator=g)
    mask = torch.ones(b, dtype=torch.bool)
    mask[0] = False  # sample 0 has no instruction: its language queries see no key at all
    return {k: v.to(device) for k, v in images.items()}, language.to(device), mask.to(device)


def model(device="cpu"):
    torch.manual_seed(0)
    return OctoTransformer(OctoConfig.tiny()).to(device).eval()


def capture_masks(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append((q.dtype, attn_mask))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(transformer_module.F, "scaled_dot_product_attention", spy)
    return seen


def test_bias_in_the_compute_dtype_and_aligned(monkeypatch):
    seen = capture_masks(monkeypatch)
    net = model()
    images, language, mask = inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        net(images, language, language_mask=mask)
    assert len(seen) == net.config.num_layers
    for q_dtype, bias in seen:
        # a bias in the query dtype is what CUDA's memory-efficient kernel accepts
        assert q_dtype == bias.dtype == torch.bfloat16
        assert torch.isfinite(bias).all() and bias.min() == torch.finfo(torch.bfloat16).min
        assert all(s % BIAS_ALIGNMENT == 0 for s in bias.stride()[:-1]) and bias.stride(-1) == 1
    seen.clear()
    with torch.no_grad():
        net(images, language, language_mask=mask)
    assert all(q_dtype == bias.dtype == torch.float32 for q_dtype, bias in seen)


def test_aligned_bias_has_the_same_values():
    m = torch.rand(2, 1, 37, 37) > 0.3
    for dtype in (torch.float32, torch.bfloat16):
        aligned = attention_bias(m, dtype, align=True)
        assert aligned.shape == m.shape and aligned.stride(-2) == 48
        assert torch.equal(aligned, attention_bias(m, dtype))


def test_bf16_matches_fp32_also_on_fully_masked_rows():
    """The fp32 minimum is -inf in bf16: cast as such, a fully masked row (here the
    language tokens of a sample without instruction) got zeros instead of the uniform
    average Flax gives, far outside bf16 rounding."""
    net = model()
    images, language, mask = inputs()
    with torch.no_grad():
        ref = net(images, language, language_mask=mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(images, language, language_mask=mask)
    for name in ("task_language", "readout_action", "obs_primary"):
        err = (low[name].float() - ref[name]).abs().max().item()
        assert err < 0.1, (name, err)


def test_a_float32_bias_under_autocast_stays_finite():
    """The layer itself also accepts a bias made for another dtype."""
    attn = transformer_module.MultiHeadDotProductAttention(8, 2)
    x = torch.randn(2, 5, 8)
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    mask[0, :, 1] = False  # query 1 of sample 0 sees nothing
    with torch.no_grad():
        ref = attn(x, attention_bias(mask, torch.float32))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = attn(x, attention_bias(mask, torch.float32))
    assert (low.float() - ref).abs().max() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_efficient_kernel_accepts_the_bf16_bias():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    net = model("cuda")
    images, language, mask = inputs(device="cuda")
    with torch.no_grad():
        ref = net(images, language, language_mask=mask)
        # only the memory-efficient kernel allowed: raises if it cannot take the bias
        with sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            low = net(images, language, language_mask=mask)
    for name in ("task_language", "readout_action"):
        assert (low[name].float() - ref[name]).abs().max() < 0.1
