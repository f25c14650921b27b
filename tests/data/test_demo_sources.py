"""Demonstrations from files users have: LeRobot v3 datasets and TorchRL replay-buffer dumps.

The LeRobot datasets are written here by hand in the layout of ``lerobot`` 0.4's writer
(``lerobot/datasets/lerobot_dataset.py``): frames through pandas (list columns), per-episode
metadata with ``stats/...`` and ``tasks`` columns, tasks as a pandas index, AV1 videos with
episodes back to back. Not with :func:`save_lerobot_demos`, so the reader is not only checked
against its own writer (that one has a round-trip test of its own).
"""

from __future__ import annotations

import io
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, LazyTensorStorage, TensorDictReplayBuffer

from torchrl_chunk.data import LengthFilteredReplayBuffer
from torchrl_chunk.data.demo_sources import (
    DemoSourceError, inspect_demo_source, load_lerobot_demos, load_replay_buffer_demos, save_lerobot_demos)

S, A, H = 6, 3, 4  # state size, action size, chunk length
LENGTHS = (5, 8, 3)


def episode(T: int, tag: float) -> dict[str, np.ndarray]:
    """States ``tag + t``, actions ``tag + t / 100`` (traceable), success at the last frame."""
    t = np.arange(T, dtype=np.float32)
    return {"state": np.repeat((tag + t)[:, None], S, 1), "action": np.repeat((tag + t / 100)[:, None], A, 1),
            "success": t == T - 1}


