"""A tiny deterministic env with known dynamics for ChunkedEnv tests.

``CountingEnv`` counts steps per env. The reward of a step is the first action entry
(so chunk reward sums are exact and chosen by the test), the observation is the step
count, the episode terminates with ``success`` when the count reaches ``terminate_at``
(per env) and truncates when it reaches ``max_steps``. It is batch-locked and honours
``"_step"``; skipped envs return their previous outputs (stale reward included), like
TorchRL's ``SerialEnv``/``ParallelEnv`` do, so any code that reads skipped slots shows
up as a wrong sum. ``executed`` counts the actions each env really executed.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase


class CountingEnv(EnvBase):
    def __init__(self, terminate_at=(3,), max_steps: int = 100, batched: bool = True):
        terminate_at = torch.as_tensor(terminate_at, dtype=torch.int64)
        batch = (len(terminate_at),) if batched else ()
        if not batched:
            assert terminate_at.numel() == 1
        super().__init__(batch_size=torch.Size(batch))
        self.terminate_at = terminate_at.reshape(*batch, 1)
        self.max_steps = max_steps
        self.observation_spec = Composite(
            observation=Composite(
                state=Unbounded((*batch, 1), dtype=torch.float32), shape=batch
            ),
            success=Categorical(2, (*batch, 1), dtype=torch.bool),
            shape=batch,
        )
        self.action_spec = Bounded(-10.0, 10.0, (*batch, 2))
        self.reward_spec = Unbounded((*batch, 1))
        self.full_done_spec = Composite(
            done=Categorical(2, (*batch, 1), dtype=torch.bool),
            terminated=Categorical(2, (*batch, 1), dtype=torch.bool),
            truncated=Categorical(2, (*batch, 1), dtype=torch.bool),
            shape=batch,
        )
        self.count = torch.zeros(*batch, 1, dtype=torch.int64)
        self.executed = torch.zeros(*batch, 1, dtype=torch.int64)
        self._last = None

    def _obs(self):
        term = self.count >= self.terminate_at
        trunc = (self.count >= self.max_steps) & ~term
        return TensorDict(
            {
                ("observation", "state"): self.count.float(),
                "success": term.clone(),
                "terminated": term.clone(),
                "truncated": trunc,
                "done": term | trunc,
            },
            self.batch_size,
        )

    def _reset(self, tensordict=None, **kwargs):
        reset = None if tensordict is None else tensordict.get("_reset", None)
        if reset is None:
            self.count.zero_()
        else:
            self.count = torch.where(reset.reshape(self.count.shape), 0, self.count)
        out = self._obs()
        self._last = None
        return out

    def _step(self, tensordict):
        action = tensordict.get("action")
        mask = tensordict.get("_step", None)
        mask = (
            torch.ones_like(self.count, dtype=torch.bool)
            if mask is None
            else mask.reshape(self.count.shape)
        )
        self.count = self.count + mask.long()
        self.executed = self.executed + mask.long()
        out = self._obs()
        out.set("reward", action[..., :1].clone())
        if self._last is not None:
            # skipped envs return stale outputs, like SerialEnv / ParallelEnv do
            out = torch.where(mask.reshape(self.batch_size), out, self._last)
        self._last = out.clone()
        return out

    def _set_seed(self, seed):
        pass
