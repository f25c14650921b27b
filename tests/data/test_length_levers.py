"""The demo buffer's levers: the adaptive length limit and length-weighted sampling."""

from __future__ import annotations

import pytest
import torch

from _trajectories import chunked_traj, traj
from torchrl_chunk.data import AdaptiveLengthLimit, LengthFilteredReplayBuffer

H = 4


def buffer(experts=(60, 80), **kw):
    kw.setdefault("max_size", 5000)
    return LengthFilteredReplayBuffer([traj(T, tag=1000 * i) for i, T in enumerate(experts)], chunk_size=H,
                                      batch_size=64, generator=torch.Generator().manual_seed(0), **kw)


# -- the rule alone --------------------------------------------------------------------
def test_rule_is_the_papers_until_enough_successes():
    rule = AdaptiveLengthLimit(quantile=0.5, window=10, min_successes=3)
    rule.observe([30, 40])
    assert rule.limit(80) == 80
    rule.observe([50])
    assert rule.limit(80) == 40  # the median of 30, 40, 50


def test_rule_follows_the_recent_window_both_ways_capped_by_the_papers_limit():
    rule = AdaptiveLengthLimit(quantile=0.5, window=3, min_successes=1)
    rule.observe([20, 22, 24])
    assert rule.limit(80) == 22
    rule.observe([30, 34])  # window (24, 30, 34): slower again, the limit rises
    assert rule.limit(80) == 30
    rule.observe([90, 95, 99])
    assert rule.limit(80) == 80  # never above the paper's limit
    assert AdaptiveLengthLimit(quantile=0.5, window=3, min_successes=1, min_limit=50).limit(80) == 80
    floor = AdaptiveLengthLimit(quantile=0.5, window=3, min_successes=1, min_limit=25)
    floor.observe([10, 11, 12])
    assert floor.limit(80) == 25


def test_rule_quantile_is_an_observed_length():
    rule = AdaptiveLengthLimit(quantile=0.25, window=100, min_successes=1)
    rule.observe(range(1, 101))
    assert rule.limit(200) == 25


@pytest.mark.parametrize("kwargs, match", [
    ({"quantile": 0.0}, "quantile"), ({"quantile": 1.5}, "quantile"), ({"window": 0}, "window"),
    ({"window": 5, "min_successes": 6}, "min_successes"), ({"min_limit": 0}, "min_limit"),
])
def test_rule_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveLengthLimit(**kwargs)


# -- in the buffer ---------------------------------------------------------------------
def test_fixed_limit_stays_the_default():
    buf = buffer()
    buf.extend([traj(20) for _ in range(30)])
    assert buf.length_limit == buf.base_length_limit == 80 and buf.adaptive is None


def test_adaptive_limit_shrinks_with_the_agents_successes_and_evicts_what_no_longer_qualifies():
    buf = buffer(length_limit=AdaptiveLengthLimit(quantile=0.5, window=8, min_successes=4))
    report = buf.extend([traj(70), traj(50), traj(30, success=False), traj(75)])
    assert buf.length_limit == 80 and report.admitted == 3  # 3 successes seen: the paper's limit
    report = buf.extend([traj(40), traj(45)])
    # the offers count first: successes 70, 50, 75, 40, 45 -> median 50; 60, 70, 75, 80 are evicted
    assert buf.length_limit == 50
    assert report.evicted == 4 and report.admitted == 2 and sorted(buf.trajectory_lengths) == [40, 45, 50]
    assert buf.num_expert_trajectories == 0  # the experts were slower than the agent
    report = buf.extend([traj(48), traj(60)])  # window 70 50 75 40 45 48 60 -> median 50
    assert report.rejected == {"too_long": 1} and report.admitted == 1 and report.evicted == 0
    assert buf.length_limit == 50


def test_an_offer_is_judged_by_the_limit_its_own_batch_sets():
    """No trajectory is stored and evicted in the same extend(): the limit moves first."""
    buf = buffer(length_limit=AdaptiveLengthLimit(quantile=0.5, window=4, min_successes=2))
    report = buf.extend([traj(30), traj(70)])  # median 30: the 70 is refused, not stored then evicted
    assert buf.length_limit == 30 and report.admitted == 1 and report.rejected == {"too_long": 1}
    assert report.admitted_lengths == [30]


def test_adaptive_eviction_keeps_min_trajectories():
    buf = buffer(experts=(60, 80, 70), length_limit=AdaptiveLengthLimit(quantile=0.5, window=4, min_successes=1))
    report = buf.extend([traj(20)])  # limit 20: everything else is too long, but 3 trajectories stay
    assert buf.length_limit == 20 and report.evicted == 1
    assert sorted(buf.trajectory_lengths) == [20, 60, 70]  # the longest went first
    assert buf.min_trajectories == 3  # default: the number of expert demos


def test_adaptive_needs_filtered_mode_and_bad_limits_are_refused():
    with pytest.raises(ValueError, match="mode='filtered'"):
        buffer(length_limit="adaptive", mode="unrestricted")
    with pytest.raises(ValueError, match="'adaptive' or None"):
        buffer(length_limit="shrinking")
    assert buffer(length_limit="adaptive").adaptive is not None