def write_lerobot_v3(root: Path, episodes: list[dict], *, fps: int = 10, version: str = "v3.0",
                     success: bool = True, camera: str | None = None, files: int = 2) -> Path:
    """A LeRobot v3 dataset: episodes spread over ``files`` data files of chunk-000."""
    features = {
        "observation.state": {"dtype": "float32", "shape": [S], "names": [f"s{i}" for i in range(S)]},
        "action": {"dtype": "float32", "shape": [A], "names": [f"a{i}" for i in range(A)]},
        "next.reward": {"dtype": "float32", "shape": [1], "names": None},
        "next.done": {"dtype": "bool", "shape": [1], "names": None},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    if success:
        features["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
    px = 64
    if camera:
        features[camera] = {"dtype": "video", "shape": [px, px, 3], "names": ["height", "width", "channels"],
                            "info": {"video.fps": fps, "video.codec": "av1"}}
    frames, meta, start = [], [], 0
    video_frames, video_t = [], 0.0
    for e, ep in enumerate(episodes):
        T = len(ep["action"])
        file = min(e * files // len(episodes), files - 1)
        df = pd.DataFrame({
            "observation.state": list(ep["state"]), "action": list(ep["action"]),
            "next.reward": ep["success"].astype(np.float32), "next.done": np.arange(T) == T - 1,
            "timestamp": np.arange(T, dtype=np.float32) / fps, "frame_index": np.arange(T),
            "episode_index": np.full(T, e), "index": np.arange(start, start + T), "task_index": np.zeros(T, np.int64),
        })
        if success:
            df["next.success"] = ep["success"]
        frames.append((file, df))
        row = {"episode_index": e, "tasks": ["push the block"], "length": T, "data/chunk_index": 0,
               "data/file_index": file, "dataset_from_index": start, "dataset_to_index": start + T,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
               "stats/action/mean": list(ep["action"].mean(0)), "stats/action/count": [T]}
        if camera:
            row.update({f"videos/{camera}/chunk_index": 0, f"videos/{camera}/file_index": 0,
                        f"videos/{camera}/from_timestamp": video_t, f"videos/{camera}/to_timestamp": video_t + T / fps})
            video_frames += [np.full((px, px, 3), 20 * (e * 4 + t) % 250, np.uint8) for t in range(T)]
            video_t += T / fps
        meta.append(row)
        start += T
    for file in range(files):
        path = root / f"data/chunk-000/file-{file:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.concat([df for f, df in frames if f == file]).to_parquet(path)
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pd.DataFrame(meta).to_parquet(root / "meta/episodes/chunk-000/file-000.parquet")
    pd.DataFrame({"task_index": [0]}, index=["push the block"]).to_parquet(root / "meta/tasks.parquet")
    info = {"codebase_version": version, "robot_type": "toy", "total_episodes": len(episodes),
            "total_frames": start, "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200, "fps": fps, "splits": {"train": f"0:{len(episodes)}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4" if camera else None,
            "features": features}
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    if camera:  # AV1 like LeRobot's encoder (libsvtav1), every episode back to back in one file
        import av

        path = root / f"videos/{camera}/chunk-000/file-000.mp4"
        path.parent.mkdir(parents=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libsvtav1", rate=Fraction(fps))
            stream.width = stream.height = px
            stream.pix_fmt = "yuv420p"
            for image in video_frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return root


@pytest.fixture
def dataset(tmp_path):
    return write_lerobot_v3(tmp_path / "ds", [episode(T, 100 * i) for i, T in enumerate(LENGTHS)])


def check_buffer(trajectories, lengths):
    """Seed the demo buffer with them: every row's chunk starts with that step's action."""
    buf = LengthFilteredReplayBuffer(trajectories, chunk_size=H, batch_size=sum(lengths), action_bounds=(-1e3, 1e3))
    assert buf.trajectory_lengths == list(lengths) and buf.length_limit == max(lengths)
    batch = buf.sample()
    state = batch["observation", "state"][:, 0]
    tag = torch.div(state, 100, rounding_mode="floor") * 100
    torch.testing.assert_close(batch["vla_action", "chunk"][:, 0, 0], tag + (state - tag) / 100)


# ----------------------------------------------------------------------------------------
# LeRobot v3
# ----------------------------------------------------------------------------------------
def test_lerobot_episodes_become_trajectories_for_the_demo_buffer(dataset):
    demos = load_lerobot_demos(dataset, action_dim=A, state_dim=S)
    assert [d.shape[0] for d in demos] == list(LENGTHS)
    for i, (d, T) in enumerate(zip(demos, LENGTHS)):
        ep = episode(T, 100 * i)
        torch.testing.assert_close(d["action"], torch.from_numpy(ep["action"]))
        torch.testing.assert_close(d["observation", "state"], torch.from_numpy(ep["state"]))
        assert d["next", "done"].squeeze(-1).tolist() == [False] * (T - 1) + [True]
        assert d["next", "success"].squeeze(-1).tolist() == ep["success"].tolist()
        assert d["next", "reward"].shape == (T, 1) and d["action"].dtype == torch.float32
    check_buffer(demos, LENGTHS)
    info = inspect_demo_source("lerobot", dataset)
    assert (info.num_episodes, info.action_shape, info.state_shape, info.has_success) == (3, (A,), (S,), True)


def test_lerobot_episode_selection_keeps_the_order_asked_for(dataset):
    demos = load_lerobot_demos(dataset, episodes=[2, 0])
    assert [d.shape[0] for d in demos] == [LENGTHS[2], LENGTHS[0]]
    assert demos[0]["observation", "state"][0, 0] == 200
    with pytest.raises(DemoSourceError, match=r"has no episode 7 \(its episode_index values: 0\.\.2\)"):
        load_lerobot_demos(dataset, episodes=[7])


def test_lerobot_success_is_never_invented(tmp_path):
    root = write_lerobot_v3(tmp_path / "ds", [episode(4, 0), episode(6, 100)], success=False)
    with pytest.raises(DemoSourceError, match=r"records no success.*assume_success=True"):
        load_lerobot_demos(root)
    assert not inspect_demo_source("lerobot", root).has_success
    demos = load_lerobot_demos(root, assume_success=True)
    assert [d["next", "success"].squeeze(-1).tolist() for d in demos] == [[False] * 3 + [True],
                                                                         [False] * 5 + [True]]
    demos = load_lerobot_demos(root, success_key="next.reward")  # a column that says it
    assert demos[1]["next", "success"].squeeze(-1).tolist() == [False] * 5 + [True]


def test_lerobot_video_frames_follow_their_rows(tmp_path):
    pytest.importorskip("av")
    cam = "observation.images.top"
    root = write_lerobot_v3(tmp_path / "ds", [episode(4, 0), episode(5, 100)], camera=cam, files=1)
    demos = load_lerobot_demos(root, image_key=cam)
    for e, d in enumerate(demos):
        image = d["observation", "image"]
        assert image.dtype == torch.uint8 and image.shape == (d.shape[0], 64, 64, 3)
        expected = torch.tensor([20 * (e * 4 + t) % 250 for t in range(d.shape[0])], dtype=torch.float32)
        torch.testing.assert_close(image.float().mean((1, 2, 3)), expected, atol=6, rtol=0)  # AV1 is lossy
    assert inspect_demo_source("lerobot", root, image_key=cam).image_shape == (64, 64, 3)
    assert "observation" in load_lerobot_demos(root)[0].keys() and ("observation", "image") not in \
        load_lerobot_demos(root)[0].keys(True)  # states only unless asked


def test_lerobot_image_feature_is_decoded(tmp_path):
    from PIL import Image

    root = write_lerobot_v3(tmp_path / "ds", [episode(3, 0), episode(2, 100)], files=1)
    path, cam = root / "data/chunk-000/file-000.parquet", "observation.images.wrist"
    frames = pd.read_parquet(path)
    images = [np.full((8, 10, 3), 40 * i, np.uint8) for i in range(len(frames))]

    def png(image):
        out = io.BytesIO()
        Image.fromarray(image).save(out, format="PNG")
        return {"bytes": out.getvalue(), "path": None}

    frames[cam] = [png(image) for image in images]
    frames.to_parquet(path)
    info = json.loads((root / "meta/info.json").read_text())
    info["features"][cam] = {"dtype": "image", "shape": [8, 10, 3], "names": ["height", "width", "channels"]}
    (root / "meta/info.json").write_text(json.dumps(info))
    demos = load_lerobot_demos(root, image_key=cam)
    assert (torch.cat([d["observation", "image"] for d in demos]) == torch.from_numpy(np.stack(images))).all()


def test_save_lerobot_demos_round_trip(tmp_path):
    trajectories = load_lerobot_demos(write_lerobot_v3(tmp_path / "ds", [episode(T, 100 * i)
                                                                          for i, T in enumerate(LENGTHS)]))
    root = save_lerobot_demos(trajectories, tmp_path / "copy", fps=80, task="reach")
    again = load_lerobot_demos(root)
    for a, b in zip(trajectories, again):
        assert (a == b).all()
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == sum(LENGTHS)
    assert pd.read_parquet(root / "meta/tasks.parquet").index.tolist() == ["reach"]
    with pytest.raises(DemoSourceError, match="exists and is not empty"):
        save_lerobot_demos(trajectories, root)


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "meta/info.json").unlink(), r"is not a LeRobot dataset: meta/info.json is missing"),
    (lambda r: (r / "data/chunk-000/file-001.parquet").unlink(),
     r"data file 'data/chunk-000/file-001.parquet' of episodes \[2\] is missing"),
    (lambda r: [p.unlink() for p in (r / "meta/episodes").rglob("*.parquet")], r"meta/episodes/ holds no parquet"),
])
def test_lerobot_missing_files(dataset, damage, message):
    damage(dataset)
    with pytest.raises(DemoSourceError, match=message):
        load_lerobot_demos(dataset)


