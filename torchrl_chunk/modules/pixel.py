"""A small pixel + language policy: a CNN on the camera image plus a task embedding.

A CPU-sized stand-in for a VLA that sees what Octo sees (the 128 px frame from the
paper's camera and the task instruction) without pretrained weights. Same interface as
every backbone here: it writes ``"embedding"`` for the shared chunk/value heads.
"""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModule
from torch import nn

from torchrl_chunk._deprecation import renamed_kwarg
from torchrl_chunk.keys import IMAGE_KEY, TASK_ID_KEY
from torchrl_chunk.modules.heads import EMBEDDING_KEY, make_chunk_actor_critic


class PixelEncoder(nn.Module):
    """``(image uint8 [*B, H, W, 3], task_id [*B, 1]) -> embedding [*B, embed_dim]``.

    Four stride-2 3x3 convolutions (32 channels, GroupNorm, ReLU), global average pooling
    over what remains of the image, the task embedding concatenated, and a Linear + ReLU.
    """

    def __init__(
        self, *, channels: int = 32, embed_dim: int = 256, num_tasks: int = 10, task_embed_dim: int = 16
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for _ in range(4):
            layers += [nn.Conv2d(c_in, channels, 3, stride=2, padding=1), nn.GroupNorm(8, channels), nn.ReLU()]
            c_in = channels
        self.conv = nn.Sequential(*layers)
        self.task_embed = nn.Embedding(num_tasks, task_embed_dim)
        self.out = nn.Sequential(nn.Linear(channels * 16 + task_embed_dim, embed_dim), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.embed_dim = embed_dim

    def forward(self, image: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] != 3 or image.dtype != torch.uint8:
            raise ValueError(
                f"PixelEncoder expects uint8 HWC images [*B, H, W, 3], got {image.dtype} "
                f"{tuple(image.shape)}; build the env with from_pixels=True."
            )
        batch = image.shape[:-3]
        x = image.reshape(-1, *image.shape[-3:]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        x = self.pool(self.conv(x)).flatten(1)
        x = torch.cat([x, self.task_embed(task_id.reshape(-1).long())], -1)
        return self.out(x).reshape(*batch, -1)


@renamed_kwarg("horizon", "chunk_size")
def make_pixel_actor_critic(
    *,
    chunk_size: int = 4,
    action_dim: int = 4,
    channels: int = 32,
    embed_dim: int = 256,
    num_tasks: int = 10,
    separate_critic: bool = False,
    log_std_init: float = -1.0,
):
    """Actor and critic over :class:`PixelEncoder` (shared trunk by default, as in Fig. 1(a)).

    ``chunk_size`` is the chunk size ``h`` (``horizon=`` is its deprecated old name).
    """

    def encoder():
        return TensorDictModule(
            PixelEncoder(channels=channels, embed_dim=embed_dim, num_tasks=num_tasks),
            in_keys=[IMAGE_KEY, TASK_ID_KEY],
            out_keys=[EMBEDDING_KEY],
        )

    return make_chunk_actor_critic(
        encoder(), embed_dim, chunk_size, action_dim,
        critic_backbone=encoder() if separate_critic else None, log_std_init=log_std_init,
    )


__all__ = ["PixelEncoder", "make_pixel_actor_critic"]