def test_adaptive_state_round_trips_and_continues_identically(tmp_path):
    def make():
        return buffer(length_limit=AdaptiveLengthLimit(quantile=0.5, window=6, min_successes=2),
                      length_weighting=2.0)
    buf = make()
    buf.extend([traj(50), traj(40), traj(70)])
    buf.dumps(tmp_path / "ckpt")
    restored = buffer(experts=(5,))
    restored.loads(tmp_path / "ckpt")
    assert restored.length_limit == buf.length_limit == 50
    assert restored.base_length_limit == 80 and restored.adaptive.state_dict() == buf.adaptive.state_dict()
    assert restored.length_weighting == 2.0
    for offer in ([traj(30)], [traj(35), traj(45)]):
        assert buf.extend(offer) == restored.extend(offer)
        assert restored.length_limit == buf.length_limit and restored.trajectory_lengths == buf.trajectory_lengths
        assert torch.equal(restored.sample()["index"], buf.sample()["index"])


# -- length-weighted sampling ------------------------------------------------------------
def _trajectory_share(buf, n=20000):
    lengths = torch.tensor([t.length for t in buf._trajs])
    ids = buf.sample(n)["traj_id"]
    return {int(L): float((ids == t.traj_id).float().mean()) for L, t in zip(lengths, buf._trajs)}


def test_uniform_rows_favour_long_trajectories_and_alpha_one_evens_them():
    buf = buffer(experts=(20, 80))
    share = _trajectory_share(buf)
    assert share[80] == pytest.approx(0.8, abs=0.02)  # uniform over rows: 80 of 100 rows
    buf.length_weighting = 1.0
    share = _trajectory_share(buf)
    assert share[80] == pytest.approx(0.5, abs=0.02)
    buf.length_weighting = 2.0  # trajectory share ~ 1/L -> 80/(80+20) for the short one
    share = _trajectory_share(buf)
    assert share[20] == pytest.approx(0.8, abs=0.02)


def test_weights_follow_admissions_and_evictions():
    buf = buffer(experts=(40,), length_weighting=1.0, min_trajectories=1,
                 length_limit=AdaptiveLengthLimit(quantile=0.5, window=4, min_successes=2))
    buf.extend([traj(10)])
    share = _trajectory_share(buf)
    assert share[10] == pytest.approx(0.5, abs=0.02)
    buf.extend([traj(12), traj(30)])  # limit -> 12: the expert (40) and 30 are evicted / refused
    assert sorted(buf.trajectory_lengths) == [10, 12]
    share = _trajectory_share(buf)
    assert set(share) == {10, 12} and share[10] == pytest.approx(0.5, abs=0.02)


def test_weights_count_trajectories_not_rows():
    """An expert demo has a row per env step, a chunked agent trajectory one per decision:
    alpha = 1 still draws both equally often."""
    buf = buffer(experts=(40,), length_weighting=1.0)
    buf.extend([chunked_traj([4] * 10)])  # 40 env steps in 10 decisions
    assert len(buf) == 50 and buf.trajectory_lengths == [40, 40]
    expert_share = float(buf.sample(20000)["is_expert"].float().mean())
    assert expert_share == pytest.approx(0.5, abs=0.02)
    buf.length_weighting = 0.0  # uniform over rows: the expert's 40 rows against 10
    assert float(buf.sample(20000)["is_expert"].float().mean()) == pytest.approx(0.8, abs=0.02)


def test_large_weighting_does_not_underflow():
    buf = buffer(experts=(200, 2), length_weighting=40.0)
    assert _trajectory_share(buf, 2000)[2] == 1.0


def test_zero_weighting_draws_exactly_as_before():
    a, b = buffer(), buffer(length_weighting=0.0)
    b.length_weighting = 3.0
    b.length_weighting = 0.0
    assert torch.equal(a.sample()["index"], b.sample()["index"])


@pytest.mark.parametrize("alpha", [-1.0, float("nan"), float("inf"), "2"])
def test_bad_weighting(alpha):
    with pytest.raises(ValueError, match="length_weighting"):
        buffer(length_weighting=alpha)


def test_expert_row_fraction():
    buf = buffer(experts=(20, 20))
    assert buf.expert_row_fraction == 1.0
    buf.extend([traj(10)])
    assert buf.expert_row_fraction == pytest.approx(40 / 50)


def test_loads_a_format_3_buffer_as_a_fixed_limit(tmp_path):
    """tests/data/fixtures/buffer_v3 was written by the buffer of commit 816ede8 (before the
    adaptive limit); samples recorded with that version."""
    import shutil
    from pathlib import Path

    saved = shutil.copytree(Path(__file__).parent / "fixtures" / "buffer_v3", tmp_path / "v3")
    buf = LengthFilteredReplayBuffer([traj(3)], chunk_size=H, max_size=40, batch_size=4,
                                     generator=torch.Generator().manual_seed(99), length_limit="adaptive")
    buf.loads(saved)
    assert buf.trajectory_lengths == [6, 8, 5, 4] and buf.length_limit == buf.base_length_limit == 8
    assert buf.adaptive is None  # the saved file wins: it was made with a fixed limit
    assert [buf.sample()["index"].tolist() for _ in range(2)] == [[5, 20, 15, 9], [17, 4, 0, 11]]
    assert buf.length_weighting == 0.0
    buf.extend([traj(2, tag=700) for _ in range(20)])
    assert buf.length_limit == 8