def test_lerobot_errors_are_one_line_with_the_fix(tmp_path, dataset):
    def fails(match, root=dataset, **kw):
        with pytest.raises(DemoSourceError, match=match) as err:
            load_lerobot_demos(root, **kw)
        assert "\n" not in str(err.value)

    fails(r"no directory at .*pass the root of a LeRobot dataset", root=tmp_path / "nowhere")
    fails(r"has no 'observation.environment_state' feature \(it has: action, .*\); pass state_key=",
          state_key="observation.environment_state")
    fails(r"'action' has shape \[3\] per frame but 4 values are needed \(action_dim=4\)", action_dim=4)
    fails(r"'observation.state' has shape \[6\] per frame but 39 values are needed .*another state_key\)", state_dim=39)
    fails(r"'action' is a 'float32' feature, not an image or video", image_key="action")
    v2 = write_lerobot_v3(tmp_path / "v2", [episode(3, 0)], version="v2.1", files=1)
    fails(r"is a LeRobot v2.1 dataset; this reader reads v3.x only: convert it with LeRobot "
          r"\(python -m lerobot.datasets.v30.convert_dataset_v21_to_v30", root=v2)
    with pytest.raises(DemoSourceError, match="LeRobot v2.1"):
        inspect_demo_source("lerobot", v2)


