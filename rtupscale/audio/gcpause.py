"""Python's garbage collector, the other thing that can stop the worker.

The worker is a Python thread: while any thread runs a collection it holds the GIL, and
the worker waits. A full (generation 2) collection walks every object the process has;
with onnxruntime, numpy and the daemon loaded that is tens of thousands, measured here at
10 to 25 ms, and generation 1 at 2 to 5 ms while the daemon had just started (many young
objects): at a 16 ms server queue, one such pause is an output underflow. A collection
starts in whichever thread happens to allocate: the main thread parsing ``pactl``'s
answer, the control thread answering ``status``.

So (as servers that must not pause do, with ``gc.freeze``): once a session is built, and
before its worker starts, :func:`settle` collects once and freezes what is left. Frozen
objects are never walked again, so later collections only look at what was made since:
a fraction of a millisecond. A reload that builds a new engine while the worker runs
calls :func:`freeze` only (no collection: that would be the pause we avoid). What is
frozen is the daemon's long-lived state; the little cyclic garbage frozen with it is
never freed, which is bounded by the number of sessions and reloads.

:class:`GcPauses` measures every collection (two clock reads), for ``status``: a pause
over a millisecond that coincides with an underflow says where to look.
"""

from __future__ import annotations

import gc
import time

SLOW_S = 0.001
"""A collection longer than this is counted as a pause the worker may feel."""


def settle() -> float:
    """Collect once, then freeze every surviving object. Call only while no worker runs
    (the collection holds the GIL for as long as it takes). Returns its time, s."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - t0


def freeze() -> None:
    """Freeze every tracked object (no collection: safe while the worker runs)."""
    gc.freeze()


class GcPauses:
    """Collections and their durations, from ``gc.callbacks``.

    Counters are plain ints, written by whichever thread runs the collection (collections
    never overlap: the collector holds the GIL).
    """

    def __init__(self) -> None:
        self.collections = [0, 0, 0]
        self.slow = 0
        self.max_s = 0.0
        self.last_slow_s = 0.0
        self.last_slow_generation = -1
        self._t0 = 0.0
        self._installed = False
        self._settling = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    def settle(self) -> float:
        """:func:`settle`, not counted (it runs while no worker does). Returns its time, s."""
        self._settling = True
        try:
            return settle()
        finally:
            self._settling = False

    def _callback(self, phase: str, info: dict) -> None:
        if self._settling:
            return
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        dt = time.perf_counter() - self._t0
        gen = info["generation"]
        self.collections[gen] += 1
        if dt > self.max_s:
            self.max_s = dt
        if dt > SLOW_S:
            self.slow += 1
            self.last_slow_s = dt
            self.last_slow_generation = gen

    def snapshot(self) -> dict:
        return {
            "collections": list(self.collections),
            "frozen_objects": gc.get_freeze_count(),
            "slow": self.slow,
            "slow_over_ms": 1e3 * SLOW_S,
            "max_ms": round(1e3 * self.max_s, 2),
            "last_slow": None if self.slow == 0 else {"generation": self.last_slow_generation, "ms": round(1e3 * self.last_slow_s, 2)},
        }
