"""Gaps the DAC played in our stream that no underflow notice reports (PipeWire).

On pipewire-pulse a cycle of the DAC's graph in which the server's data thread did not run
for our stream (stalled, or woken too late) plays silence in its place, and the client is
told nothing: our queue in the server still holds the audio, which simply comes one quantum
later. The server's timing updates show it: the sink takes our stream at the DAC's rate, so
over any stretch the read index advances by the time elapsed times the rate, in whole
quanta; a skipped cycle leaves it a quantum behind, for good.

The detector keeps ``behind`` = time elapsed x rate - frames taken, summed since the start.
Sampled at a random phase of the graph's cycle, it lies in a band one quantum wide; a gap
of k quanta lifts the band by k quanta. A lift of the band's mean (the newest ``RECENT``
samples against the ``REFERENCE`` before them) by more than ``LIFT`` quanta is a gap; the
size is the lift rounded to whole quanta. The quantum itself is the greatest common divisor
of the read index's steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

REFERENCE = 12
RECENT = 6
LIFT = 0.6
"""Quanta. The mean of RECENT samples uniform over one quantum, against that of REFERENCE:
standard deviation 0.14 quantum, so 0.6 is 4.2 of them (a false gap about once in 10^5
samples, about 7 hours at 4 a second); a gap of one quantum lifts it by 1."""
MIN_AFTER = 3
"""Samples after a gap that size it (each lies anywhere in a quantum-wide band)."""
MIN_QUANTUM = 32
"""Frames. Read steps whose common divisor falls below this (a graph running at another
rate than our stream, resampled) leave the quantum unknown: a gap is then counted from
``FALLBACK_S`` on."""
FALLBACK_S = 0.004
DRIFT_AFTER_S = 10.0
MAX_STEP_S = 5.0
"""A pause between samples longer than this (or a read index that went back) restarts the
detector: the stream was corked, moved or reopened."""


@dataclass(frozen=True)
class Gap:
    frames: int  # how much silence the DAC played in our place
    at_s: float  # the sample that found it (the server's clock), s
    queued_frames: int  # our queue in the server then: the audio was there (> 0) or not


class DacGapDetector:
    """Feed it the playback's read and write index (frames) and the time they were current
    (s) at each timing update; :meth:`add` returns the gaps found.

    Args:
        rate: the rate our stream plays at (frames per second).
    """

    def __init__(self, rate: int):
        self.rate = rate
        self.quantum = 0
        self.reset()

    def reset(self) -> None:
        self._prev: tuple[int, float] | None = None
        self._t0 = 0.0
        self._behind = 0.0  # frames behind the clock since the start, less the gaps found
        self._window: list[tuple[float, float, int]] = []  # (time, behind, queued)

    def _unit(self) -> float:
        return float(self.quantum) if self.quantum >= MIN_QUANTUM else FALLBACK_S * self.rate

    def drift(self) -> float:
        """Frames per second the sink takes below (> 0) or above the clock: the DAC's clock
        against the server's. The average over the history up to the reference samples (a
        gap among the recent ones not found yet must not tilt it), so its error is at most a
        quantum over the time since the start; none before ``DRIFT_AFTER_S``."""
        t, behind, _ = self._window[REFERENCE - 1]
        elapsed = t - self._t0
        return behind / elapsed if elapsed >= DRIFT_AFTER_S else 0.0

    def add(self, read: int, write: int, at_s: float) -> list[Gap]:
        prev = self._prev
        self._prev = (read, at_s)
        if prev is None:
            self._t0 = at_s
            return []
        step, dt = read - prev[0], at_s - prev[1]
        if step < 0 or dt <= 0 or dt > MAX_STEP_S:
            self.reset()
            self._prev = (read, at_s)
            self._t0 = at_s
            return []
        if step:
            self.quantum = math.gcd(self.quantum, step)
        self._behind += dt * self.rate - step
        self._window.append((at_s, self._behind, write - read))
        n = REFERENCE + RECENT
        if len(self._window) > n:
            del self._window[0]
        if len(self._window) < n:
            return []
        unit = self._unit()
        d = self.drift()
        t_ref = self._window[REFERENCE - 1][0]
        v = [b - d * (t - t_ref) for t, b, _ in self._window]  # the drift taken out, over the window only
        ref_v, recent = v[:REFERENCE], v[REFERENCE:]
        ref = sum(ref_v) / REFERENCE
        lift = sum(recent) / RECENT - ref
        if lift <= LIFT * unit:
            return []
        # A gap is one step: the samples after it are the newest ones, all above the band.
        # Its size from the newest two, and where it was: where that run above half of it
        # begins (at least half a quantum above the reference's mean).
        k = max(1, round((sum(v[-2:]) / 2 - ref) / unit))
        cut = ref + max(0.5, k / 2) * unit
        first = len(v)
        while first > REFERENCE and v[first - 1] > cut:
            first -= 1
        if len(v) - first < MIN_AFTER:
            return []  # size it on a few samples after it, not one
        post = v[first:]
        k = max(1, round((sum(post) / len(post) - ref) / unit))
        size = int(round(k * unit))
        # the gap is counted once: the samples after it go back into the band
        self._window = [(t, b - size, q) if i >= first else (t, b, q) for i, (t, b, q) in enumerate(self._window)]
        self._behind -= size
        return [Gap(size, at_s, min(q for _, _, q in self._window[REFERENCE:]))]