def test_lerobot_nan_and_column_damage(tmp_path):
    bad = episode(4, 0)
    bad["action"][2, 1] = np.nan
    root = write_lerobot_v3(tmp_path / "nan", [episode(3, 0), bad], files=1)
    with pytest.raises(DemoSourceError, match=r"episode 1: column 'action' has NaN or inf values; leave the episode "
                                              r"out \(episodes=\[\.\.\.\]\)"):
        load_lerobot_demos(root)
    assert load_lerobot_demos(root, episodes=[0])[0].shape == (3,)  # the fix it names
    root = write_lerobot_v3(tmp_path / "col", [episode(3, 0)], files=1)
    path = root / "data/chunk-000/file-000.parquet"
    pd.read_parquet(path).drop(columns=["action"]).to_parquet(path)
    with pytest.raises(DemoSourceError, match=r"has no column 'action' although meta/info.json lists it"):
        load_lerobot_demos(root)
    root = write_lerobot_v3(tmp_path / "short", [episode(3, 0)], files=1)
    pd.read_parquet(path := root / "data/chunk-000/file-000.parquet").iloc[:2].to_parquet(path)
    with pytest.raises(DemoSourceError, match=r"episode 0: 2 frames in .* but meta/episodes says 3"):
        load_lerobot_demos(root)


# ----------------------------------------------------------------------------------------
# TorchRL replay-buffer dumps
# ----------------------------------------------------------------------------------------
def rollout(T: int, tag: float, *, done: bool = True, traj_id: int | None = None) -> TensorDict:
    ep = episode(T, tag)
    td = TensorDict({("observation", "state"): torch.from_numpy(ep["state"]), "action": torch.from_numpy(ep["action"]),
                     ("next", "done"): torch.zeros(T, 1, dtype=torch.bool),
                     ("next", "success"): torch.from_numpy(ep["success"]).reshape(T, 1)}, [T])
    td["next", "done"][-1] = done
    if traj_id is not None:
        td["collector", "traj_ids"] = torch.full((T,), traj_id)
    return td


def dump(path: Path, *parts: TensorDict, capacity: int = 100, storage=LazyTensorStorage) -> Path:
    rb = TensorDictReplayBuffer(storage=storage(capacity))
    for part in parts:
        rb.extend(part)
    rb.dumps(path)
    return path


@pytest.mark.parametrize("storage", [LazyTensorStorage, LazyMemmapStorage])
def test_replay_buffer_episodes_become_trajectories_for_the_demo_buffer(tmp_path, storage):
    path = dump(tmp_path / "rb", *(rollout(T, 100 * i) for i, T in enumerate(LENGTHS)), storage=storage)
    demos = load_replay_buffer_demos(path, action_dim=A, state_dim=S)
    assert [d.shape[0] for d in demos] == list(LENGTHS)
    assert "index" not in demos[0].keys()  # TorchRL's bookkeeping
    for i, (d, T) in enumerate(zip(demos, LENGTHS)):
        assert (d == rollout(T, 100 * i)).all()
    check_buffer(demos, LENGTHS)
    info = inspect_demo_source("replay_buffer", path)
    assert (info.num_episodes, info.action_shape, info.state_shape, info.has_success) == (3, (A,), (S,), True)


