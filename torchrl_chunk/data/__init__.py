"""Data: the length-filtered demonstration buffer of self behaviour cloning."""

from torchrl_chunk.data.admission import AdmissionReport, admit, plan_eviction
from torchrl_chunk.data.demo_buffer import LengthFilteredReplayBuffer

__all__ = ["AdmissionReport", "LengthFilteredReplayBuffer", "admit", "plan_eviction"]
