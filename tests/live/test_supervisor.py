"""Recovery with backoff, driven by fakes: no sound server, no real waits."""

from __future__ import annotations

import pytest

from rtupscale.audio.devices import DeviceError
from rtupscale.live.supervisor import EXIT_FAILURE, EXIT_OK, StopDaemon, StopReason, Supervisor


class FakeStop:
    """A stop event whose waits advance a fake clock instead of sleeping."""

    def __init__(self, clock, stop_after_waits=None):
        self.clock = clock
        self.waits: list[float] = []
        self.stop_after_waits = stop_after_waits

    def is_set(self):
        return self.stop_after_waits is not None and len(self.waits) >= self.stop_after_waits

    def wait(self, s):
        self.waits.append(s)
        self.clock.t += s
        return self.is_set()


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _opener(failures: list[Exception]):
    calls = []

    def open_session():
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "session"

    return open_session, calls


def test_reopens_after_failures_with_growing_waits():
    clock = Clock()
    stop = FakeStop(clock)
    fails = [RuntimeError("busy"), OSError("gone"), DeviceError("no DAC"), ValueError("PortAudio"), RuntimeError("x"), RuntimeError("y")]
    open_session, calls = _opener(fails)
    rescans = []
    sup = Supervisor(open_session, stop, after_failure=lambda: rescans.append(1), clock=clock)
    assert sup.reopen() == "session"
    assert len(calls) == 7
    assert stop.waits == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0]  # the last wait repeats
    assert len(rescans) == 6


def test_first_attempt_that_works_does_not_wait():
    clock = Clock()
    stop = FakeStop(clock)
    sup = Supervisor(_opener([])[0], stop, clock=clock)
    assert sup.reopen() == "session" and stop.waits == []


def test_gives_up_after_the_limit_with_the_last_reason():
    clock = Clock()
    stop = FakeStop(clock)
    open_session, calls = _opener([RuntimeError("device busy")] * 1000)
    sup = Supervisor(open_session, stop, give_up_s=10.0, clock=clock)
    with pytest.raises(StopDaemon) as e:
        sup.reopen()
    assert e.value.code == EXIT_FAILURE and e.value.kind == StopReason.AUDIO_DOWN
    assert "audio path down for 10 s: device busy" in e.value.reason
    assert sum(stop.waits) <= 10.0 + 4.0


def test_a_stop_during_recovery_ends_it_with_exit_0():
    clock = Clock()
    stop = FakeStop(clock, stop_after_waits=2)
    open_session, calls = _opener([RuntimeError("busy")] * 10)
    sup = Supervisor(open_session, stop, stop_name=lambda: "SIGTERM", clock=clock)
    with pytest.raises(StopDaemon) as e:
        sup.reopen()
    assert e.value.code == EXIT_OK and e.value.kind == StopReason.SIGNAL
    assert e.value.reason == "SIGTERM received during recovery"
    assert len(calls) == 2


def test_a_sound_server_stop_reason_is_kept():
    clock = Clock()
    stop = FakeStop(clock)
    open_session, _ = _opener([StopDaemon("sound server: connection refused", kind=StopReason.SOUND_SERVER)] * 100)
    sup = Supervisor(open_session, stop, give_up_s=1.0, clock=clock)
    with pytest.raises(StopDaemon, match="connection refused"):
        sup.reopen()
