"""The block-wise attention mask against hand-written expectations (spec 1.7)."""

from __future__ import annotations

import numpy as np
import torch

from torchrl_chunk.modules.octo import OctoConfig, OctoTransformer
from torchrl_chunk.modules.octo.attention_mask import (
    block_attention_mask,
    combine_with_padding,
    octo_token_groups,
)


def grid(text: str) -> np.ndarray:
    rows = [r.split("|")[1].split() for r in text.strip().splitlines()]
    return np.array([[c == "1" for c in r] for r in rows])


# Octo 1.5, W = 2: prefix L (2 tokens); per step: P (2 obs_primary), T (2 obs_task_language),
# R (1 readout_action). Columns in sequence order.
EXPECTED_15 = grid(
    """
    L   | 1 1  0 0 0 0 0  0 0 0 0 0
    L   | 1 1  0 0 0 0 0  0 0 0 0 0
    P0  | 1 1  1 1 1 1 0  0 0 0 0 0
    P0  | 1 1  1 1 1 1 0  0 0 0 0 0
    T0  | 1 1  1 1 1 1 0  0 0 0 0 0
    T0  | 1 1  1 1 1 1 0  0 0 0 0 0
    R0  | 1 1  1 1 1 1 1  0 0 0 0 0
    P1  | 1 1  1 1 1 1 0  1 1 1 1 0
    P1  | 1 1  1 1 1 1 0  1 1 1 1 0
    T1  | 1 1  1 1 1 1 0  1 1 1 1 0
    T1  | 1 1  1 1 1 1 0  1 1 1 1 0
    R1  | 1 1  1 1 1 1 1  1 1 1 1 1
    """
)

# Octo 1.0, W = 2: no repeated language; per step P (2), R (1). The left-sided lookup maps
# the readout token to the obs_primary group, so it behaves (and is seen) as an observation.
EXPECTED_10 = grid(
    """
    L   | 1 1  0 0 0  0 0 0
    L   | 1 1  0 0 0  0 0 0
    P0  | 1 1  1 1 1  0 0 0
    P0  | 1 1  1 1 1  0 0 0
    R0  | 1 1  1 1 1  0 0 0
    P1  | 1 1  1 1 1  1 1 1
    P1  | 1 1  1 1 1  1 1 1
    R1  | 1 1  1 1 1  1 1 1
    """
)


def test_mask_octo15_two_step_window_matches_hand_written():
    prefix, steps = octo_token_groups([("primary", 2)], language_tokens=2, repeat_task_tokens=True)
    assert [g.name for g in prefix] == ["task_language"]
    assert [g.name for g in steps] == ["obs_primary", "obs_task_language", "readout_action"]
    mask = block_attention_mask(prefix, steps, window=2, use_correct_attention=True)
    np.testing.assert_array_equal(mask, EXPECTED_15)


def test_mask_octo10_legacy_lookup_matches_hand_written():
    prefix, steps = octo_token_groups([("primary", 2)], language_tokens=2, repeat_task_tokens=False)
    mask = block_attention_mask(prefix, steps, window=2, use_correct_attention=False)
    np.testing.assert_array_equal(mask, EXPECTED_10)
    # Same layout with the correct lookup: readouts are not visible to observations.
    correct = block_attention_mask(prefix, steps, window=2, use_correct_attention=True)
    assert not correct[2, 4] and EXPECTED_10[2, 4]


def test_mask_full_size_density_matches_spec():
    # Spec 1.7: 73.4% of the 562 x 562 (primary only) and 73.7% of the 690 x 690 mask.
    for cameras, length, density in (
        ([("primary", 256)], 562, 0.734),
        ([("primary", 256), ("wrist", 64)], 690, 0.737),
    ):
        prefix, steps = octo_token_groups(cameras)
        mask = block_attention_mask(prefix, steps, window=2)
        assert mask.shape == (length, length)
        assert abs(mask.mean() - density) < 5e-4, mask.mean()


def test_padding_masks_keys_only():
    prefix, steps = octo_token_groups([("primary", 2)], language_tokens=2)
    structure = torch.from_numpy(block_attention_mask(prefix, steps, window=2))
    key = torch.ones(1, 12, dtype=torch.bool)
    key[0, 2:4] = False  # first-timestep image padded
    full = combine_with_padding(structure, key)
    assert full.shape == (1, 1, 12, 12)
    expected = torch.from_numpy(EXPECTED_15).clone()
    expected[:, 2:4] = False
    assert torch.equal(full[0, 0], expected)


def test_model_uses_version_specific_layout():
    cfg15 = OctoConfig.tiny()
    cfg10 = OctoConfig.tiny(repeat_task_tokens=False, use_correct_attention=False)
    assert cfg15.version == "1.5" and cfg10.version == "1.0"
    m15, m10 = OctoTransformer(cfg15), OctoTransformer(cfg10)
    s15 = m15.structural_mask(("primary",), 2, True, torch.device("cpu"))
    s10 = m10.structural_mask(("primary",), 2, True, torch.device("cpu"))
    assert s15.shape == (16 + 2 * (4 + 16 + 1),) * 2
    assert s10.shape == (16 + 2 * (4 + 1),) * 2
