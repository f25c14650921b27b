"""Data: the length-filtered demonstration buffer of self behaviour cloning."""

from torchrl_chunk.data.demo_buffer import AdmissionReport, LengthFilteredReplayBuffer

__all__ = ["AdmissionReport", "LengthFilteredReplayBuffer"]
