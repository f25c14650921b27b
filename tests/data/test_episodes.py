"""Episodes cut by collector batches are judged on their length from the reset (data/episodes.py)."""

from __future__ import annotations

import functools

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector, MultiAsyncCollector, MultiSyncCollector

from _trajectories import H, traj
from envs.toy import CountingEnv
from torchrl_chunk.data import LengthFilteredReplayBuffer
from torchrl_chunk.data.episodes import EpisodeStitcher, episode_starts
from torchrl_chunk.envs import ChunkedEnv

TERMINATE_AT = (9, 14, 23)  # env steps to success of each env: the true lengths


def counting_env():
    return ChunkedEnv(CountingEnv(terminate_at=TERMINATE_AT, max_steps=100), chunk_size=H)


def full_chunks(td):
    return td.set("action", torch.zeros(*td.shape, H, 2))


def buffer():  # limit 40: every true episode qualifies, a fragment would show a shorter length
    return LengthFilteredReplayBuffer([traj(40)], chunk_size=H, batch_size=8)


def guide_loop(collector, buf, batches):
    """The README / guide loop: offer each row of each batch to the buffer."""
    lengths = []
    for i, batch in enumerate(collector):
        lengths += buf.extend([batch[j] for j in range(batch.shape[0])]).admitted_lengths
        if i + 1 == batches:
            break
    collector.shutdown()
    return lengths


