"""Expert demonstrations users already have: LeRobot datasets and TorchRL replay-buffer dumps.

Both loaders return what :class:`~torchrl_chunk.data.LengthFilteredReplayBuffer` and
:func:`~torchrl_chunk.envs.collect_expert_demos` use: a list of per-step trajectories, one
``TensorDict`` of batch ``[T]`` per episode::

    ("observation", "state")    float32 [T, state_dim]
    ("observation", "image")    uint8   [T, H, W, 3]     (only when asked for)
    "action"                    float32 [T, action_dim]  (a replay buffer's chunks [T, h, a] stay as they are)
    ("next", "done")            bool    [T, 1]           True at the episode's last step only
    ("next", "success")         bool    [T, 1]           from the data, or see "Success" below
    ("next", "reward")          float32 [T, 1]           when the data has rewards

**LeRobot datasets** (:func:`load_lerobot_demos`), format v3.x on local disk, as written by
``lerobot`` 0.4 (``lerobot/datasets/utils.py`` and ``lerobot_dataset.py``: ``CODEBASE_VERSION =
"v3.0"``)::

    meta/info.json                                 codebase_version, fps, features, data_path, video_path
    meta/episodes/chunk-000/file-000.parquet       one row per episode: episode_index, length,
                                                   data/chunk_index, data/file_index,
                                                   dataset_from_index, dataset_to_index,
                                                   videos/<key>/{chunk_index,file_index,from_timestamp,to_timestamp}
    meta/tasks.parquet                             task strings (not read here)
    data/chunk-000/file-000.parquet                one row per frame: episode_index, frame_index, index,
                                                   timestamp, task_index, action, observation.state,
                                                   next.done / next.success / next.reward (optional)
    videos/<key>/chunk-000/file-000.mp4            frames of "video" features, episodes back to back

Vector features are list columns of the frame table; ``"image"`` features are PNG bytes in it
(decoded with Pillow); ``"video"`` features are decoded from the MP4 files with PyAV (the
``video`` extra; LeRobot encodes AV1, which PyAV's wheels decode), each frame matched to its
row's ``from_timestamp + timestamp`` within half a frame period.

The reader is hand-written on ``pyarrow``: the ``lerobot`` package pins an older torch, and
TorchRL 0.14's :class:`~torchrl.data.datasets.LeRobotExperienceReplay` opens LeRobot's layout
only as a Hugging Face hub snapshot (``snapshot_download(repo_id)``, with ``huggingface_hub``
and ``datasets`` installed); given a local ``root`` it expects its own converted memmap copy,
not a LeRobot directory. Only v3 is read; a v2.x dataset is refused with the LeRobot command
that converts it. Each episode's frames are checked against ``meta/episodes`` (count and
``frame_index`` 0..length-1).

**Replay-buffer dumps** (:func:`load_replay_buffer_demos`): a directory written by TorchRL's
``rb.dumps(path)`` with a ``LazyTensorStorage`` or ``LazyMemmapStorage`` (``storage/`` is a
memory-mapped TensorDict, ``writer/metadata.json`` the round-robin cursor). Rows are read in
the order they were written (a buffer that wrapped around is unrolled from its cursor) and
cut into episodes after each ``("next", "done")``; when ``("collector", "traj_ids")`` is
stored, rows are first grouped by it (collector batches interleave several envs).

**Success**: ``("next", "success")`` comes from the data: LeRobot's ``next.success`` column (or
the column named by ``success_key``), a replay buffer's ``("next", "success")``. Data without
one is refused unless the caller says ``assume_success=True`` ("every episode here is a
successful demonstration"), which marks success at each episode's last step. Nothing is
assumed otherwise: the demo buffer admits successful trajectories only.

Every problem (missing directory or file, missing column, another format version, NaN or
inf, an action or state size other than the one asked for, an episode still running when a
buffer was dumped) raises a one-line :class:`DemoSourceError` (a ``ValueError``) naming the
problem and the fix.

:func:`save_lerobot_demos` writes trajectories (e.g. scripted MetaWorld demos) as a
state-only LeRobot v3 dataset, and :func:`inspect_demo_source` reads only a source's metadata
(episodes, shapes, whether it records success), e.g. to check settings before a run.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from torchrl_chunk.data.trajectories import non_finite_key

__all__ = [
    "DemoSourceError",
    "DemoSourceInfo",
    "inspect_demo_source",
    "load_lerobot_demos",
    "load_replay_buffer_demos",
    "save_lerobot_demos",
]

#: The LeRobot format this module reads and writes (``lerobot.datasets.lerobot_dataset.CODEBASE_VERSION``).
LEROBOT_VERSION = "v3.0"
_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
_EPISODE_COLUMNS = ("episode_index", "length", "data/chunk_index", "data/file_index")
_SUCCESS_COLUMN = "next.success"
_REWARD_COLUMN = "next.reward"
_CONVERT = "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=<id>"

DONE = ("next", "done")
SUCCESS = ("next", "success")
STATE = ("observation", "state")
IMAGE = ("observation", "image")


class DemoSourceError(ValueError):
    """A demonstration source that cannot be read as it is (one line: the problem and the fix)."""


@dataclass(frozen=True)
class DemoSourceInfo:
    """What a source holds, read from its metadata only (:func:`inspect_demo_source`)."""

    source: str  #: "lerobot" or "replay_buffer"
    path: Path
    num_episodes: int  #: LeRobot: ``total_episodes``; replay buffer: rows with ("next", "done") set
    action_shape: tuple[int, ...]  #: per step (or per chunk)
    state_shape: tuple[int, ...] | None
    image_shape: tuple[int, ...] | None
    has_success: bool  #: whether success is recorded (else ``assume_success=True`` is needed)


# ----------------------------------------------------------------------------------------
# LeRobot v3
# ----------------------------------------------------------------------------------------
def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError as err:  # a dependency of torchrl-chunk; a broken install
        raise ImportError("reading LeRobot datasets needs pyarrow: pip install pyarrow") from err
    return pa, pc, pq


def _lerobot_info(root: Path) -> dict:
    if not root.is_dir():
        raise DemoSourceError(
            f"no directory at {str(root)!r}: pass the root of a LeRobot dataset (the folder holding meta/ and data/).")
    info_path = root / "meta" / "info.json"
    if not info_path.is_file():
        raise DemoSourceError(
            f"{str(root)!r} is not a LeRobot dataset: meta/info.json is missing (a LeRobot v3 root holds "
            "meta/info.json, meta/episodes/ and data/); pass the dataset's root directory.")
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError) as err:
        raise DemoSourceError(f"{str(info_path)!r} is not readable JSON ({err}); the dataset is corrupt.") from None
    version = str(info.get("codebase_version", "unknown"))
    if not version.startswith("v3."):
        raise DemoSourceError(
            f"{str(root)!r} is a LeRobot {version} dataset; this reader reads v3.x only: convert it with "
            f"LeRobot ({_CONVERT}).")
    if not isinstance(info.get("features"), dict):
        raise DemoSourceError(f"{str(info_path)!r} has no 'features' table; the dataset is corrupt.")
    return info


def _feature(root: Path, info: dict, key: str, what: str) -> dict:
    feature = info["features"].get(key)
    if feature is None:
        names = ", ".join(sorted(info["features"]))
        raise DemoSourceError(
            f"{str(root)!r} has no {key!r} feature (it has: {names}); pass {what}= naming one of them.")
    return feature


def _success_column(root: Path, info: dict, success_key: str | None, assume_success: bool) -> str | None:
    if success_key is not None:
        _feature(root, info, success_key, "success_key")
        return success_key
    if _SUCCESS_COLUMN in info["features"]:
        return _SUCCESS_COLUMN
    if not assume_success:
        raise DemoSourceError(
            f"{str(root)!r} records no success (no {_SUCCESS_COLUMN!r} feature): pass success_key= naming the "
            "column that does, or assume_success=True if every episode of it is a successful demonstration.")
    return None


def _read_episode_table(root: Path, columns: Sequence[str]) -> dict[str, list]:
    pa, pc, pq = _pyarrow()
    files = sorted((root / "meta" / "episodes").glob("*/*.parquet"))
    if not files:
        raise DemoSourceError(
            f"{str(root)!r}: meta/episodes/ holds no parquet files (chunk-XXX/file-XXX.parquet), so the episodes "
            "are unknown; the dataset is incomplete: copy it again.")
    tables = []
    for file in files:
        names = pq.read_schema(file).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DemoSourceError(
                f"{str(file)!r} has no column {missing[0]!r}; it is not LeRobot v3 episode metadata (convert the "
                f"dataset with {_CONVERT}).")
        tables.append(pq.read_table(file, columns=list(columns)))
    table = pa.concat_tables(tables)
    return {c: table.column(c).to_pylist() for c in columns}


def _numeric(table, name: str, where: str) -> np.ndarray:
    """A scalar or fixed-length vector column as ``[rows, n]`` (scalars: n = 1)."""
    pa, pc, _ = _pyarrow()
    col = table.column(name).combine_chunks()
    if col.null_count:
        raise DemoSourceError(f"{where}: column {name!r} has {col.null_count} missing values; repair the dataset.")
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != lengths[0]).any():
            raise DemoSourceError(f"{where}: column {name!r} has vectors of several lengths "
                                  f"({sorted(set(lengths.tolist()))}); repair the dataset.")
        values = col.flatten()
        if pa.types.is_list(values.type) or pa.types.is_fixed_size_list(values.type):
            raise DemoSourceError(f"{where}: column {name!r} holds arrays of 2 or more dimensions; only scalars "
                                  "and vectors are read.")
        width = int(lengths[0]) if len(lengths) else 0
        return np.array(values.to_numpy(zero_copy_only=False)).reshape(len(col), width)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
        raise DemoSourceError(f"{where}: column {name!r} has type {col.type}, not numbers; pass another column.")
    return np.array(col.to_numpy(zero_copy_only=False)).reshape(len(col), 1)


def _decode_images(table, name: str, where: str) -> np.ndarray:
    """An ``"image"`` feature (PNG/JPEG bytes in a struct column) as uint8 ``[rows, H, W, 3]``."""
    from PIL import Image

    frames = []
    for item in table.column(name).to_pylist():
        data = item.get("bytes") if isinstance(item, dict) else None
        if not data:
            raise DemoSourceError(f"{where}: column {name!r} has a frame without image bytes (images stored as "
                                  "file paths are not read); re-save the dataset with embedded images.")
        frames.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(frames)


def _decode_video(path: Path, timestamps: np.ndarray, fps: float, where: str) -> np.ndarray:
    """The frames of ``path`` at ``timestamps`` (seconds), uint8 ``[len(timestamps), H, W, 3]``."""
    try:
        import av
    except ImportError:
        raise DemoSourceError(
            f"{where}: video features need PyAV: pip install 'torchrl-chunk[video]' (or av), or load states "
            "only (image_key=None).") from None
    if not path.is_file():
        raise DemoSourceError(f"{where}: video file {str(path)!r} is missing; copy the dataset's videos/ too.")
    tol = 0.5 / fps
    first, last = float(timestamps.min()), float(timestamps.max())
    times, frames = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if first > tol:  # to the key frame at or before the first wanted frame
            container.seek(int(max(first - tol, 0.0) / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else None
            if t is None or t < first - tol:
                continue
            if t > last + tol:
                break
            times.append(t)
            frames.append(frame.to_ndarray(format="rgb24"))
    if not frames:
        raise DemoSourceError(f"{where}: {str(path)!r} has no frames between {first:.3f}s and {last:.3f}s; "
                              "the video and meta/episodes disagree (the dataset is corrupt).")
    times_np = np.asarray(times)
    nearest = np.abs(times_np[None, :] - timestamps[:, None]).argmin(1)
    worst = float(np.abs(times_np[nearest] - timestamps).max())
    if worst > tol:
        raise DemoSourceError(f"{where}: {str(path)!r} has no frame within {tol * 1e3:.1f} ms of every timestamp "
                              f"(worst {worst * 1e3:.1f} ms); the video and the frame table disagree.")
    return np.stack([frames[i] for i in nearest])


def load_lerobot_demos(
    root: str | Path,
    *,
    episodes: Sequence[int] | None = None,
    success_key: str | None = None,
    assume_success: bool = False,
    state_key: str = "observation.state",
    image_key: str | None = None,
    action_key: str = "action",
    action_dim: int | None = None,
    state_dim: int | None = None,
) -> list[TensorDict]:
    """Read the episodes of a local LeRobot v3 dataset as per-step trajectories.

    Args:
        root: the dataset's root directory (it holds ``meta/info.json``).

    Keyword Args:
        episodes: ``episode_index`` values to read, in this order (default: all, ascending).
        success_key: the column that marks success (default: ``next.success`` when the dataset
            has it).
        assume_success: with no success column, declare every episode successful (success at
            its last step). Without it such a dataset is refused.
        state_key: the column read into ``("observation", "state")``.
        image_key: an ``"image"`` or ``"video"`` feature read into ``("observation", "image")``
            (uint8 HWC); default: states only.
        action_key: the column read into ``"action"``.
        action_dim, state_dim: the sizes the caller needs; another size is refused.

    Returns:
        one TensorDict ``[T]`` per episode (keys in the module docstring); ``("next", "done")``
        is True at each episode's last frame, whatever a ``next.done`` column says.
    """
    pa, pc, pq = _pyarrow()
    root = Path(root).expanduser()
    info = _lerobot_info(root)
    state_ft = _feature(root, info, state_key, "state_key")
    action_ft = _feature(root, info, action_key, "action_key")
    for key, ft, need, what in ((action_key, action_ft, action_dim, "action_dim"),
                                (state_key, state_ft, state_dim, "state_dim")):
        shape = tuple(ft.get("shape") or ())
        if need is not None and shape and shape[-1] != need:
            raise DemoSourceError(
                f"{str(root)!r}: {key!r} has shape {list(shape)} per frame but {need} values are needed "
                f"({what}={need}); use a dataset of this task (or pass another {what.replace('_dim', '_key')}).")
    success_col = _success_column(root, info, success_key, assume_success)
    image_ft = _feature(root, info, image_key, "image_key") if image_key is not None else None
    if image_ft is not None and image_ft.get("dtype") not in ("image", "video"):
        raise DemoSourceError(f"{str(root)!r}: {image_key!r} is a {image_ft.get('dtype')!r} feature, not an image "
                              "or video; pass image_key= naming a camera (dtype image or video).")
    video = image_ft is not None and image_ft["dtype"] == "video"

    ep_columns = list(_EPISODE_COLUMNS)
    if video:
        ep_columns += [f"videos/{image_key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
    meta = _read_episode_table(root, ep_columns)
    row_of = {int(e): i for i, e in enumerate(meta["episode_index"])}
    wanted = sorted(row_of) if episodes is None else [int(e) for e in episodes]
    unknown = [e for e in wanted if e not in row_of]
    if unknown:
        span = f"{min(row_of)}..{max(row_of)}" if row_of else "none"
        raise DemoSourceError(f"{str(root)!r} has no episode {unknown[0]} (its episode_index values: {span}); "
                              "pass episodes= among them.")
    if not wanted:
        raise DemoSourceError(f"{str(root)!r}: no episodes to read (episodes={list(episodes or [])}).")

    columns = ["episode_index", "frame_index", state_key, action_key]
    columns += [c for c in (success_col, _REWARD_COLUMN if _REWARD_COLUMN in info["features"] else None,
                            "timestamp" if video else None, image_key if not video else None) if c]
    columns = list(dict.fromkeys(columns))  # e.g. success_key="next.reward"
    data_template = info.get("data_path") or _DATA_PATH
    by_file: dict[tuple[int, int], list[int]] = {}
    for e in wanted:
        i = row_of[e]
        by_file.setdefault((int(meta["data/chunk_index"][i]), int(meta["data/file_index"][i])), []).append(e)
    frames: dict[int, dict[str, np.ndarray]] = {}
    for (chunk, file), eps in by_file.items():
        path = root / data_template.format(chunk_index=chunk, file_index=file)
        if not path.is_file():
            raise DemoSourceError(f"{str(root)!r}: data file {str(path.relative_to(root))!r} of episodes {eps} is "
                                  "missing; the dataset is incomplete: copy it again.")
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DemoSourceError(f"{str(path)!r} has no column {missing[0]!r} although meta/info.json lists it; "
                                  "the dataset is corrupt.")
        table = pq.read_table(path, columns=columns)
        table = table.filter(pc.is_in(table.column("episode_index"), value_set=pa.array(eps, pa.int64())))
        index = table.column("episode_index").to_numpy()
        for e in eps:
            part = table.filter(pa.array(index == e))
            part = part.sort_by("frame_index")
            where = f"{str(root)!r} episode {e}"
            length = int(meta["length"][row_of[e]])
            frame_index = part.column("frame_index").to_numpy()
            if part.num_rows != length or (frame_index != np.arange(part.num_rows)).any():
                raise DemoSourceError(f"{where}: {part.num_rows} frames in {str(path.relative_to(root))!r} but "
                                      f"meta/episodes says {length} (frame_index 0..{length - 1}); the dataset is "
                                      "incomplete or corrupt.")
            cols = {c: _numeric(part, c, where) for c in (state_key, action_key, success_col) if c}
            if _REWARD_COLUMN in columns:
                cols[_REWARD_COLUMN] = _numeric(part, _REWARD_COLUMN, where)
            if image_key is not None and not video:
                cols[image_key] = _decode_images(part, image_key, where)
            if video:
                i = row_of[e]
                vpath = root / str(info.get("video_path") or "").format(
                    video_key=image_key, chunk_index=int(meta[f"videos/{image_key}/chunk_index"][i]),
                    file_index=int(meta[f"videos/{image_key}/file_index"][i]))
                stamps = float(meta[f"videos/{image_key}/from_timestamp"][i]) + part.column("timestamp").to_numpy()
                cols[image_key] = _decode_video(vpath, stamps.astype(np.float64), float(info["fps"]), where)
            frames[e] = cols

    trajectories = []
    for e in wanted:
        cols, where = frames[e], f"{str(root)!r} episode {e}"
        for key, need, what in ((action_key, action_dim, "action_dim"), (state_key, state_dim, "state_dim")):
            if need is not None and cols[key].shape[1] != need:
                raise DemoSourceError(
                    f"{where}: {key!r} has {cols[key].shape[1]} values per frame but {need} are needed "
                    f"({what}={need}); use a dataset of this task.")
        for key in (state_key, action_key, _REWARD_COLUMN):
            if key in cols and not np.isfinite(cols[key].astype(np.float64)).all():
                raise DemoSourceError(f"{where}: column {key!r} has NaN or inf values; leave the episode out "
                                      "(episodes=[...]) or repair the dataset.")
        T = cols[action_key].shape[0]
        done = torch.zeros(T, 1, dtype=torch.bool)
        done[-1] = True
        if success_col is not None:
            success = torch.as_tensor(cols[success_col] != 0).reshape(T, 1)
        else:  # assume_success=True, stated by the caller
            success = done.clone()
        td = TensorDict(
            {
                STATE: torch.as_tensor(cols[state_key], dtype=torch.float32),
                "action": torch.as_tensor(cols[action_key], dtype=torch.float32),
                DONE: done,
                SUCCESS: success,
            },
            batch_size=[T],
        )
        if _REWARD_COLUMN in cols:
            td.set(("next", "reward"), torch.as_tensor(cols[_REWARD_COLUMN], dtype=torch.float32).reshape(T, 1))
        if image_key is not None:
            td.set(IMAGE, torch.as_tensor(np.ascontiguousarray(cols[image_key]), dtype=torch.uint8))
        trajectories.append(td)
    return trajectories


def save_lerobot_demos(
    trajectories: Sequence[TensorDictBase],
    root: str | Path,
    *,
    fps: int = 80,
    task: str = "",
    robot_type: str | None = None,
) -> Path:
    """Write per-step trajectories as a state-only LeRobot v3 dataset at ``root`` (a new directory).

    Columns: ``observation.state``, ``action``, ``next.done`` (True at each episode's last
    frame), ``next.success`` and ``next.reward`` when the trajectories have them, and LeRobot's
    index columns; all frames in one data file. Images and other entries are not written.
    ``fps`` fills ``timestamp`` (MetaWorld steps its controller at 80 Hz); ``task`` is every
    episode's task string.
    """
    pa, pc, pq = _pyarrow()
    import pandas as pd

    root = Path(root).expanduser()
    if root.exists() and any(root.iterdir()):
        raise DemoSourceError(f"{str(root)!r} exists and is not empty; pick a new directory for the dataset.")
    trajectories = list(trajectories)
    if not trajectories:
        raise DemoSourceError("save_lerobot_demos needs at least one trajectory.")
    for i, td in enumerate(trajectories):
        if td.batch_dims != 1 or td.get("action").ndim != 2 or td.get(STATE, None) is None:
            raise DemoSourceError(f"trajectory {i} is not per-step ([T] with 'action' [T, a] and "
                                  "('observation', 'state')); chunked trajectories cannot be written.")
    has_success = all(td.get(SUCCESS, None) is not None for td in trajectories)
    has_reward = all(td.get(("next", "reward"), None) is not None for td in trajectories)
    state_dim = int(trajectories[0].get(STATE).shape[-1])
    action_dim = int(trajectories[0].get("action").shape[-1])

    cols: dict[str, list] = {k: [] for k in ("observation.state", "action", "timestamp", "frame_index",
                                             "episode_index", "index", "task_index", "next.done")}
    if has_success:
        cols[_SUCCESS_COLUMN] = []
    if has_reward:
        cols[_REWARD_COLUMN] = []
    episodes: dict[str, list] = {k: [] for k in ("episode_index", "tasks", "length", "data/chunk_index",
                                                 "data/file_index", "dataset_from_index", "dataset_to_index",
                                                 "meta/episodes/chunk_index", "meta/episodes/file_index")}
    start = 0
    for e, td in enumerate(trajectories):
        T = int(td.shape[0])
        cols["observation.state"].append(td.get(STATE).float().numpy())
        cols["action"].append(td.get("action").float().numpy())
        cols["timestamp"].append(np.arange(T, dtype=np.float32) / np.float32(fps))
        cols["frame_index"].append(np.arange(T))
        cols["episode_index"].append(np.full(T, e))
        cols["index"].append(np.arange(start, start + T))
        cols["task_index"].append(np.zeros(T, np.int64))
        cols["next.done"].append(np.arange(T) == T - 1)
        if has_success:
            cols[_SUCCESS_COLUMN].append(td.get(SUCCESS).reshape(T).numpy())
        if has_reward:
            cols[_REWARD_COLUMN].append(td.get(("next", "reward")).reshape(T).float().numpy())
        for k, v in (("episode_index", e), ("tasks", [task]), ("length", T), ("data/chunk_index", 0),
                     ("data/file_index", 0), ("dataset_from_index", start), ("dataset_to_index", start + T),
                     ("meta/episodes/chunk_index", 0), ("meta/episodes/file_index", 0)):
            episodes[k].append(v)
        start += T

    def vectors(parts: list[np.ndarray], width: int):
        flat = pa.array(np.concatenate(parts).reshape(-1).astype(np.float32))
        return pa.FixedSizeListArray.from_arrays(flat, width)

    arrays = {"observation.state": vectors(cols.pop("observation.state"), state_dim),
              "action": vectors(cols.pop("action"), action_dim)}
    int_cols = ("frame_index", "episode_index", "index", "task_index")
    arrays.update({k: pa.array(np.concatenate(v).astype(np.int64 if k in int_cols else v[0].dtype))
                   for k, v in cols.items()})
    scalar = {"shape": [1], "names": None}
    features = {
        "observation.state": {"dtype": "float32", "shape": [state_dim], "names": None},
        "action": {"dtype": "float32", "shape": [action_dim], "names": None},
        "next.done": {"dtype": "bool", **scalar},
        **({_SUCCESS_COLUMN: {"dtype": "bool", **scalar}} if has_success else {}),
        **({_REWARD_COLUMN: {"dtype": "float32", **scalar}} if has_reward else {}),
        "timestamp": {"dtype": "float32", **scalar},
        "frame_index": {"dtype": "int64", **scalar},
        "episode_index": {"dtype": "int64", **scalar},
        "index": {"dtype": "int64", **scalar},
        "task_index": {"dtype": "int64", **scalar},
    }
    info = {
        "codebase_version": LEROBOT_VERSION, "robot_type": robot_type, "total_episodes": len(trajectories),
        "total_frames": start, "total_tasks": 1, "chunks_size": 1000, "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200, "fps": int(fps), "splits": {"train": f"0:{len(trajectories)}"},
        "data_path": _DATA_PATH, "video_path": None, "features": features,
    }
    data_path = root / _DATA_PATH.format(chunk_index=0, file_index=0)
    episodes_path = root / _EPISODES_PATH.format(chunk_index=0, file_index=0)
    for p in (data_path, episodes_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays), data_path)
    pq.write_table(pa.table(episodes), episodes_path)
    pd.DataFrame({"task_index": [0]}, index=[task]).to_parquet(root / "meta" / "tasks.parquet")
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    return root


# ----------------------------------------------------------------------------------------
# TorchRL replay-buffer dumps
# ----------------------------------------------------------------------------------------
def _replay_buffer_storage(path: Path) -> tuple[TensorDictBase, int, dict]:
    """The dump's memory-mapped storage, its number of rows and the writer's metadata."""
    if not path.is_dir():
        raise DemoSourceError(f"no directory at {str(path)!r}: pass the directory written by rb.dumps(path).")
    if (path / "length_filtered_buffer.json").is_file():
        raise DemoSourceError(
            f"{str(path)!r} is a LengthFilteredReplayBuffer dump (BC rows, not episodes): restore it with "
            "LengthFilteredReplayBuffer.loads, or dump the TorchRL replay buffer the episodes were collected in.")
    meta_path = path / "storage" / "storage_metadata.json"
    if not meta_path.is_file():
        raise DemoSourceError(
            f"{str(path)!r} is not a TorchRL replay-buffer dump: storage/storage_metadata.json is missing (write one "
            "with rb.dumps(path) from a TensorDictReplayBuffer with a LazyTensorStorage or LazyMemmapStorage).")
    meta = json.loads(meta_path.read_text())
    if meta.get("is_pytree"):
        raise DemoSourceError(f"{str(path)!r} holds a pytree storage, not TensorDicts; dump a TensorDictReplayBuffer "
                              "(TensorDicts with 'action' and ('next', 'done')).")
    length = int(meta.get("len", 0))
    if length == 0:
        raise DemoSourceError(f"{str(path)!r} is an empty replay buffer; dump it after extending it with episodes.")
    storage = TensorDict.load_memmap(path / "storage")
    if storage.batch_dims != 1:
        raise DemoSourceError(f"{str(path)!r} has a storage of {storage.batch_dims} dims {list(storage.batch_size)}; "
                              "only 1-dim storages are read (LazyTensorStorage(n) with ndim=1, the default).")
    writer_path = path / "writer" / "metadata.json"
    writer = json.loads(writer_path.read_text()) if writer_path.is_file() else {}
    return storage, length, writer


def _segments(done: torch.Tensor, traj_ids: torch.Tensor | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Row indices of finished episodes, and of unfinished segments (no done at their end)."""
    n = done.shape[0]
    groups = [torch.arange(n)]
    if traj_ids is not None:
        ids, first = [], {}
        for i, t in enumerate(traj_ids.tolist()):
            if t not in first:
                first[t] = len(ids)
                ids.append([])
            ids[first[t]].append(i)
        groups = [torch.tensor(g) for g in ids]
    finished, unfinished = [], []
    for rows in groups:
        start = 0
        for end in torch.nonzero(done[rows]).flatten().tolist():
            finished.append(rows[start:end + 1])
            start = end + 1
        if start < len(rows):
            unfinished.append(rows[start:])
    finished.sort(key=lambda r: int(r[0]))
    return finished, unfinished


