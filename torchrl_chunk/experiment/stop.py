"""Stopping a run on SIGTERM / SIGINT: a checkpoint at the next safe point, one line, exit ``128 + signum``.

Schedulers (Slurm, Kubernetes, ``docker stop``) send SIGTERM and kill a few seconds later;
Ctrl-C sends SIGINT to the whole foreground process group. Python's defaults end a training
loop wherever it is: SIGTERM without a word (rc 143, the iterations since the last periodic
checkpoint lost), SIGINT with a ``KeyboardInterrupt`` traceback. Inside :class:`StopSignals`
the first signal only *records* the request; the loop asks at its safe points (after an
iteration's update, when the counters and the schedule have advanced) and then saves and
raises :class:`StopRequested`, which the script turns into one line and the exit status
``128 + signum`` (143 for SIGTERM, 130 for SIGINT, as a shell reports a process killed by
them). A second signal exits at once (``SystemExit(128 + signum)``, ``finally`` blocks run;
what is on disk is whatever the last save left, which a crash-safe checkpoint survives).

* :func:`check` / :func:`requested`: the safe points. Work that loses nothing when cut (an
  evaluation that is redone on resume) runs under :func:`interruptible`, where the first
  signal raises :class:`StopRequested` at once.
* Child processes: :func:`forward_to` sends the stop on to them (``docker stop`` signals PID 1
  only) as SIGTERM; :func:`child_process_setup` (a pool initializer) makes a child ignore
  SIGINT (Ctrl-C reaches the whole group: the parent forwards it once, so a child does not
  see it twice and exit at once) and stop on SIGTERM at its own safe points.
* A signal that was *ignored* when :class:`StopSignals` starts (``nohup``, a background job
  of a non-interactive shell, such a child) stays ignored.
* Handlers are re-armed at every :func:`check` / :func:`requested`: ``ray.init`` replaces the
  SIGTERM handler of the process that calls it.

Signal handlers run in the main thread only; elsewhere :class:`StopSignals` does nothing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Union

__all__ = [
    "StopRequested",
    "StopSignals",
    "check",
    "child_process_setup",
    "forward_to",
    "interruptible",
    "requested",
]

Detail = Union[str, Callable[[], str]]


class StopRequested(BaseException):
    """A stop signal reached a safe point. ``detail`` says what was saved (one line).

    A ``BaseException`` (like ``KeyboardInterrupt``), so that ``except Exception`` blocks on
    the way up do not report it as an error. Picklable: it crosses process pools.
    """

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(int(signum), detail)
        self.signum = int(signum)
        self.detail = detail

    @property
    def signame(self) -> str:
        return _name(self.signum)

    @property
    def exit_code(self) -> int:
        """``128 + signum``: what a shell shows for a process ended by that signal."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"stopped by {self.signame}" + (f": {self.detail}" if self.detail else "")


def _name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _write(fd: int, text: str) -> None:
    """Write from a signal handler: ``print`` could re-enter a stream the main thread is writing."""
    try:
        os.write(fd, text.encode(errors="replace"))
    except OSError:
        pass


_ACTIVE: list[StopSignals] = []  # innermost last
#: A signal within this many seconds of the first is the same stop delivered twice, not a second one.
_SAME_STOP_S = 1.0


