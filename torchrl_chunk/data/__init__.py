"""Data: the length-filtered demonstration buffer of self behaviour cloning."""

from torchrl_chunk.data.admission import AdmissionReport, admit, plan_eviction
from torchrl_chunk.data.demo_buffer import LengthFilteredReplayBuffer
from torchrl_chunk.data.demo_sources import (
    DemoSourceError, DemoSourceInfo, inspect_demo_source, load_lerobot_demos, load_replay_buffer_demos,
    save_lerobot_demos)
from torchrl_chunk.data.length_limit import AdaptiveLengthLimit
from torchrl_chunk.data.row_storage import BufferFootprint

__all__ = ["AdaptiveLengthLimit", "AdmissionReport", "BufferFootprint", "DemoSourceError", "DemoSourceInfo",
           "LengthFilteredReplayBuffer", "admit", "inspect_demo_source", "load_lerobot_demos",
           "load_replay_buffer_demos", "plan_eviction", "save_lerobot_demos"]
