"""Losses: chunk-level PPO (Eq. 2-5), self behaviour cloning (Eq. 6) and their sum (Eq. 7).

``ChunkClipPPOLoss`` overrides private methods of TorchRL's ``ClipPPOLoss`` (the log-prob,
ratio, key and estimator hooks the chunk maths needs), so it is tied to the TorchRL versions
it was tested with: importing it under another version fails here, with the fix, rather than
deep inside a loss call.
"""

from torchrl_chunk._versions import check_torchrl

check_torchrl()

from torchrl_chunk.objectives.chunk_ppo import ChunkClipPPOLoss
from torchrl_chunk.objectives.ppo_bc import PPOBCLoss
from torchrl_chunk.objectives.self_bc import SelfBCLoss

__all__ = ["ChunkClipPPOLoss", "PPOBCLoss", "SelfBCLoss"]
