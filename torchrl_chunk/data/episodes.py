"""Whole episodes from collector batches: the length the demo buffer judges is from the reset.

A TorchRL collector cuts its envs' episodes at batch boundaries: the tail of a batch row
is an episode still running, and its continuation opens the next batch. Judged alone,
that continuation looks like a short success, and the length filter of Section II.B
(``L(x_i) <= ell_limit``) would admit fragments. :class:`EpisodeStitcher` joins the
segments of each episode across any number of batches and ``extend`` calls, and refuses a
finished segment whose start it never saw.

Two facts of the data decide:

* **which segments belong together**: TorchRL's trajectory ids,
  ``("collector", "traj_ids")`` (one id per episode, kept across batches by ``Collector``,
  ``MultiSyncCollector`` and ``MultiAsyncCollector``); without them nothing is joined;
* **where an episode starts** (its first step after a reset), from the first of these
  the data holds: ``"is_init"`` (TorchRL's ``InitTracker``: True), the root
  ``"steps_executed"`` (written by :class:`~torchrl_chunk.envs.ChunkedEnv`: 0 after a
  reset), ``"step_count"`` (TorchRL's ``StepCounter``: 0). Data with none of them is
  refused with an error that names them: its starts cannot be known.

Hand-written because TorchRL's ``split_trajectories`` splits one batch by trajectory id
but neither carries an episode into the next batch nor checks that it saw its start.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from tensordict import TensorDictBase

from torchrl_chunk.data.trajectories import DONE, get_entry
from torchrl_chunk.keys import STEPS_EXECUTED_KEY

#: ``("collector", "traj_ids")``: TorchRL's collectors' episode ids.
TRAJ_IDS_KEY = ("collector", "traj_ids")
#: Entries that say whether a step is the first of an episode, in the order they are tried.
START_MARKERS = (("is_init", True), (STEPS_EXECUTED_KEY, 0), ("step_count", 0))


def episode_starts(part: TensorDictBase) -> torch.Tensor:
    """Bool ``[T]``: True where ``part`` (batch ``[T]``) holds the first step of an episode.

    Raises ``ValueError`` when the data has none of :data:`START_MARKERS`.
    """
    for key, value in START_MARKERS:
        marker = part.get(key, None)
        if marker is not None:
            return (marker.reshape(part.shape[0], -1)[:, 0] == value).cpu()
    raise ValueError(
        "Cannot tell where the offered trajectories start (no 'is_init', root 'steps_executed' or "
        "'step_count' entry): collect through ChunkedEnv, add TorchRL's InitTracker() or StepCounter() "
        "to the env, or offer one whole trajectory with buffer.add(trajectory)."
    )


@dataclass
class Segments:
    """What one :meth:`EpisodeStitcher.stitch` call found."""

    #: episodes that ended in this call, each from its reset (batch ``[T]``)
    finished: list[TensorDictBase]
    #: finished segments whose start was never seen (refused as ``"fragment"``)
    fragments: int = 0
    #: segments still running at the end of their input (held open, or dropped without ids)
    incomplete: int = 0


class EpisodeStitcher:
    """Joins the segments of each episode across calls; see the module docstring.

    Args:
        max_open: how many running episodes are held at most; beyond it the least recently
            continued one is dropped (its end, if it comes, is then refused as a fragment).
            Bounds memory when a collector abandons episodes (``reset_at_each_iter=True``,
            ``collector.reset()``); :meth:`discard_open` drops them all at once.

    Example:
        >>> stitcher = EpisodeStitcher()
        >>> found = stitcher.stitch([batch[i] for i in range(batch.shape[0])])  # doctest: +SKIP
        >>> found.finished, found.fragments, found.incomplete  # doctest: +SKIP
    """

    def __init__(self, max_open: int = 1024) -> None:
        if max_open < 0:
            raise ValueError(f"max_open must be >= 0, got {max_open}.")
        self.max_open = int(max_open)
        self._open: OrderedDict[int, tuple[list[TensorDictBase], TensorDictBase | None]] = OrderedDict()

    @property
    def num_open(self) -> int:
        """Running episodes held, waiting for their continuation."""
        return len(self._open)

    def discard_open(self) -> int:
        """Drop every running episode held (e.g. after the collector was reset); returns how many."""
        n = len(self._open)
        self._open.clear()
        return n

    def stitch(self, data: Sequence[TensorDictBase] | TensorDictBase) -> Segments:
        """Split ``data`` into episodes and join them with the running ones held.

        ``data``: a TensorDict ``[T]`` or ``[N, T]`` (a collector batch: each row one env's
        consecutive steps), or a list of them; rows hold consecutive steps (of one env, or
        several episodes in order, delimited by ``("next", "done")``).
        """
        out = Segments(finished=[])
        for part in _rows(data):
            part = _valid_steps(part)
            if part is None:
                continue
            starts = episode_starts(part)
            ids = part.get(TRAJ_IDS_KEY, None)
            ids = ids.reshape(part.shape[0], -1)[:, 0].cpu() if ids is not None else None
            for begin, end, done in _segments(get_entry(part, DONE), ids, starts):
                self._offer(part[begin:end], bool(starts[begin]), None if ids is None else int(ids[begin]), done, out)
        return out

    def _offer(self, seg: TensorDictBase, starts: bool, traj_id: int | None, done: bool, out: Segments) -> None:
        held, last_next = self._open.pop(traj_id, (None, None)) if traj_id is not None else (None, None)
        if held is not None and not starts and not _continues(last_next, seg):
            held = None  # another episode under the same id (e.g. two collectors' id pools)
        if starts:
            pieces = [seg]  # a fresh episode: whatever was held under this id was abandoned
        elif held is not None:
            pieces = held + [_light(seg)]
        elif done:
            out.fragments += 1
            return
        else:  # a running episode whose start was never seen: it can only end as a fragment
            out.incomplete += 1
            return
        if done:
            out.finished.append(pieces[0] if len(pieces) == 1 else torch.cat(pieces, 0))
            return
        out.incomplete += 1
        if traj_id is None or self.max_open == 0:
            return  # without trajectory ids a continuation cannot be recognised
        last = seg[-1].get("next", None)
        self._open[traj_id] = ([_light(p) for p in pieces], None if last is None else last.clone())
        while len(self._open) > self.max_open:
            self._open.popitem(last=False)


#: What a held segment keeps besides its ``"observation"`` entries and ``"action"``: enough to
#: judge, store and continue the episode (TorchRL's ``("next", ...)`` observations are dropped
#: but for the last step's, which the continuation must start from).
_HELD_KEYS = (("next", "done"), ("next", "success"), ("next", "steps_executed"), "steps_executed", "is_init",
              "step_count", TRAJ_IDS_KEY)


def _light(seg: TensorDictBase) -> TensorDictBase:
    """A held copy of a running segment: the keys the buffer reads, not the whole batch row."""
    return seg.select(*(k for k in ("observation", "action", *_HELD_KEYS) if seg.get(k, None) is not None)).clone()


def _continues(last_next: TensorDictBase | None, seg: TensorDictBase) -> bool:
    """Whether ``seg`` starts where the held episode stopped: each entry of its last step's
    ``"next"`` that ``seg``'s first step has at its root is equal (TorchRL's ``step_mdp`` moves
    them there), e.g. the observation and the executed-step count."""
    if last_next is None:
        return True
    first = seg[0]
    shared = [k for k in last_next.keys(True, True) if k != "reward" and first.get(k, None) is not None]
    return all(torch.equal(last_next.get(k), first.get(k)) for k in shared)


def _valid_steps(part: TensorDictBase) -> TensorDictBase | None:
    """``part`` without the padding of TorchRL's padded outputs (``("collector", "mask")``
    False, or a trajectory id < 0); ``None`` when nothing is left."""
    keep = part.get(("collector", "mask"), None)
    keep = keep.reshape(part.shape[0], -1).all(-1) if keep is not None else None
    ids = part.get(TRAJ_IDS_KEY, None)
    if ids is not None:
        valid = ids.reshape(part.shape[0], -1)[:, 0] >= 0
        keep = valid if keep is None else keep & valid
    if keep is None or bool(keep.all()):
        return part
    return part[keep] if bool(keep.any()) else None


def _rows(data: Sequence[TensorDictBase] | TensorDictBase) -> Iterator[TensorDictBase]:
    parts = [data] if isinstance(data, TensorDictBase) else list(data)
    for part in parts:
        if not isinstance(part, TensorDictBase) or part.batch_dims not in (1, 2):
            raise ValueError(
                "Expected trajectories [T], a collector batch [N, T], or a list of them, got "
                f"{getattr(part, 'batch_size', type(part).__name__)}."
            )
        if part.batch_size.numel() == 0:
            raise ValueError("Got an empty trajectory (0 steps).")
        if part.batch_dims == 2:
            yield from part.unbind(0)
        else:
            yield part


def _segments(done: torch.Tensor, ids: torch.Tensor | None, starts: torch.Tensor) -> Iterator[tuple[int, int, bool]]:
    """``(begin, end, ends_with_done)`` of each run of steps, cut after a done, at an id change
    and before an episode start."""
    done = done.reshape(done.shape[0], -1).any(-1).cpu()
    cut = done.clone()
    if ids is not None:
        cut[:-1] |= ids[1:] != ids[:-1]
    cut[:-1] |= starts[1:]
    begin = 0
    for end in (torch.nonzero(cut).flatten() + 1).tolist():
        yield begin, end, bool(done[end - 1])
        begin = end
    if begin < done.shape[0]:
        yield begin, done.shape[0], False


__all__ = ["EpisodeStitcher", "Segments", "START_MARKERS", "TRAJ_IDS_KEY", "episode_starts"]
