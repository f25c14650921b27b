"""Losses: chunk-level PPO (Eq. 2-5), self behaviour cloning (Eq. 6) and their sum (Eq. 7)."""

from torchrl_chunk.objectives.chunk_ppo import ChunkClipPPOLoss
from torchrl_chunk.objectives.ppo_bc import PPOBCLoss
from torchrl_chunk.objectives.self_bc import SelfBCLoss

__all__ = ["ChunkClipPPOLoss", "PPOBCLoss", "SelfBCLoss"]
