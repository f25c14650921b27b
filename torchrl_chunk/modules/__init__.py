"""Policies: chunk heads shared by every backbone, and the backbones themselves.

* :mod:`.heads` -- the paper's single-Linear chunk-Gaussian and value heads, and
  :func:`make_chunk_actor_critic` that puts them on any backbone;
* :mod:`.mlp` -- the CPU default (state MLP + task embedding);
* :mod:`.pixel` -- a small CNN on the camera image + task embedding;
* :mod:`.vla` -- TorchRL's continuous VLAs (``torchrl.modules.vla``, e.g. ``TinyVLA``) as
  chunk-Gaussian actors with a critic on their trunk (:func:`make_vla_actor_critic`);
* :mod:`.octo` -- the Octo-small port (import ``torchrl_chunk.modules.octo``);
* :mod:`.precision` -- bf16 autocast with fp32 weights (``with_precision`` for acting).
"""

from torchrl_chunk.modules.heads import (
    EMBEDDING_KEY,
    ChunkGaussianHead,
    ValueHead,
    chunk_head,
    make_chunk_actor_critic,
)
from torchrl_chunk.modules.mlp import StateEncoder, make_mlp_actor_critic, observation_stats
from torchrl_chunk.modules.pixel import PixelEncoder, make_pixel_actor_critic
from torchrl_chunk.modules.precision import AutocastPolicy, with_precision
from torchrl_chunk.precision import PRECISIONS
from torchrl_chunk.modules.vla import VLAChunkBackbone, VLAChunkScale, make_vla_actor_critic

__all__ = [
    "EMBEDDING_KEY",
    "PRECISIONS",
    "AutocastPolicy",
    "ChunkGaussianHead",
    "PixelEncoder",
    "StateEncoder",
    "VLAChunkBackbone",
    "VLAChunkScale",
    "ValueHead",
    "chunk_head",
    "make_chunk_actor_critic",
    "make_mlp_actor_critic",
    "make_pixel_actor_critic",
    "make_vla_actor_critic",
    "observation_stats",
    "with_precision",
]
