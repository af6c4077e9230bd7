"""Recovery: reopen a failed audio path with backoff, or stop the daemon with the reason."""

from __future__ import annotations

import enum
import logging
import threading
import time
from typing import Callable

from rtupscale.audio.devices import DeviceError

log = logging.getLogger("rtupscale.daemon")

EXIT_OK, EXIT_FAILURE, EXIT_USER = 0, 1, 2

RECOVER_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)
"""Waits between reopen attempts; the last one repeats."""
RECOVER_GIVE_UP_S = 120.0
"""Recovery tries this long, then the daemon stops with the reason (exit 1; systemd restarts it)."""


class StopReason(str, enum.Enum):
    """Why the daemon stopped (``status``'s ``stop_reason`` is its value, with details)."""

    SIGNAL = "signal"
    AUDIO_DOWN = "audio path down"
    SOUND_SERVER = "sound server"
    USER_ERROR = "user error"


class StopDaemon(Exception):
    """Raised to end the daemon: ``reason`` (one line) and the exit ``code``."""

    def __init__(self, reason: str, code: int = EXIT_FAILURE, kind: StopReason = StopReason.AUDIO_DOWN):
        super().__init__(reason)
        self.reason, self.code, self.kind = reason, code, kind


class Supervisor:
    """Reopens the audio path after a failure.

    Args:
        open_session: builds and starts a new session (raises on failure).
        stop: set when the daemon is asked to stop; waits between attempts wait on it.
        stop_name: names the stop request for the reason (e.g. ``"SIGTERM"``).
        after_failure: called after each failed attempt (the daemon re-scans PortAudio's
            devices: they list ALSA's pulse device only while a server runs).
        backoff: waits between attempts, s; give_up_s: how long to keep trying.
        clock: monotonic seconds (tests pass a fake).
    """

    def __init__(self, open_session: Callable[[], object], stop: threading.Event,
                 stop_name: Callable[[], str] = lambda: "stop",
                 after_failure: Callable[[], None] = lambda: None,
                 backoff: tuple[float, ...] = RECOVER_BACKOFF_S, give_up_s: float = RECOVER_GIVE_UP_S,
                 clock: Callable[[], float] = time.monotonic):
        self.open_session = open_session
        self.stop = stop
        self.stop_name = stop_name
        self.after_failure = after_failure
        self.backoff = backoff
        self.give_up_s = give_up_s
        self.clock = clock

    def reopen(self):
        """A new, started session, after as many attempts as it takes.

        Raises:
            StopDaemon: nothing opened for ``give_up_s`` (exit 1), or a stop was asked for
                meanwhile (exit 0).
        """
        t0 = self.clock()
        attempt = 0
        while not self.stop.is_set():
            delay = self.backoff[min(attempt, len(self.backoff) - 1)]
            try:
                session = self.open_session()
            except (StopDaemon, DeviceError, RuntimeError, OSError) as e:
                msg = e.reason if isinstance(e, StopDaemon) else str(e)
            except Exception as e:  # PortAudio errors and the like
                msg = f"{type(e).__name__}: {e}"
            else:
                log.info("recovered after %.1f s (%d attempt%s)", self.clock() - t0, attempt + 1, "" if attempt == 0 else "s")
                return session
            attempt += 1
            if self.clock() - t0 > self.give_up_s:
                raise StopDaemon(f"audio path down for {self.give_up_s:g} s: {msg}") from None
            log.info("reopen attempt %d failed (%s); next in %.2f s", attempt, msg, delay)
            if not self.stop.wait(delay):
                self.after_failure()
        raise StopDaemon(f"{self.stop_name()} received during recovery", EXIT_OK, StopReason.SIGNAL)
