"""Stalls of the machine, measured beside the live tests.

One probe process per CPU, pinned to it at SCHED_FIFO 99 (above every thread of the sound
servers and the daemon), sleeps 5 ms at a time and reports each wake that came ``STALL_MS``
or more late: for that long nothing in this machine could run on that CPU (the hypervisor
ran something else, or the kernel held it). On the shared 2-core VMs these tests run on,
such stalls come, at busy hours, several times a minute: up to 14 ms on an idle machine,
28 ms under a live test's load (docs/measurements/2026-12-07-machine-stalls.md); a queue
of 20-30 ms cannot ride them all.

:meth:`StallProbe.explains` tells whether each xrun the daemon counted (its ``status``
``xrun_times``) came right after such a stall. The live tests hold the daemon to zero xruns;
a window whose every xrun followed a stall of the machine is reported as an expected failure
with the stalls, and any other xrun fails the test.

A hypervisor may also take a CPU in slices too short for the probe to see (a steady share
of each few milliseconds): every thread then runs that much slower, and the worker's
deadline at a short block passes without any one long stall. The kernel counts that time as
*steal* (``/proc/stat``); a sampler process writes it to a file every
:data:`STEAL_PERIOD_S`, and an xrun
that came while the hypervisor took :data:`STEAL_FRACTION` or more of the CPUs' time is put
down to it as to a stall.

The probes and the sampler write to files that the test process reads only when asked: no
thread of the test process reads or allocates meanwhile, which the tests of the worker's
allocations (tracemalloc sees every thread) rely on.

Run as a script (``stall_probe.py CPU STALL_MS FILE``) it is one probe: it prints ``READY``
and then appends one line per stall to FILE, ``<monotonic time at the wake> <ms late>``; or
prints ``NO-RT <why>`` and exits where it may not run at real-time priority (then no xrun is
explained). As
``stall_probe.py steal FILE CPU[,CPU...]`` it is the steal sampler: it appends
``<monotonic time> <steal ticks> <all ticks>`` to FILE every :data:`STEAL_PERIOD_S`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time

PERIOD_S = 0.005
"""How long the probe sleeps at a time: short enough to see a stall of a few ms whole, long
enough that its wakes (each preempts whatever runs on its CPU) do not cost the daemon's
worker its deadline at block 64 (at 1 ms they did: docs/measurements/2026-12-07-machine-stalls.md)."""

STALL_MS = 4.0
"""A wake this much later than asked is a stall of the machine: longer than the gaps
between the server's requests to the daemon (1.5-6 ms)."""

MATCH_BEFORE_S = 1.5
"""An xrun is put down to a stall that ended up to this long before it was found: the
worker checks the stream's xruns every 0.2 s, after the server's underflow notice (sent
once the stall let the server run again); a gap at the DAC (PipeWire) is found from the
playback's timing updates, a few of them after it (``rtupscale.audio.dac_gaps.MIN_AFTER``)."""

MATCH_AFTER_S = 0.05
"""... or this long after (the probe's wake and the worker's check race)."""


STEAL_PERIOD_S = 0.1
"""How often the sampler process reads the CPUs' steal time."""

STEAL_FRACTION = 0.10
"""A share of the CPUs' time taken by the hypervisor (steal) from which an xrun in the same
interval is put down to it. Measured in 5 s intervals on these machines: 0-0.7 % while a
live test ran on a quiet host; under the live latency tests at a busy hour a median of
1.3 %, 14 % at the 90th percentile, 27 % at most, and those tests passed
(docs/measurements/2026-12-07-steal.md): steal alone need not make an xrun, so this marks
only the intervals where the hypervisor took several times its usual share."""


def read_steal(cpus) -> tuple[int, int]:
    """(steal, all) clock ticks of ``cpus`` since boot, from ``/proc/stat``; (0, 0) where
    the kernel does not say."""
    steal = total = 0
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *fields = line.split()
                if int(name[3:]) not in cpus or len(fields) < 8:
                    continue
                ticks = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
                steal += ticks[7]
                total += sum(ticks)
    except (OSError, ValueError):
        return 0, 0
    return steal, total


