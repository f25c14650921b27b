import math

import pytest
import torch

from torchrl_chunk.schedules import Constant, TanhWarmup


def test_tanh_warmup_matches_eq8():
    s = TanhWarmup(40_000)
    assert s() == 0.0  # t = 0: BC only
    for t in [1, 10_000, 40_000, 80_000, 500_000]:
        assert s(t) == pytest.approx(math.tanh(t / 40_000), abs=1e-12)
    assert s(40_000) == pytest.approx(0.761594, abs=1e-6)
    s.step(40_000)
    assert s() == pytest.approx(0.761594, abs=1e-6)


def test_warmup_zero_means_no_warmup():
    assert TanhWarmup(0)(0) == 1.0


def test_schedule_is_monotone():
    s = TanhWarmup(100)
    values = [s(t) for t in range(0, 1000, 7)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert values[-1] < 1.0 + 1e-12


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), "40k", True])
def test_negative_or_bad_warmup_raises(bad):
    with pytest.raises(ValueError, match="warmup_steps"):
        TanhWarmup(bad)


def test_step_backwards_raises():
    with pytest.raises(ValueError, match="forward"):
        TanhWarmup(10).step(-3)


def test_constant():
    s = Constant(1.0)
    assert s(0) == s(10**9) == 1.0
    with pytest.raises(ValueError):
        Constant(-1.0)


@pytest.mark.parametrize("schedule", [TanhWarmup(123), Constant(0.5)])
def test_state_dict_round_trip(schedule):
    schedule.step(777)
    fresh = type(schedule)(123) if isinstance(schedule, TanhWarmup) else Constant(0.5)
    fresh.load_state_dict(schedule.state_dict())
    assert int(fresh.t) == 777
    assert fresh() == schedule()
    assert isinstance(schedule.state_dict()["t"], torch.Tensor)


def test_expert_share_decay():
    from torchrl_chunk.schedules import expert_share_decay

    assert expert_share_decay(1.0, 0.1) == 1.0  # only expert rows: the paper's weight
    assert expert_share_decay(0.0, 0.1) == pytest.approx(0.1)  # only the agent's own: the floor
    assert expert_share_decay(0.5, 0.0) == pytest.approx(0.5)
    for bad in ((1.5, 0.1), (0.5, -0.1), (0.5, 2.0)):
        with pytest.raises(ValueError, match="must lie in"):
            expert_share_decay(*bad)
