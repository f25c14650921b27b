"""Write evaluation rollouts (camera frames) to an MP4 file.

Frames come from :func:`torchrl_chunk.evaluation.evaluate_policy` with
``record_episodes`` (one frame at reset, then one per decision, i.e. every ``h`` env
steps). MetaWorld steps its controller at 80 Hz, so ``fps = 80 / h`` plays a rollout in
real time (:func:`realtime_fps`).

Encoding uses PyAV (``pip install 'torchrl-chunk[video]'``). TorchRL's own video path
(``VideoRecorder`` + a logger) goes through ``torchvision.io``, which would pin a
torchvision build to our torch; PyAV alone carries its FFmpeg.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from torchrl_chunk._deprecation import renamed_kwarg

__all__ = ["CONTROL_HZ", "realtime_fps", "require_pyav", "write_mp4"]

#: MetaWorld's control rate: ``frame_skip`` 5 x MuJoCo timestep 2.5 ms = 12.5 ms per step.
CONTROL_HZ = 80.0


@renamed_kwarg("horizon", "chunk_size")
def realtime_fps(chunk_size: int) -> float:
    """Frames per second that play one-frame-per-decision rollouts of chunks of ``chunk_size``
    (``h``; ``horizon=`` is its deprecated old name) in real time."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    return CONTROL_HZ / chunk_size


def require_pyav():
    """Import PyAV, or raise an ImportError that says how to install it or turn videos off."""
    try:
        import av
    except ImportError as err:
        raise ImportError(
            "writing MP4 needs PyAV: pip install 'torchrl-chunk[video]' (or av), or turn "
            "videos off (recipe: eval.video_episodes=0)."
        ) from err
    return av


def write_mp4(
    episodes: Sequence[np.ndarray], path: str | Path, *, fps: float, gap_frames: int = 4
) -> Path:
    """Encode episodes (each uint8 ``[T, H, W, 3]``) one after another into an H.264 MP4.

    ``gap_frames`` black frames separate consecutive episodes. Odd frame sizes are
    padded by one pixel (H.264 with yuv420p needs even sizes). The file is written to a
    temporary name and renamed, so a crash never leaves a truncated ``path``.
    """
    av = require_pyav()
    episodes = [np.asarray(e) for e in episodes]
    if not episodes:
        raise ValueError("write_mp4 needs at least one episode.")
    shapes = {e.shape[1:] for e in episodes}
    for e in episodes:
        if e.ndim != 4 or e.shape[-1] != 3 or e.dtype != np.uint8 or len(e) == 0:
            raise ValueError(
                f"each episode must be a non-empty uint8 array [T, H, W, 3], got {e.dtype} {e.shape}."
            )
    if len(shapes) != 1:
        raise ValueError(f"all episodes must share one frame size, got {sorted(shapes)}.")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}.")
    if gap_frames < 0:
        raise ValueError(f"gap_frames must be >= 0, got {gap_frames}.")
    height, width, _ = shapes.pop()
    pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
    gap = np.zeros((gap_frames, height, width, 3), np.uint8)
    frames = np.concatenate([part for e in episodes for part in (gap, e)][1:])
    frames = np.pad(frames, pad)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path
