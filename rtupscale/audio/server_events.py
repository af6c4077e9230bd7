"""The sound server's events (PulseAudio or pipewire-pulse), through pulsectl's subscription.

The daemon's main thread used to ask ``pactl`` every 2 s whether a source changed its rate;
now the server tells it: a thread of its own listens (libpulse's event subscription,
``pulsectl.Pulse.event_listen``), notes what changed and wakes the main loop, which then
asks once. On PipeWire a sink's ``change`` event is also how a new graph rate shows: the
sink's format follows the rate its node runs at.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("rtupscale.daemon")

RECONNECT_S = 0.25
"""While the server is away the listener tries again this often (the daemon's own recovery
reopens the audio path meanwhile)."""
FACILITIES = ("sink", "source", "sink_input", "source_output", "server")


@dataclass(frozen=True)
class ServerEvent:
    facility: str  # "sink", "source", "sink_input", "source_output", "server"
    kind: str  # "new", "change", "remove"
    index: int


class ServerEvents:
    """Listens to the server on its own thread; ``take()`` hands over what happened since the
    last call. ``wake`` is called (from the listener thread) after each event.

    Args:
        wake: called after each event (the daemon sets its main loop's wake-up event).
        client_name: the name the listener's connection has on the server.
    """

    def __init__(self, wake: Callable[[], None], client_name: str = "rtupscale-events"):
        self.wake = wake
        self.client_name = client_name
        self._events: collections.deque[ServerEvent] = collections.deque(maxlen=4096)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pulse = None
        self.connected = threading.Event()
        self.connections = 0
        self.error: str | None = None

    def start(self) -> None:
        import pulsectl  # noqa: F401  (fail here, in the caller, when it is missing)

        self._thread = threading.Thread(target=self._run, name="rtupscale-server-events", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        p = self._pulse
        if p is not None:
            try:
                p.event_listen_stop()
            except Exception:
                pass
        if self._thread is not None:
            self._thread.join(timeout)

    def take(self) -> list[ServerEvent]:
        out = []
        while self._events:
            out.append(self._events.popleft())
        return out

    def _on_event(self, ev) -> None:
        # libpulse's callback: no server calls from here, only note and wake
        self._events.append(ServerEvent(str(ev.facility._value), str(ev.t._value), int(ev.index)))
        self.wake()

    def _run(self) -> None:
        import pulsectl

        while not self._stop.is_set():
            try:
                with pulsectl.Pulse(self.client_name) as p:
                    p.event_mask_set(*FACILITIES)
                    p.event_callback_set(self._on_event)
                    self._pulse = p
                    self.connections += 1
                    if self.connections > 1:  # a server that came back: everything may have changed
                        self._events.append(ServerEvent("server", "new", -1))
                        self.wake()
                    self.connected.set()
                    self.error = None
                    if not self._stop.is_set():
                        p.event_listen()
            except Exception as e:  # pulsectl.PulseError and its kin: the server went away
                self.error = f"{type(e).__name__}: {e}"
            finally:
                self._pulse = None
                self.connected.clear()
            self._stop.wait(RECONNECT_S)
