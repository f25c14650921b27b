"""admit / plan_eviction: the demo buffer's decisions as pure functions, tested alone."""

from __future__ import annotations

import pytest

from torchrl_chunk.data import AdmissionReport, admit, plan_eviction


@pytest.mark.parametrize(
    "length, success, finite, mode, expected",
    [
        (8, True, True, "filtered", None),  # at the limit: admitted (L <= ell_limit)
        (9, True, True, "filtered", "too_long"),
        (3, False, True, "filtered", "failure"),
        (3, True, False, "filtered", "non_finite"),
        (3, False, False, "filtered", "non_finite"),  # NaN is named before failure
        (50, True, True, "unrestricted", None),
        (50, True, False, "unrestricted", "non_finite"),
        (5, False, True, "unrestricted", "failure"),
        (3, True, True, "static", "static"),
        (3, True, False, "static", "static"),
    ],
)
def test_admit(length, success, finite, mode, expected):
    assert admit(length, success, finite, mode, length_limit=8) == expected


def test_plan_eviction_fits_without_evicting():
    assert plan_eviction([5, 8], [5, 8], free_rows=4, new_length=9, new_rows=4, max_rows=17) == []


def test_plan_eviction_longest_first_oldest_among_equals():
    # lengths 6, 9, 6: the 9 goes first, then the older 6
    assert plan_eviction([6, 9, 6], [6, 9, 6], 0, new_length=6, new_rows=12, max_rows=21) == [1, 0]


def test_plan_eviction_refuses_without_evicting_anything():
    """Evicting the 8 is not enough and the 3 is shorter than the newcomer: refuse, evict nothing.

    (The old buffer evicted the 8 and then refused the newcomer, losing a demonstration.)
    """
    assert plan_eviction([8, 3], [8, 3], 0, new_length=5, new_rows=10, max_rows=11) is None


def test_plan_eviction_too_big_and_max_trajectories():
    assert plan_eviction([], [], 10, new_length=1, new_rows=11, max_rows=10) is None
    assert plan_eviction([5, 3], [5, 3], 100, 4, 4, 108, max_trajectories=2) == [0]
    assert plan_eviction([2, 3], [2, 3], 100, 4, 4, 105, max_trajectories=2) is None


def test_report_accumulates_and_separates_incomplete():
    total, one = AdmissionReport(), AdmissionReport(admitted=1, incomplete=2, admitted_lengths=[7])
    one.reject("failure")
    one.reject("failure")
    one.reject("non_finite")
    total.add(one)
    total.add(one)
    assert total.rejected == {"failure": 4, "non_finite": 2} and total.num_rejected == 6
    assert total.incomplete == 4 and total.offered == 8 and total.admitted_lengths == [7, 7]


def test_motionless_expert_demos():
    """An expert demo never moves when all its actions are within 1e-4 of zero or its state never
    changes by more than 1e-6 (zero actions marked successful were cloned before)."""
    import torch

    from _trajectories import chunked_traj, traj
    from torchrl_chunk.data.trajectories import MOTIONLESS_ACTION_ATOL, MOTIONLESS_STATE_ATOL, motionless

    assert (MOTIONLESS_ACTION_ATOL, MOTIONLESS_STATE_ATOL) == (1e-4, 1e-6)
    assert motionless(traj(5)) is None and motionless(chunked_traj([4, 4, 2])) is None
    still = traj(5, tag=3.0)
    still["action"] = torch.full_like(still["action"], -1e-4)  # at the threshold: still
    assert motionless(still) == "all its actions are zero (|a| <= 0.0001)"
    still["action"][2, 1] = 2e-4  # one entry beyond it: the arm moves
    assert motionless(still) is None
    frozen = traj(5, tag=3.0)
    frozen["observation", "state"] = frozen["observation", "state"][:1].expand(5, -1) + 1e-7 * torch.rand(5, 1)
    assert motionless(frozen) == "its state never changes (by more than 1e-06)"
    frozen["next", "observation", "state"] = frozen["observation", "state"] + 1.0  # the last next state moved
    assert motionless(frozen) is None
    one = traj(1, tag=3.0)  # one state, no next one: only the actions tell
    assert motionless(one) is None