@pytest.mark.parametrize("decisions", [1, 2, 3, 5, 8])
def test_the_guide_loop_admits_true_lengths_at_any_frames_per_batch(decisions):
    buf = buffer()
    collector = Collector(counting_env(), full_chunks, frames_per_batch=3 * decisions, total_frames=-1)
    lengths = guide_loop(collector, buf, batches=60 // decisions)
    assert lengths and set(lengths) == set(TERMINATE_AT)  # never a fragment's length
    assert buf.stats.rejected.get("fragment", 0) == 0


@pytest.mark.parametrize("collector_cls", [MultiSyncCollector, MultiAsyncCollector])
def test_multi_process_collectors(collector_cls):
    buf = buffer()
    collector = collector_cls([counting_env, counting_env], full_chunks, frames_per_batch=12, total_frames=-1)
    lengths = guide_loop(collector, buf, batches=20)
    assert lengths and set(lengths) == set(TERMINATE_AT)


def test_whole_batches_and_split_calls_give_the_same_admissions():
    collector = Collector(counting_env(), full_chunks, frames_per_batch=3 * 2, total_frames=-1)
    whole, split = buffer(), buffer()
    for i, batch in enumerate(collector):
        a = whole.extend(batch)  # [N, T] at once
        b = [split.extend(batch[j]) for j in range(batch.shape[0])]  # one call per env
        assert a.admitted_lengths == [n for r in b for n in r.admitted_lengths]
        if i == 30:
            break
    collector.shutdown()
    assert whole.trajectory_lengths == split.trajectory_lengths
    assert sorted(set(whole.trajectory_lengths[1:])) == sorted(TERMINATE_AT)


def steps(T, start_at=0, traj_id=0, done_at=None, success=True):
    """Toy chunked rows: full chunks (4 steps each), the first decision at ``start_at``."""
    td = TensorDict(
        {
            ("observation", "state"): torch.zeros(T, 3),
            "action": torch.zeros(T, H, 2),
            "steps_executed": torch.full((T, 1), H),
            ("next", "steps_executed"): torch.full((T, 1), H),
            ("next", "done"): torch.zeros(T, 1, dtype=torch.bool),
            ("next", "success"): torch.zeros(T, 1, dtype=torch.bool),
            ("collector", "traj_ids"): torch.full((T,), traj_id),
        },
        [T],
    )
    if start_at is not None and start_at < T:
        td["steps_executed"][start_at] = 0
    if done_at is not None:
        td["next", "done"][done_at] = True
        td["next", "success"][done_at] = success
    return td


def test_segments_of_one_episode_are_joined():
    s = EpisodeStitcher()
    first = s.stitch(steps(3, traj_id=7))
    assert first.finished == [] and first.incomplete == 1 and s.num_open == 1
    assert s.stitch(steps(2, start_at=None, traj_id=7)).incomplete == 1
    end = steps(4, start_at=2, traj_id=7, done_at=1)
    end["collector", "traj_ids"][2:] = 8  # the collector's next episode in this env
    last = s.stitch(end)
    assert [t.shape[0] for t in last.finished] == [3 + 2 + 2]  # from the reset, not 2
    assert last.incomplete == 1 and s.num_open == 1  # episode 8, held for its continuation
    assert last.fragments == 0


def test_an_end_without_a_start_is_a_fragment_and_is_never_stored():
    buf = buffer()
    report = buf.extend(steps(3, start_at=None, traj_id=4, done_at=2))
    assert report.rejected == {"fragment": 1} and report.admitted == 0
    assert buf.num_trajectories == 1  # the expert only


def test_without_trajectory_ids_nothing_is_joined_and_fragments_are_refused():
    buf = buffer()
    head = steps(3).exclude(("collector", "traj_ids"))
    tail = steps(2, start_at=None, done_at=1).exclude(("collector", "traj_ids"))
    assert buf.extend(head).incomplete == 1
    assert buf.extend(tail).rejected == {"fragment": 1}


def test_a_fresh_start_under_a_held_id_drops_the_abandoned_episode():
    s = EpisodeStitcher()
    s.stitch(steps(3, traj_id=1))
    found = s.stitch(steps(2, traj_id=1, done_at=1))  # starts at a reset (collector.reset())
    assert [t.shape[0] for t in found.finished] == [2]


def test_open_episodes_are_bounded_and_can_be_discarded():
    s = EpisodeStitcher(max_open=2)
    for i in range(3):
        s.stitch(steps(2, traj_id=i))
    assert s.num_open == 2
    assert s.stitch(steps(1, start_at=None, traj_id=0, done_at=0)).fragments == 1  # the oldest went
    buf = buffer()
    buf.extend(steps(2, traj_id=5))
    assert buf.discard_open_episodes() == 1
    assert buf.extend(steps(1, start_at=None, traj_id=5, done_at=0)).rejected == {"fragment": 1}


def test_start_markers():
    td = steps(3).exclude("steps_executed")
    with pytest.raises(ValueError, match="InitTracker"):
        episode_starts(td)
    td["is_init"] = torch.tensor([[False], [True], [False]])
    assert episode_starts(td).tolist() == [False, True, False]
    td = td.exclude("is_init").set("step_count", torch.tensor([[5], [0], [1]]))
    assert episode_starts(td).tolist() == [False, True, False]


def test_add_takes_one_whole_trajectory_without_markers():
    buf = buffer()
    assert buf.add(traj(12).exclude("is_init")).admitted_lengths == [12]
    with pytest.raises(ValueError, match="one whole trajectory"):
        buf.add(torch.cat([traj(3), traj(4)]))


@pytest.mark.slow
def test_metaworld_guide_loop_lengths_equal_whole_episode_lengths():
    """The guide's loop on reach-v3 with a controller that succeeds in 20-80 steps: the admitted
    lengths at small frames_per_batch equal those of one batch holding every episode whole."""
    from _ray import reach_controller
    from torchrl.envs.utils import ExplorationType

    from torchrl_chunk.envs import make_metaworld_env

    make = functools.partial(make_metaworld_env, "reach-v3", num_envs=2, chunk_size=H, seed=3)
    policy = reach_controller(gain=3.0)

    t = torch.linspace(0, 1, 200).unsqueeze(-1)  # a demo that moves (only its length matters here)
    expert = TensorDict({("observation", "state"): t.expand(200, 39).clone(), "action": (t - 0.5).expand(200, 4).clone(),
                         ("next", "done"): torch.arange(200).eq(199).view(200, 1),
                         ("next", "success"): torch.arange(200).eq(199).view(200, 1)}, [200])

    def lengths(decisions, batches):
        buf = LengthFilteredReplayBuffer([expert], chunk_size=H, batch_size=8)
        collector = Collector(make(), policy, frames_per_batch=2 * decisions, total_frames=-1,
                              exploration_type=ExplorationType.DETERMINISTIC)
        collector.set_seed(0)
        return sorted(guide_loop(collector, buf, batches)), buf

    want, _ = lengths(120, 1)  # every episode that ends within 120 decisions, whole
    assert len(want) >= 4 and min(want) > H
    for decisions in (1, 7):
        got, buf = lengths(decisions, 120 // decisions)
        assert got == want, decisions
        assert buf.stats.rejected.get("fragment", 0) == 0


def test_an_id_reused_by_another_episode_is_not_joined():
    """Two id pools (e.g. two collectors, or Ray workers) can give one id to two episodes: a
    segment joins the held one only if it starts where that one stopped."""
    s = EpisodeStitcher()
    head = steps(3, traj_id=7)
    head["next", "observation", "state"] = torch.full((3, 3), 5.0)  # where env A stopped
    s.stitch(head)
    other = steps(2, start_at=None, traj_id=7, done_at=1)  # env B's episode 7, mid-way
    other["observation", "state"] = torch.full((2, 3), 9.0)
    assert s.stitch(other).fragments == 1
    s.stitch(head)
    same = steps(2, start_at=None, traj_id=7, done_at=1)
    same["observation", "state"] = torch.full((2, 3), 5.0)  # env A's continuation
    assert [t.shape[0] for t in s.stitch(same).finished] == [5]


def test_padding_of_padded_collector_outputs_is_ignored():
    padded = torch.cat([steps(3, traj_id=2, done_at=2), steps(2, traj_id=-1)])
    padded["collector", "mask"] = torch.tensor([True, True, True, False, False])
    padded["collector", "traj_ids"][3:] = 0  # TorchRL pads ids with 0 where mask is False
    found = EpisodeStitcher().stitch(padded)
    assert [t.shape[0] for t in found.finished] == [3] and found.incomplete == 0


def test_an_episode_start_inside_a_segment_cuts_it():
    """An episode that ended without a done flag (its env was reset) is not merged into the next."""
    row = steps(5, start_at=0, done_at=4).exclude(("collector", "traj_ids"))
    row["steps_executed"][2] = 0  # a reset after two decisions, no done before it
    found = EpisodeStitcher().stitch(row)
    assert [t.shape[0] for t in found.finished] == [3] and found.incomplete == 1
