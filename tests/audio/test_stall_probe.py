"""The live tests' probe of machine stalls (tests/audio/stall_probe.py): it sees a stall, and
it puts an xrun down to one only when a stall came right before it."""

from __future__ import annotations

import os
import signal
import threading
import time
import tracemalloc

import pytest

from tests.audio.stall_probe import MATCH_BEFORE_S, STEAL_FRACTION, STEAL_PERIOD_S, StallProbe, read_steal


class Given(StallProbe):
    """A probe with the stalls given (no processes), and ``steal``: the hypervisor's share of
    the CPUs' time from each given time to the next, sampled every STEAL_PERIOD_S."""

    running = True

    def __init__(self, stalls, steal=()):
        super().__init__()
        self.stalls = [(t, 0, ms) for t, ms in stalls]
        ticks = 20  # two CPUs, 100 ticks a second, one sample each 0.1 s
        stolen = total = 0
        for (t0, share), (t1, _) in zip(steal, list(steal[1:]) + [(steal[-1][0] + 1.0, 0)] if steal else ()):
            t = t0
            while t < t1:
                self.steal.append((t, stolen, total))
                stolen += round(share * ticks)
                total += ticks
                t += STEAL_PERIOD_S


def test_an_xrun_right_after_a_stall_is_put_down_to_it():
    p = Given([(100.0, 12.0), (200.0, 6.0)])
    why = p.explains([[100.2, 3], [200.15, 1]], 4)
    assert why is not None and "12.0" in why and "6.0" in why


def test_an_xrun_with_no_stall_before_it_is_not():
    p = Given([(100.0, 12.0)])
    assert p.explains([[100.2, 3], [100.0 + MATCH_BEFORE_S + 0.5, 1]], 4) is None  # the newest has none
    assert p.explains([[99.5, 1]], 1) is None  # a stall after the xrun did not cause it
    assert p.explains([[100.2, 3]], 5) is None  # the times account for 3 of the 5


def test_only_the_newest_times_that_account_for_the_window_count():
    # an xrun before the window (no stall near it) does not matter when the newer ones cover n
    p = Given([(100.0, 12.0)])
    assert p.explains([[50.0, 2], [100.1, 3]], 3) is not None
    assert p.explains([[50.0, 2], [100.1, 3]], 4) is None


def test_an_xrun_while_the_hypervisor_took_the_cpus_is_put_down_to_it():
    """No stall long enough for the probe, but a fifth of the CPUs' time stolen around the
    xrun: the hypervisor slowed every thread."""
    p = Given([], steal=[(90.0, 0.004), (99.0, 0.20), (101.0, 0.004)])
    why = p.explains([[100.5, 2]], 2)
    assert why is not None and "the hypervisor took" in why, why
    assert 0.16 <= p.steal_between(99.0, 101.0) <= 0.20


def test_an_xrun_on_a_machine_with_its_usual_steal_is_not():
    p = Given([], steal=[(90.0, 0.013), (110.0, 0.013)])  # the median under the live tests
    assert p.steal_between(99.0, 101.0) < STEAL_FRACTION
    assert p.explains([[100.5, 2]], 2) is None
    # stolen time long before the xrun does not explain it
    p = Given([], steal=[(90.0, 0.3), (95.0, 0.0)])
    assert p.explains([[100.5, 1]], 1) is None


def test_steal_is_read_from_the_kernel():
    steal, total = read_steal(os.sched_getaffinity(0))
    assert total > 0 and 0 <= steal <= total


def test_no_probe_no_explanation():
    p = StallProbe()
    p.stalls = [(100.0, 0, 12.0)]
    assert not p.running
    assert p.explains([[100.2, 1]], 1) is None


def test_the_probe_sees_a_stall_of_its_cpu():
    """A probe stopped for 50 ms (SIGSTOP, as the hypervisor would stop the CPU) reports a
    wake at least 40 ms late."""
    p = StallProbe()
    p.start()
    if p.error and "NO-RT" in p.error:
        pytest.skip(p.error)
    assert p.error is None and p.running, p.error
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        proc = p.procs[0]
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and not [s for s in p.stalls_since(t0) if s[2] >= 40.0]:
            time.sleep(0.02)
        long = [s for s in p.stalls_since(t0) if s[2] >= 40.0]
        assert long, p.stalls_since(t0)
        assert long[0][1] == sorted(os.sched_getaffinity(0))[0]  # the CPU of the stopped probe
        assert p.explains([[long[0][0] + 0.1, 1]], 1) is not None
    finally:
        p.stop()
    assert not p.running


def test_the_sampler_writes_the_steal_and_the_test_process_reads_it_when_asked():
    """The steal sampler is a process of its own: between reads, nothing in this process
    allocates for it (the worker's allocation tests run beside the session's probe)."""
    p = StallProbe()
    p.start()
    if p.error and "NO-RT" in p.error:
        pytest.skip(p.error)
    try:
        t0 = time.monotonic()
        time.sleep(10 * STEAL_PERIOD_S)
        assert p.steal == []  # nothing read yet
        share = p.steal_between(t0, time.monotonic())
        assert share is not None and 0.0 <= share <= 1.0, (share, p.steal)
        assert len(p.steal) >= 5 and all(b[0] > a[0] and b[2] >= a[2] for a, b in zip(p.steal, p.steal[1:]))
        n = len(p.steal)
        p.steal_between(t0, time.monotonic())
        assert len(p.steal) - n <= 2  # read on from where it stopped, no line twice
    finally:
        p.stop()


def test_the_test_process_allocates_nothing_while_the_probe_reports():
    """A stall reported while the worker's allocation tests measure must not show in their
    tracemalloc peak (it sees every thread of this process): the probes write to files, and
    this process reads them only when asked."""
    threads = threading.active_count()
    p = StallProbe()
    p.start()
    if p.error and "NO-RT" in p.error:
        pytest.skip(p.error)
    try:
        assert threading.active_count() == threads  # no reader thread
        time.sleep(0.2)
        t0 = time.monotonic()
        tracemalloc.start()
        try:
            os.kill(p.procs[0].pid, signal.SIGSTOP)
            time.sleep(0.05)
            os.kill(p.procs[0].pid, signal.SIGCONT)
            time.sleep(0.3)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 1024, peak
        assert [x for x in p.stalls_since(t0) if x[2] >= 40.0], p.stalls_since(t0)  # reported all the same
    finally:
        p.stop()
