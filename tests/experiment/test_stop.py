"""Stopping on SIGTERM / SIGINT: a request at the first signal, raised at the next safe point;
out at once at the second; forwarded to shard processes, which hear a Ctrl-C only once."""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
from pathlib import Path

import pytest

from torchrl_chunk.experiment import StopRequested, StopSignals, map_shards, stop


def _deliver(sig: int) -> None:
    """Send ``sig`` to this process and let its handler run (it runs in the main thread)."""
    os.kill(os.getpid(), sig)
    for _ in range(100):
        time.sleep(0.001)  # the handler runs between two bytecodes of the main thread


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_is_a_request_raised_at_the_next_check(sig, code, capfd):
    before = signal.getsignal(sig)
    with StopSignals(announce="the end of this iteration") as signals:
        stop.check("nothing yet")  # no request: nothing happens
        _deliver(sig)  # no KeyboardInterrupt, no exit
        assert signals.requested == sig and stop.requested() == sig
        with pytest.raises(StopRequested) as err:
            stop.check(lambda: "job A checkpointed at iteration 3")
    assert signal.getsignal(sig) is before  # put back
    assert err.value.exit_code == code and err.value.signame == signal.Signals(sig).name
    assert str(err.value) == f"stopped by {signal.Signals(sig).name}: job A checkpointed at iteration 3"
    out = capfd.readouterr().out
    assert f"{signal.Signals(sig).name}: stopping at the end of this iteration" in out


def test_a_second_signal_exits_at_once_with_one_line(capfd, monkeypatch):
    with StopSignals(second="resume=run continues from them"):
        _deliver(signal.SIGTERM)
        _deliver(signal.SIGTERM)  # at once: the same stop delivered twice (process and group)
        monkeypatch.setattr(stop, "_SAME_STOP_S", 0.0)
        with pytest.raises(SystemExit) as err:
            _deliver(signal.SIGTERM)  # later: a second request
    assert err.value.code == 143
    lines = capfd.readouterr().err.strip().splitlines()
    assert lines == ["stopped by a second SIGTERM: exiting at once, without saving; resume=run continues from them"]


def test_an_interruptible_region_stops_at_once():
    with StopSignals(announce=None):
        with pytest.raises(StopRequested, match="in its final evaluation") as err:
            with stop.interruptible("ours/reach-v3 was in its final evaluation"):
                _deliver(signal.SIGINT)
                time.sleep(5)  # not reached
        assert err.value.signum == signal.SIGINT
        with pytest.raises(StopRequested):  # a request made before: raised on entering
            with stop.interruptible("eval"):
                pass


def test_not_a_normal_exception_and_picklable():
    err = StopRequested(signal.SIGTERM, "a; b")
    assert not isinstance(err, Exception)  # `except Exception` on the way up lets it through
    back = pickle.loads(pickle.dumps(err))
    assert (back.signum, back.detail, back.exit_code) == (signal.SIGTERM, "a; b", 143)


def test_outside_stop_signals_nothing_changes():
    assert stop.active() is None and stop.requested() is None
    stop.check("x")
    with stop.interruptible("x"), stop.forward_to(lambda: [1]):
        pass


def test_ignored_signals_stay_ignored_and_replaced_handlers_are_rearmed():
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # nohup, a background job, a shard process
    try:
        with StopSignals() as signals:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            signal.signal(signal.SIGTERM, lambda *a: None)  # as ray.init does
            assert stop.requested() is None  # re-arms
            assert signal.getsignal(signal.SIGTERM) == signals._handler
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


# ---------------------------------------------------------------------- shard processes
def shard_job(items, started: str, position):
    """Announce this process, then work in steps until asked to stop (a spawned shard)."""
    Path(started, f"{position}.pid").write_text(str(os.getpid()))
    for step in range(3000):
        stop.check(lambda: f"shard {position} stopped at step {step}")
        time.sleep(0.01)
    return [("never stopped", position)]


def test_shard_processes_stop_at_their_safe_points_after_a_ctrl_c(tmp_path):
    """Ctrl-C reaches every process of the group: the shards ignore it and hear it once, from the
    parent, as SIGTERM (twice would exit at once). The same forwarding carries a SIGTERM that only
    the parent received (``docker stop`` signals PID 1 only)."""

    def ctrl_c():
        deadline = time.time() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        for f in tmp_path.glob("*.pid"):
            os.kill(int(f.read_text()), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=ctrl_c, daemon=True)
    thread.start()
    with StopSignals(announce=None):
        try:
            map_shards(shard_job, [[1], [2]], str(tmp_path))
        except StopRequested as stopped:
            err = stopped
        except BaseException as other:  # noqa: BLE001 - e.g. a shard's KeyboardInterrupt: a failure, not pytest's stop
            pytest.fail(f"the shards did not stop at their safe points: {other!r}")
        else:
            pytest.fail("the shards were not stopped")
    thread.join()
    assert err.signum == signal.SIGINT and err.exit_code == 130
    details = err.detail.split("; ")
    assert sorted(d.split(" stopped")[0] for d in details) == ["shard 0", "shard 1"], err.detail
