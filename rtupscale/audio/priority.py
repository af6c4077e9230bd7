"""Real-time priority for the threads on the audio path.

The audio path has three kinds of threads: PortAudio's callback thread (rtmixer's C
callback), the ALSA pulse plugin's main loop (it carries the server's requests), and our
worker. Measured on a loaded 2-core machine: with those at normal priority, device buffers
under 20 ms underflowed within seconds; with SCHED_FIFO, 8 ms ran clean. So, where the
system allows it (root, or an RLIMIT_RTPRIO, e.g. ``LimitRTPRIO=`` or rtkit-style limits),
they get SCHED_FIFO; otherwise a lower nice value; and the log says which.
"""

from __future__ import annotations

import os

AUDIO_THREAD_PRIO = 20
"""SCHED_FIFO priority of PortAudio's and the pulse plugin's threads (PulseAudio uses 5)."""
WORKER_PRIO = 4
"""The worker's: below the callbacks, which must be able to preempt it, and below the sound
server's I/O threads (PulseAudio makes them SCHED_RR 5 by default): the worker runs the
model for up to milliseconds per block, and on a 2-core machine it must not delay the server
that feeds it and drains it. Under pipewire-pulse (0.3.65) only the data threads are real
time (SCHED_FIFO 88, above the worker); the main thread, which carries the PulseAudio
protocol, runs at normal priority (nice -11), below the worker: there the worker's short
blocks (a median of 1.3 ms of each 5.8 ms in the 10-minute PipeWire soaks) leave it room."""


def thread_ids() -> set[int]:
    """This process's thread ids."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def promote(tid: int, prio: int) -> str:
    """SCHED_FIFO ``prio`` for thread ``tid`` (0: the calling thread), else nice -10, else
    nothing; returns what it got, in words."""
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(prio))
        return f"SCHED_FIFO {prio}"
    except (PermissionError, OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid or threading_native_id(), -10)
        return "nice -10"
    except (PermissionError, OSError):
        return "normal (no permission for real-time or negative nice)"


def threading_native_id() -> int:
    import threading

    return threading.get_native_id()


def promote_new_threads(before: set[int], prio: int = AUDIO_THREAD_PRIO) -> list[str]:
    """Promote every thread that did not exist in ``before`` (the streams' threads)."""
    return [f"{tid}: {promote(tid, prio)}" for tid in sorted(thread_ids() - before)]