def load_replay_buffer_demos(
    path: str | Path,
    *,
    assume_success: bool = False,
    drop_incomplete: bool = False,
    action_dim: int | None = None,
    state_dim: int | None = None,
) -> list[TensorDict]:
    """Read the episodes of a TorchRL replay buffer saved with ``rb.dumps(path)``.

    Args:
        path: the directory ``rb.dumps`` wrote (it holds ``storage/`` and ``writer/``).

    Keyword Args:
        assume_success: with no ``("next", "success")`` entry, declare every episode
            successful (success at its last step). Without it such a buffer is refused.
        drop_incomplete: leave out episodes that were still running when the buffer was
            dumped (no ``("next", "done")`` at their end); by default they are refused.
        action_dim, state_dim: the sizes the caller needs (last dim of ``"action"`` and of
            ``("observation", "state")``); another size is refused.

    Returns:
        one TensorDict ``[T]`` per episode, in the order the episodes started, with the
        buffer's own entries (TorchRL's ``"index"`` bookkeeping left out). Where the buffer
        wrapped around, the oldest episode lost its first steps: it is left out with a
        warning (unless a ``"step_count"`` of 0 shows it starts at its reset).
    """
    path = Path(path).expanduser()
    storage, n, writer = _replay_buffer_storage(path)
    order = torch.arange(n)
    wrapped = int(writer.get("write_count", n)) > n and "cursor" in writer
    if wrapped:  # slots cursor..n-1 hold the oldest rows
        order = (torch.arange(n) + int(writer["cursor"])) % n
    data = storage[order].clone()  # in memory: the dump may be deleted afterwards
    if "index" in data.keys():
        del data["index"]
    where = repr(str(path))
    keys = list(data.keys(True, True))
    if DONE not in keys or "action" not in keys:
        missing = "('next', 'done')" if DONE not in keys else "'action'"
        raise DemoSourceError(f"{where} has no {missing} entry (it has {keys}), so its episodes are unknown; dump a "
                              "buffer of collector or env rollouts (TorchRL's TED layout).")
    if action_dim is not None and data.get("action").shape[-1] != action_dim:
        raise DemoSourceError(f"{where}: actions have shape {list(data.get('action').shape[1:])} per step but "
                              f"{action_dim} values are needed (action_dim={action_dim}); use a buffer of this task.")
    if state_dim is not None:
        if STATE not in keys:
            raise DemoSourceError(f"{where} has no ('observation', 'state') entry (it has {keys}); dump a buffer "
                                  "whose observations are states.")
        if data.get(STATE).shape[-1] != state_dim:
            raise DemoSourceError(f"{where}: states have shape {list(data.get(STATE).shape[1:])} per step but "
                                  f"{state_dim} values are needed (state_dim={state_dim}); use a buffer of this task.")
    if SUCCESS not in keys and not assume_success:
        raise DemoSourceError(f"{where} records no success (no ('next', 'success') entry): pass assume_success=True "
                              "if every episode in it is a successful demonstration.")
    ids = data.get(("collector", "traj_ids"), None)
    finished, unfinished = _segments(data.get(DONE).reshape(n).bool(), None if ids is None else ids.reshape(n))
    if wrapped:
        step = data.get("step_count", None)
        oldest = min([*finished, *unfinished], key=lambda r: int(r[0]))
        if step is None or int(step.reshape(n)[oldest[0]]) != 0:
            warnings.warn(f"{where}: the buffer wrapped around, so its oldest episode ({len(oldest)} steps) lost its "
                          "first steps; it is left out.", stacklevel=2)
            finished = [r for r in finished if r is not oldest]
            unfinished = [r for r in unfinished if r is not oldest]
    if unfinished and not drop_incomplete:
        rows = sum(len(r) for r in unfinished)
        raise DemoSourceError(
            f"{where}: {len(unfinished)} episode(s) ({rows} steps, the last at row {int(unfinished[-1][-1])}) have no "
            "('next', 'done') at their end: they were still running when the buffer was dumped; pass "
            "drop_incomplete=True to leave them out.")
    if not finished:
        raise DemoSourceError(f"{where} holds no finished episode (no ('next', 'done') set).")
    trajectories = []
    for i, rows in enumerate(finished):
        traj = data[rows]
        bad = non_finite_key(traj)
        if bad is not None:
            raise DemoSourceError(f"{where}: episode {i} (rows {int(rows[0])}..{int(rows[-1])}) has NaN or inf in "
                                  f"{bad!r}; drop that episode from the buffer or repair it before dumping.")
        if SUCCESS not in keys:  # assume_success=True, stated by the caller
            traj.set(SUCCESS, traj.get(DONE).clone().bool())
        trajectories.append(traj)
    return trajectories


