"""``latency.keep_cpus_awake``: keep every CPU out of its idle halt while the daemon runs.

An idle CPU halts until an interrupt wakes it. On bare metal that wake-up takes
microseconds; on a virtual machine a halted vCPU goes back to the host, and waking it waits
for the host's scheduler. The server's request for more audio crosses several threads (the
sink's, the server's main thread, our stream's, and back), each woken on a CPU that may have
halted (soaks with and without: docs/measurements/2026-12-05-live-daemon.md).

One C thread per CPU (``native/cpu_awake.c``), pinned and at ``SCHED_IDLE``: it runs only
when nothing else on its CPU wants to, and spins on a pause instruction. The cost is power:
every CPU draws as if fully busy, all the time the daemon runs. Off by default; for
machines where idle wake-ups are slow (virtual machines; bare metal whose deep C-states
are slow to leave, where ``/dev/cpu_dma_latency`` is the lighter remedy). On a CPU with an
SMT sibling the spinner shares its core with the sibling's work; the pause instruction
keeps that share small.
"""

from __future__ import annotations

import os

try:
    from rtupscale.audio import _awake_native as _native
except ImportError as e:  # not built (no C compiler at install)
    _native = None
    _IMPORT_ERROR = str(e)
else:
    _IMPORT_ERROR = ""


class AwakeError(RuntimeError):
    pass


def available() -> str | None:
    """None if the spinners can run here, else why not."""
    if _native is None:
        return f"the C module was not built at install ({_IMPORT_ERROR}): reinstall with a C compiler"
    return None


def running() -> int:
    """How many spinners run now (0 when off or unavailable)."""
    return 0 if _native is None else int(_native.lib.rtu_awake_running())


def start(cpus: "set[int] | None" = None) -> int:
    """Start one spinner per CPU in ``cpus`` (default: the CPUs this process may use).
    Returns how many run; raises :class:`AwakeError` with the reason if they cannot (all
    start or none). Idempotent: a second call while they run returns their number."""
    why = available()
    if why:
        raise AwakeError(why)
    allowed = os.sched_getaffinity(0)
    cpus = sorted(allowed if cpus is None else cpus)
    if not cpus:
        raise AwakeError("no CPUs given")
    if bad := [c for c in cpus if c not in allowed]:
        raise AwakeError(f"CPU {bad[0]} is not one this process may run on (allowed: {sorted(allowed)})")
    ffi = _native.ffi
    arr = ffi.new("int[]", cpus)
    err = ffi.new("char[]", 256)
    n = _native.lib.rtu_awake_start(arr, len(cpus), err, 256)
    if n < 0:
        raise AwakeError(ffi.string(err).decode(errors="replace"))
    return int(n)


def stop() -> None:
    """Stop the spinners and join them: at once on an idle CPU; a spinner on a CPU that
    something else keeps busy sees the flag when the scheduler next gives it a slice."""
    if _native is not None:
        _native.lib.rtu_awake_stop()
