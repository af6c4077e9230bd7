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

Run as a script (``stall_probe.py CPU STALL_MS``) it is one probe: it prints ``READY`` and
then one line per stall, ``<monotonic time at the wake> <ms late>``; or ``NO-RT <why>`` and
exits where it may not run at real-time priority (then no xrun is explained).
"""

from __future__ import annotations

import os
import subprocess
import sys
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


class StallProbe:
    """Probes on every CPU this process may use; ``stalls`` grows as they report."""

    def __init__(self, stall_ms: float = STALL_MS):
        self.stall_ms = stall_ms
        self.stalls: list[tuple[float, int, float]] = []  # (monotonic end, cpu, ms late)
        self.procs: list[subprocess.Popen] = []
        self.error: str | None = None
        self.test_started = 0.0
        self._lock = threading.Lock()

    def start(self) -> None:
        for cpu in sorted(os.sched_getaffinity(0)):
            p = subprocess.Popen([sys.executable, __file__, str(cpu), str(self.stall_ms)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs.append(p)
            line = p.stdout.readline().strip()
            if line != "READY":
                self.error = f"the stall probe on CPU {cpu} did not start: {line or p.stderr.read().strip()}"
                self.stop()
                return
            threading.Thread(target=self._read, args=(p, cpu), daemon=True).start()

    def _read(self, p: subprocess.Popen, cpu: int) -> None:
        for line in p.stdout:
            t, ms = line.split()
            with self._lock:
                self.stalls.append((float(t), cpu, float(ms)))

    @property
    def running(self) -> bool:
        return bool(self.procs) and self.error is None and all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(5)
        self.procs = []

    def stalls_since(self, t0: float) -> list[tuple[float, int, float]]:
        with self._lock:
            return [s for s in self.stalls if s[0] >= t0]

    def summary(self, t0: float) -> str:
        s = self.stalls_since(t0)
        if not self.running:
            return f"no stall probe ({self.error or 'not running'})"
        if not s:
            return f"no stall of the machine >= {self.stall_ms:g} ms"
        return (f"{len(s)} stalls of the machine >= {self.stall_ms:g} ms in {time.monotonic() - t0:.0f} s "
                f"(longest {max(x[2] for x in s):.1f} ms)")

    def before_each(self, xrun_times) -> list[str]:
        """For each xrun time, the last stall before it: ``"<s before>s/<ms late>ms"``."""
        out = []
        with self._lock:
            stalls = list(self.stalls)
        for t, _ in xrun_times or ():
            prior = [x for x in stalls if x[0] <= t + MATCH_AFTER_S]
            out.append(f"{t - prior[-1][0]:.2f}s/{prior[-1][2]:.1f}ms" if prior else "none")
        return out

    def explains(self, xrun_times, n: int, what: str = "the daemon counted xruns") -> str | None:
        """Why the last ``n`` xruns came, if the newest of ``xrun_times`` (``status``'s:
        ``[monotonic, count]``) that account for them each followed a stall of the machine;
        else None. ``what`` names the times in the answer."""
        if not self.running or n <= 0 or not xrun_times:
            return None
        matched = 0
        worst = []
        for t, count in reversed(xrun_times):
            near = [s[2] for s in self.stalls_since(t - MATCH_BEFORE_S) if s[0] <= t + MATCH_AFTER_S]
            if not near:
                return None
            matched += count
            worst.append(max(near))
            if matched >= n:
                return (f"each of the {len(worst)} times {what} came right after a stall "
                        f"of the whole machine (a FIFO-99 probe woke {', '.join(f'{w:.1f}' for w in worst)} ms late)")
        return None


PROBE = StallProbe()
"""The test session's probe (started by the ``stall_probe`` fixture of tests/audio/conftest.py)."""


def probe(cpu: int, stall_ms: float) -> None:
    os.sched_setaffinity(0, {cpu})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(99))
    except OSError as e:
        print(f"NO-RT {e}", flush=True)
        return
    print("READY", flush=True)
    limit = stall_ms / 1e3
    prev = time.monotonic()
    while True:
        time.sleep(PERIOD_S)
        now = time.monotonic()
        late = now - prev - PERIOD_S
        if late >= limit:
            print(f"{now:.4f} {1e3 * late:.2f}", flush=True)
        prev = now


if __name__ == "__main__":
    probe(int(sys.argv[1]), float(sys.argv[2]))
