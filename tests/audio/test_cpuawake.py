"""latency.keep_cpus_awake: the spinners run where they should, at the lowest priority, and
keep the CPUs from idling; they stop when told."""

from __future__ import annotations

import os
import time

import pytest

from rtupscale.audio import cpuawake

pytestmark = pytest.mark.skipif(cpuawake.available() is not None, reason=str(cpuawake.available()))

SCHED_IDLE = 5


def _threads() -> dict[int, tuple[int, set[int]]]:
    """This process's threads: tid -> (scheduling policy, CPUs allowed)."""
    out = {}
    for t in os.listdir("/proc/self/task"):
        try:
            stat = open(f"/proc/self/task/{t}/stat").read()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(t)] = (int(fields[38]), os.sched_getaffinity(int(t)))  # field 41: policy
    return out


def _idle_jiffies() -> int:
    with open("/proc/stat") as f:
        cols = f.readline().split()
    return int(cols[4]) + int(cols[5])  # idle + iowait, all CPUs


@pytest.fixture
def spinners():
    yield
    cpuawake.stop()
    assert cpuawake.running() == 0


def test_one_pinned_idle_priority_spinner_per_cpu(spinners):
    cpus = os.sched_getaffinity(0)
    before = set(_threads())
    assert cpuawake.start() == len(cpus) == cpuawake.running()
    assert cpuawake.start() == len(cpus)  # idempotent: no second set
    new = {t: v for t, v in _threads().items() if t not in before}
    assert len(new) == len(cpus), new
    assert all(policy == SCHED_IDLE for policy, _ in new.values()), new
    assert sorted(next(iter(allowed)) for _, allowed in new.values()) == sorted(cpus)
    assert all(len(allowed) == 1 for _, allowed in new.values()), new
    cpuawake.stop()
    assert cpuawake.running() == 0
    time.sleep(0.05)
    assert not (set(_threads()) - before), "the spinners did not exit"


def test_the_cpus_do_not_idle_while_they_spin(spinners):
    """The kernel counts no idle time on a CPU whose spinner runs (it would, halted): over
    1 s, less than a tenth of the CPUs' time is idle (an idle test process leaves nearly
    all of it idle without the spinners)."""
    hz = os.sysconf("SC_CLK_TCK")
    n = len(os.sched_getaffinity(0))
    cpuawake.start()
    time.sleep(0.2)
    i0, t0 = _idle_jiffies(), time.monotonic()
    time.sleep(1.0)
    idle_s = (_idle_jiffies() - i0) / hz
    wall_s = time.monotonic() - t0
    assert idle_s < 0.1 * n * wall_s, f"{idle_s:.2f} s idle of {n * wall_s:.2f} CPU-s"


def test_a_cpu_it_may_not_use_is_refused_with_the_reason(spinners):
    bad = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(cpuawake.AwakeError, match=f"CPU {bad} is not one this process may run on"):
        cpuawake.start({bad})
    assert cpuawake.running() == 0