class StallProbe:
    """Probes on every CPU this process may use; ``stalls`` grows as they report."""

    def __init__(self, stall_ms: float = STALL_MS):
        self.stall_ms = stall_ms
        self.stalls: list[tuple[float, int, float]] = []  # (monotonic end, cpu, ms late)
        self.procs: list[subprocess.Popen] = []
        self.error: str | None = None
        self.test_started = 0.0
        self.steal: list[tuple[float, int, int]] = []  # (monotonic, steal ticks, all ticks)
        self._files: dict[str, list] = {}  # path -> [bytes parsed, cpu (None: the steal sampler)]
        self._lock = threading.Lock()

    def _new_file(self, cpu: int | None) -> str:
        fd, path = tempfile.mkstemp(prefix="rtupscale-stalls-", suffix=".txt")
        os.close(fd)
        self._files[path] = [0, cpu]
        return path

    def start(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        for cpu in cpus:
            p = subprocess.Popen([sys.executable, __file__, str(cpu), str(self.stall_ms), self._new_file(cpu)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs.append(p)
            line = p.stdout.readline().strip()
            if line != "READY":
                self.error = f"the stall probe on CPU {cpu} did not start: {line or p.stderr.read().strip()}"
                self.stop()
                return
        self.procs.append(subprocess.Popen([sys.executable, __file__, "steal", self._new_file(None), ",".join(map(str, cpus))],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def _read_files(self) -> None:
        """Parse what the probes and the sampler wrote since the last call (whole lines only;
        under the lock)."""
        for path, where in self._files.items():
            try:
                with open(path, "rb") as f:
                    f.seek(where[0])
                    chunk = f.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n") + 1
            where[0] += end
            for line in chunk[:end].decode().splitlines():
                if where[1] is None:
                    t, steal, total = line.split()
                    self.steal.append((float(t), int(steal), int(total)))
                else:
                    t, ms = line.split()
                    self.stalls.append((float(t), where[1], float(ms)))

    def steal_between(self, t0: float, t1: float) -> float | None:
        """The share of the CPUs' time the hypervisor took from ``t0`` to ``t1`` (the samples
        around them); None without two samples there."""
        with self._lock:
            self._read_files()
            inside = [s for s in self.steal if t0 - STEAL_PERIOD_S <= s[0] <= t1 + STEAL_PERIOD_S]
        if len(inside) < 2 or inside[-1][2] <= inside[0][2]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])

    @property
    def running(self) -> bool:
        return bool(self.procs) and self.error is None and all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        self.procs = []
        with self._lock:
            self._read_files()  # what they wrote stays in ``stalls`` and ``steal``
            for path in self._files:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            self._files = {}

    def stalls_since(self, t0: float) -> list[tuple[float, int, float]]:
        with self._lock:
            self._read_files()
            return [s for s in self.stalls if s[0] >= t0]

    def summary(self, t0: float) -> str:
        s = self.stalls_since(t0)
        if not self.running:
            return f"no stall probe ({self.error or 'not running'})"
        steal = self.steal_between(t0, time.monotonic())
        stolen = "" if steal is None else f"; the hypervisor took {100 * steal:.1f} % of the CPUs' time"
        if not s:
            return f"no stall of the machine >= {self.stall_ms:g} ms{stolen}"
        return (f"{len(s)} stalls of the machine >= {self.stall_ms:g} ms in {time.monotonic() - t0:.0f} s "
                f"(longest {max(x[2] for x in s):.1f} ms){stolen}")

    def before_each(self, xrun_times) -> list[str]:
        """For each xrun time, the last stall before it: ``"<s before>s/<ms late>ms"``."""
        out = []
        with self._lock:
            self._read_files()
            stalls = list(self.stalls)
        for t, _ in xrun_times or ():
            prior = [x for x in stalls if x[0] <= t + MATCH_AFTER_S]
            out.append(f"{t - prior[-1][0]:.2f}s/{prior[-1][2]:.1f}ms" if prior else "none")
        return out

    def explains(self, xrun_times, n: int, what: str = "the daemon counted xruns") -> str | None:
        """Why the last ``n`` xruns came, if the newest of ``xrun_times`` (``status``'s:
        ``[monotonic, count]``) that account for them each followed a stall of the machine or
        came while the hypervisor took :data:`STEAL_FRACTION` of the CPUs' time; else None.
        ``what`` names the times in the answer."""
        if not self.running or n <= 0 or not xrun_times:
            return None
        matched = 0
        worst = []
        for t, count in reversed(xrun_times):
            near = [s[2] for s in self.stalls_since(t - MATCH_BEFORE_S) if s[0] <= t + MATCH_AFTER_S]
            steal = self.steal_between(t - MATCH_BEFORE_S, t + MATCH_AFTER_S)
            if near:
                worst.append(f"a FIFO-99 probe woke {max(near):.1f} ms late")
            elif steal is not None and steal >= STEAL_FRACTION:
                worst.append(f"the hypervisor took {100 * steal:.0f} % of the CPUs' time")
            else:
                return None
            matched += count
            if matched >= n:
                return (f"each of the {len(worst)} times {what} came in or right after a "
                        f"stall of the whole machine ({'; '.join(worst)})")
        return None


PROBE = StallProbe()
"""The test session's probe (started by the ``stall_probe`` fixture of tests/audio/conftest.py)."""


def probe(cpu: int, stall_ms: float, path: str) -> None:
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(99))
    except OSError as e:
        print(f"NO-RT {e}", flush=True)
        return
    out = open(path, "a", buffering=1)
    print("READY", flush=True)
    limit = stall_ms / 1e3
    prev = time.monotonic()
    while True:
        time.sleep(PERIOD_S)
        now = time.monotonic()
        late = now - prev - PERIOD_S
        if late >= limit:
            out.write(f"{now:.4f} {1e3 * late:.2f}\n")
        prev = now


def sample_steal(path: str, cpus: set[int]) -> None:
    with open(path, "a", buffering=1) as f:
        while True:
            steal, total = read_steal(cpus)
            if total:
                f.write(f"{time.monotonic():.4f} {steal} {total}\n")
            time.sleep(STEAL_PERIOD_S)


if __name__ == "__main__":
    if sys.argv[1] == "steal":
        sample_steal(sys.argv[2], {int(c) for c in sys.argv[3].split(",")})
    else:
        probe(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3])
