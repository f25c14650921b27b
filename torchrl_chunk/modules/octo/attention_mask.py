"""Octo's block-wise attention mask (spec 1.7).

The token sequence is ``[prefix groups]`` followed by, for each window position ``t``,
``[timestep groups]``. Each *query* group carries rules ``{glob pattern: rule}``; a key
token is visible when the first pattern matching its group name (shell glob, e.g.
``"obs_*"``) gives a rule that allows the pair of timesteps. The prefix has timestep -1.
Octo-1.5 rules:

=================  ===============  ===================================  ===============
query \\ key        task_* (prefix)  obs_primary, obs_wrist,              readout_action
                                    obs_task_language
=================  ===============  ===================================  ===============
task_language      causal           never                                never
obs_*              causal           causal                               never
readout_action     causal           causal                               causal
=================  ===============  ===================================  ===============

"causal" means key timestep <= query timestep. Tokens map to groups through the cumulative
token counts: Octo 1.5 uses a right-sided lookup (correct); 1.0 used a left-sided one, which
assigns the first token of every group but the first to the previous group (select it with
``use_correct_attention=False`` to run 1.0 checkpoints as they were trained).
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch


class AttentionRule(str, enum.Enum):
    """When a query at timestep ``tq`` may attend a key at timestep ``tk``."""

    NEVER = "never"
    CAUSAL = "causal"  # tk <= tq
    CURRENT = "current"  # tk == tq
    STRICT_PAST = "strict_past"  # tk < tq
    ALL = "all"


@dataclass(frozen=True)
class TokenGroup:
    """A named block of tokens, with the rules it uses as a *query*.

    Args:
        name: group name (``"task_language"``, ``"obs_primary"``, ``"readout_action"``...).
        num_tokens: tokens in the group (per timestep for timestep groups).
        rules: ``{glob pattern over key group names: AttentionRule}``; the first
            matching pattern wins, no match means never.
    """

    name: str
    num_tokens: int
    rules: Mapping[str, AttentionRule] = field(default_factory=dict)

    def rule_for(self, key_group: str) -> AttentionRule:
        for pattern, rule in self.rules.items():
            if fnmatch.fnmatch(key_group, pattern):
                return AttentionRule(rule)
        return AttentionRule.NEVER


TASK_RULES = {"task_*": AttentionRule.CAUSAL}
OBS_RULES = {"task_*": AttentionRule.CAUSAL, "obs_*": AttentionRule.CAUSAL}


def readout_rules(name: str) -> dict[str, AttentionRule]:
    """A readout sees the task, the observations and its own group (causally)."""
    return {**OBS_RULES, name: AttentionRule.CAUSAL}


def octo_token_groups(
    cameras: Sequence[tuple[str, int]],
    *,
    language_tokens: int | None = 16,
    num_readout_tokens: int = 1,
    repeat_task_tokens: bool = True,
) -> tuple[list[TokenGroup], list[TokenGroup]]:
    """The ``(prefix_groups, timestep_groups)`` layout Octo builds.

    Args:
        cameras: ``(name, tokens_per_image)`` of the image tokenizers in use, in order.
        language_tokens: tokens of the language group, or ``None`` without language.
        num_readout_tokens: tokens of the ``readout_action`` group per timestep.
        repeat_task_tokens: 1.5: add ``obs_task_language`` to every timestep block.
    """
    prefix = []
    if language_tokens is not None:
        prefix.append(TokenGroup("task_language", language_tokens, TASK_RULES))
    steps = [TokenGroup(f"obs_{name}", n, OBS_RULES) for name, n in cameras]
    if repeat_task_tokens and language_tokens is not None:
        steps.append(TokenGroup("obs_task_language", language_tokens, OBS_RULES))
    steps.append(TokenGroup("readout_action", num_readout_tokens, readout_rules("readout_action")))
    return prefix, steps


def _allowed(rule: np.ndarray, tq: np.ndarray, tk: np.ndarray) -> np.ndarray:
    codes = {r: i for i, r in enumerate(AttentionRule)}
    out = np.zeros(np.broadcast_shapes(rule.shape, tq.shape, tk.shape), dtype=bool)
    out |= (rule == codes[AttentionRule.CAUSAL]) & (tk <= tq)
    out |= (rule == codes[AttentionRule.CURRENT]) & (tk == tq)
    out |= (rule == codes[AttentionRule.STRICT_PAST]) & (tk < tq)
    out |= rule == codes[AttentionRule.ALL]
    return out


def token_metadata(
    prefix_groups: Sequence[TokenGroup],
    timestep_groups: Sequence[TokenGroup],
    window: int,
    *,
    use_correct_attention: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Per token of the sequence: the index of its group (prefix groups first, then
    timestep groups) and its timestep (-1 for the prefix), as Octo looks them up."""
    side = "right" if use_correct_attention else "left"
    n_prefix = sum(g.num_tokens for g in prefix_groups)
    per_step = sum(g.num_tokens for g in timestep_groups)
    idx = np.arange(n_prefix + window * per_step)
    group = np.empty_like(idx)
    step = np.empty_like(idx)
    in_prefix = idx < n_prefix
    if n_prefix:
        group[in_prefix] = np.searchsorted(
            np.cumsum([g.num_tokens for g in prefix_groups]), idx[in_prefix], side=side
        )
    step[in_prefix] = -1
    rest = idx[~in_prefix] - n_prefix
    step[~in_prefix], within = np.divmod(rest, per_step)
    group[~in_prefix] = len(prefix_groups) + np.searchsorted(
        np.cumsum([g.num_tokens for g in timestep_groups]), within, side=side
    )
    return group, step


def block_attention_mask(
    prefix_groups: Sequence[TokenGroup],
    timestep_groups: Sequence[TokenGroup],
    window: int,
    *,
    use_correct_attention: bool = True,
) -> np.ndarray:
    """The structural ``[L, L]`` bool mask (row = query, True = may attend)."""
    groups = list(prefix_groups) + list(timestep_groups)
    rules = np.array(
        [[list(AttentionRule).index(q.rule_for(k.name)) for k in groups] for q in groups]
    )
    g, t = token_metadata(
        prefix_groups, timestep_groups, window, use_correct_attention=use_correct_attention
    )
    return _allowed(rules[g[:, None], g[None, :]], t[:, None], t[None, :])


def combine_with_padding(structure: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """``[L, L]`` structure and ``[B, L]`` key validity -> ``[B, 1, L, L]`` (True = attend).

    Only keys are masked (a padded token still computes an output; nobody reads it).
    """
    return structure[None, None] & key_mask[:, None, None, :]
