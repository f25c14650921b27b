"""Traceable toy trajectories for the demo-buffer tests (tests/data)."""

import torch
from tensordict import TensorDict

A, OBS, PX = 2, 5, 16  # action size, state size, image side


def traj(T, success=True, tag=0.0, image=False):
    """A per-step trajectory; observation and action encode (tag, t) so rows can be traced."""
    t = torch.arange(T, dtype=torch.float32)
    td = TensorDict(
        {
            ("observation", "state"): (tag + t).unsqueeze(-1).expand(T, OBS).clone(),
            "action": (tag + t / 100).unsqueeze(-1).expand(T, A).clone(),
            ("next", "done"): torch.zeros(T, 1, dtype=torch.bool),
            ("next", "success"): torch.zeros(T, 1, dtype=torch.bool),
            "is_init": (t == 0).unsqueeze(-1),  # TorchRL's InitTracker: the episode's first step
        },
        [T],
    )
    if image:  # what an env with from_pixels=True returns, and its next observation
        td["observation", "image"] = torch.randint(0, 256, (T, PX, PX, 3), dtype=torch.uint8)
        td["next", "observation", "image"] = torch.randint(0, 256, (T, PX, PX, 3), dtype=torch.uint8)
    td["next", "done"][-1] = True
    td["next", "success"][-1] = success
    return td


H = 4  # the chunk length of the buffer tests


def chunked_traj(steps, success=True):
    """A trajectory from ChunkedEnv: one row per decision, chunks [T, H, A]."""
    T = len(steps)
    td = TensorDict(
        {
            ("observation", "state"): torch.randn(T, OBS),
            "action": torch.randn(T, H, A) * 3,  # raw Gaussian samples, partly out of bounds
            ("next", "steps_executed"): torch.tensor(steps).view(T, 1),
            "steps_executed": torch.tensor([0, *steps[:-1]]).view(T, 1),  # 0: first decision
            ("next", "done"): torch.zeros(T, 1, dtype=torch.bool),
            ("next", "success"): torch.zeros(T, 1, dtype=torch.bool),
        },
        [T],
    )
    td["next", "done"][-1] = True
    td["next", "success"][-1] = success
    return td