def test_replay_buffer_trailing_episode_is_refused_or_dropped(tmp_path):
    path = dump(tmp_path / "rb", rollout(5, 0), rollout(8, 100), rollout(2, 200, done=False))
    with pytest.raises(DemoSourceError, match=r"1 episode\(s\) \(2 steps, the last at row 14\) have no \('next', "
                                              r"'done'\) at their end.*pass drop_incomplete=True"):
        load_replay_buffer_demos(path)
    assert [d.shape[0] for d in load_replay_buffer_demos(path, drop_incomplete=True)] == [5, 8]


def test_replay_buffer_interleaved_collector_rows_are_grouped_by_traj_ids(tmp_path):
    a, b = rollout(6, 0, traj_id=0), rollout(4, 100, traj_id=1)
    batch = torch.cat([a[:3], b[:2], a[3:], b[2:]])  # two envs' segments, batch after batch
    demos = load_replay_buffer_demos(dump(tmp_path / "rb", batch))
    assert [d.shape[0] for d in demos] == [6, 4]
    assert (demos[0].exclude("collector") == a.exclude("collector")).all()
    batch = torch.cat([a[:3], b[:2], a[3:]])  # env 1 still running
    with pytest.raises(DemoSourceError, match=r"1 episode\(s\) \(2 steps, the last at row 4\)"):
        load_replay_buffer_demos(dump(tmp_path / "rb2", batch))


def test_replay_buffer_that_wrapped_around_is_unrolled(tmp_path):
    path = dump(tmp_path / "rb", rollout(5, 0), rollout(4, 100), rollout(3, 200), capacity=10)  # 12 rows in 10
    with pytest.warns(UserWarning, match=r"wrapped around, so its oldest episode \(3 steps\) lost its first"):
        demos = load_replay_buffer_demos(path)
    assert [d["observation", "state"][0, 0].item() for d in demos] == [100, 200]


def test_replay_buffer_success_is_never_invented(tmp_path):
    no_success = [rollout(T, 100 * i).exclude(("next", "success")) for i, T in enumerate((5, 3))]
    path = dump(tmp_path / "rb", *no_success)
    with pytest.raises(DemoSourceError, match=r"records no success .*pass assume_success=True"):
        load_replay_buffer_demos(path)
    demos = load_replay_buffer_demos(path, assume_success=True)
    assert demos[0]["next", "success"].squeeze(-1).tolist() == [False] * 4 + [True]
    check_buffer(demos, (5, 3))


def test_replay_buffer_errors_are_one_line_with_the_fix(tmp_path):
    def fails(path, match, **kw):
        with pytest.raises(DemoSourceError, match=match) as err:
            load_replay_buffer_demos(path, **kw)
        assert "\n" not in str(err.value)

    good = dump(tmp_path / "rb", rollout(5, 0))
    fails(tmp_path / "nowhere", r"no directory at .*pass the directory written by rb.dumps\(path\)")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", r"is not a TorchRL replay-buffer dump: storage/storage_metadata.json is missing")
    fails(good, r"actions have shape \[3\] per step but 4 values are needed \(action_dim=4\)", action_dim=4)
    fails(good, r"states have shape \[6\] per step but 39 values are needed \(state_dim=39\)", state_dim=39)
    bad = rollout(4, 0)
    bad["observation", "state"][1, 2] = float("nan")
    fails(dump(tmp_path / "nan", rollout(3, 0), bad), r"episode 1 \(rows 3\.\.6\) has NaN or inf in \('observation', "
                                                     r"'state'\)")
    fails(dump(tmp_path / "nodone", rollout(3, 0).exclude(("next", "done"))), r"has no \('next', 'done'\) entry")
    buf = LengthFilteredReplayBuffer([rollout(5, 0)], chunk_size=H)
    buf.dumps(tmp_path / "ours")
    fails(tmp_path / "ours", r"is a LengthFilteredReplayBuffer dump .*restore it with LengthFilteredReplayBuffer.loads")
