"""MP4 writing of evaluation rollouts."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from torchrl_chunk.video import CONTROL_HZ, realtime_fps, write_mp4

av = pytest.importorskip("av")


def _episode(t, h=31, w=33, value=0):
    rng = np.random.default_rng(value)
    return rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8)


def test_write_mp4_round_trip(tmp_path):
    path = write_mp4([_episode(5), _episode(7, value=1)], tmp_path / "sub" / "eval.mp4", fps=20, gap_frames=3)
    assert path.exists() and not (tmp_path / "sub" / "eval.mp4.tmp").exists()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(20)
    assert len(frames) == 5 + 3 + 7
    assert frames[0].shape == (32, 34, 3)  # odd sizes padded to even
    assert frames[5].max() < 20  # the black gap between episodes


def test_realtime_fps_matches_metaworld_control_rate():
    from torchrl_chunk.envs.metaworld import MetaWorldEnv

    env = MetaWorldEnv("reach-v3", num_envs=1)
    try:
        assert 1.0 / env._sims[0].raw.dt == pytest.approx(CONTROL_HZ)
    finally:
        env.close()
    assert realtime_fps(4) == realtime_fps(chunk_size=4) == 20.0
    with pytest.raises(ValueError, match="chunk_size"):
        realtime_fps(0)
    with pytest.warns(DeprecationWarning, match="`horizon=` is deprecated, use `chunk_size=`"):
        assert realtime_fps(horizon=4) == 20.0


def test_write_mp4_bad_input(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4([np.zeros((2, 8, 8, 3), np.float32)], tmp_path / "a.mp4", fps=10)
    with pytest.raises(ValueError, match="one frame size"):
        write_mp4([_episode(2, 8, 8), _episode(2, 10, 10)], tmp_path / "a.mp4", fps=10)
    with pytest.raises(ValueError, match="at least one"):
        write_mp4([], tmp_path / "a.mp4", fps=10)
    with pytest.raises(ValueError, match="fps"):
        write_mp4([_episode(2)], tmp_path / "a.mp4", fps=0)
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"torchrl-chunk\[video\]"):
        write_mp4([_episode(2)], tmp_path / "a.mp4", fps=10)
    assert not list(tmp_path.iterdir())
