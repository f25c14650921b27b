"""Policies: chunk heads shared by every backbone, and the backbones themselves."""

from torchrl_chunk.modules.heads import (
    EMBEDDING_KEY,
    ChunkGaussianHead,
    ValueHead,
    make_chunk_actor_critic,
)

__all__ = ["EMBEDDING_KEY", "ChunkGaussianHead", "ValueHead", "make_chunk_actor_critic"]