# ----------------------------------------------------------------------------------------
# metadata only
# ----------------------------------------------------------------------------------------
def inspect_demo_source(
    source: Literal["lerobot", "replay_buffer"],
    path: str | Path,
    *,
    state_key: str = "observation.state",
    image_key: str | None = None,
    action_key: str = "action",
    success_key: str | None = None,
) -> DemoSourceInfo:
    """Episodes, per-step shapes and whether success is recorded, from a source's metadata.

    Reads LeRobot's ``meta/info.json`` (and checks the episode table is there) or a dump's
    memory-mapped storage without loading its rows; raises :class:`DemoSourceError` for the
    problems the loaders report on these files.
    """
    path = Path(path).expanduser()
    if source == "lerobot":
        info = _lerobot_info(path)
        state = tuple(_feature(path, info, state_key, "state_key").get("shape") or ())
        action = tuple(_feature(path, info, action_key, "action_key").get("shape") or ())
        image = tuple(_feature(path, info, image_key, "image_key").get("shape") or ()) if image_key else None
        has_success = (success_key or _SUCCESS_COLUMN) in info["features"]
        if success_key is not None:
            _feature(path, info, success_key, "success_key")
        num = len(_read_episode_table(path, ["episode_index"])["episode_index"])
        return DemoSourceInfo("lerobot", path, num, action, state, image, has_success)
    if source == "replay_buffer":
        storage, n, _ = _replay_buffer_storage(path)
        keys = list(storage.keys(True, True))
        if DONE not in keys or "action" not in keys:
            raise DemoSourceError(f"{str(path)!r} has no ('next', 'done') or 'action' entry (it has {keys}); dump a "
                                  "buffer of collector or env rollouts (TorchRL's TED layout).")
        shape = lambda key: tuple(storage.get(key).shape[1:]) if key in keys else None  # noqa: E731
        num = int(storage.get(DONE)[:n].sum())
        return DemoSourceInfo("replay_buffer", path, num, shape("action"), shape(STATE), shape(IMAGE),
                              SUCCESS in keys)
    raise ValueError(f"source must be 'lerobot' or 'replay_buffer', got {source!r}.")