class StopSignals:
    """Within ``with StopSignals():``, SIGTERM and SIGINT request a stop instead of killing.

    Args:
        signals: the signals handled (default SIGTERM and SIGINT); those ignored (``SIG_IGN``)
            when entering stay ignored.

    Keyword Args:
        announce: printed on stdout at the first signal, after ``"<SIGNAME>: stopping at "``
            (e.g. ``"the end of this iteration"``); ``None``: nothing.
        second: appended to the line printed on stderr when a second signal exits at once
            (e.g. where the last checkpoints are); ``None``: no line.
    """

    def __init__(
        self,
        signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
        *,
        announce: str | None = "the next safe point",
        second: str | None = "",
    ) -> None:
        self.signals = tuple(int(s) for s in signals)
        self.announce = announce
        self.second = second
        self.requested: int | None = None  # the first signal received
        self._handler = self._handle  # one bound method: compared when re-arming
        self._previous: dict[int, object] = {}
        self._interrupt: list[str] = []  # details of the interruptible regions entered
        self._forward: list[Callable[[], Iterable[int]]] = []

    # ------------------------------------------------------------------ installation
    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                previous = signal.getsignal(sig)
                if previous == signal.SIG_IGN:
                    continue
                signal.signal(sig, self._handler)
                self._previous[sig] = previous
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def rearm(self) -> None:
        """Put the handlers back where another library replaced them (``ray.init``: SIGTERM)."""
        if not self._previous or threading.current_thread() is not threading.main_thread():
            return
        for sig in self._previous:
            if signal.getsignal(sig) != self._handler:
                signal.signal(sig, self._handler)

    # ------------------------------------------------------------------ the loop's side
    def check(self, detail: Detail = "") -> None:
        """Raise :class:`StopRequested` (with ``detail``, or ``detail()``) if a stop was requested."""
        self.rearm()
        if self.requested is not None:
            raise StopRequested(self.requested, detail() if callable(detail) else detail)

    @contextmanager
    def interruptible(self, detail: str = "") -> Iterator[None]:
        """A region that a stop may cut short: the first signal raises :class:`StopRequested`
        (with ``detail``) there and then, and one received before raises on entering."""
        self.check(detail)
        self._interrupt.append(detail)
        try:
            yield
        finally:
            self._interrupt.pop()

    @contextmanager
    def forward_to(self, pids: Callable[[], Iterable[int]]) -> Iterator[None]:
        """Within it, every signal received is sent on, as SIGTERM, to ``pids()``."""
        self._forward.append(pids)
        try:
            if self.requested is not None:  # requested before the children existed
                self._send_on()
            yield
        finally:
            self._forward.remove(pids)

    # ------------------------------------------------------------------ the handler
    def _send_on(self) -> None:
        for pids in self._forward:
            try:
                targets = list(pids())
            except Exception:  # noqa: BLE001 - a handler must not fail
                continue
            for pid in targets:
                try:
                    os.kill(int(pid), signal.SIGTERM)
                except (OSError, ValueError):  # gone already
                    pass

    def _handle(self, signum: int, frame) -> None:
        name = _name(signum)
        if self.requested is not None and time.monotonic() - self._requested_at < _SAME_STOP_S:
            return  # the same stop delivered twice (to the process and to its group, e.g. coreutils
            # timeout, or a parent forwarding what the group already got): not a second request
        self._send_on()
        if self.requested is not None:  # the second one: out now
            if self.second is not None:
                _write(2, f"\nstopped by a second {name}: exiting at once, without saving" +
                       (f"; {self.second}" if self.second else "") + "\n")
            raise SystemExit(128 + signum)
        self.requested = signum
        self._requested_at = time.monotonic()
        if self._interrupt:
            raise StopRequested(signum, self._interrupt[-1])
        if self.announce is not None:
            _write(1, f"\n{name}: stopping at {self.announce}; {name} again stops at once, without saving\n")


# ---------------------------------------------------------------------- module-level access
def active() -> StopSignals | None:
    """The innermost :class:`StopSignals` of this process (``None`` outside any)."""
    return _ACTIVE[-1] if _ACTIVE else None


def requested() -> int | None:
    """The signal of a pending stop request (``None``: none, or no :class:`StopSignals`)."""
    stop = active()
    if stop is None:
        return None
    stop.rearm()
    return stop.requested


def check(detail: Detail = "") -> None:
    """:meth:`StopSignals.check` of the active one; nothing outside a :class:`StopSignals`."""
    stop = active()
    if stop is not None:
        stop.check(detail)


@contextmanager
def interruptible(detail: str = "") -> Iterator[None]:
    """:meth:`StopSignals.interruptible` of the active one; a plain block outside any."""
    stop = active()
    if stop is None:
        yield
        return
    with stop.interruptible(detail):
        yield


@contextmanager
def forward_to(pids: Callable[[], Iterable[int]]) -> Iterator[None]:
    """:meth:`StopSignals.forward_to` of the active one; a plain block outside any."""
    stop = active()
    if stop is None:
        yield
        return
    with stop.forward_to(pids):
        yield


def child_process_setup() -> None:
    """For a worker process a parent started inside :class:`StopSignals` (a pool initializer).

    SIGINT is ignored (a Ctrl-C reaches the parent, which forwards it as SIGTERM) and SIGTERM
    requests a stop, checked at the child's own safe points; no line is printed here (the
    parent says what stopped). Stays installed for the life of the process.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    StopSignals((signal.SIGTERM,), announce=None, second=None).__enter__()
