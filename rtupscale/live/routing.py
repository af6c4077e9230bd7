"""The apps that play to our virtual sink, remembered so that they can be put back on it.

When pipewire-pulse restarts, the virtual sink (a pipewire-pulse module) goes with it and
PipeWire moves the apps that were on it (native clients such as ``pw-play``) to the default
sink, where they play on, not upscaled; PulseAudio-protocol clients die with the server.
The daemon remembers which streams were on its sink while it runs, and after the server
comes back (and the daemon has made its sink again) moves those that are still there back.
"""

from __future__ import annotations

import logging
import os

from rtupscale.audio.pulse import AppStream
from rtupscale.live.server import SoundServerClient

log = logging.getLogger("rtupscale.daemon")

REATTACH_WINDOW_S = 10.0
"""After the server came back, streams we remember are moved back for this long; after it,
a stream the user moved elsewhere stays where it is."""


def shared_rate(streams: list[AppStream], sink: str, rates: tuple[int, ...]) -> int | None:
    """The one rate of ``rates`` that every app playing to ``sink`` plays at (paused ones
    aside), or None: no app plays there, one plays at a rate not in ``rates`` or not listed,
    or they play at different rates (then the sink stays where it is)."""
    playing = {a.rate for a in streams if a.sink == sink and not a.corked}
    if len(playing) == 1 and (rate := playing.pop()) in rates:
        return rate
    return None


def stream_key(a: AppStream) -> tuple:
    """Who a stream is across a server restart (its index changes): the process, the app's
    name and the stream's name."""
    return (a.pid, a.app, a.media)


class OurApps:
    """The app streams on virtual sink ``sink`` (this process's own excepted).

    Args:
        server: the sound-server client.
        sink: the virtual sink's name.
    """

    def __init__(self, server: SoundServerClient, sink: str):
        self.server = server
        self.sink = sink
        self.remembered: dict[tuple, AppStream] = {}
        self.moved_back = 0

    def _streams(self) -> list[AppStream]:
        pid = os.getpid()
        return [a for a in self.server.list_app_streams() if a.pid != pid]

    def rate(self, rates: tuple[int, ...]) -> int | None:
        """:func:`shared_rate` of the apps on our sink now (None when the server is away)."""
        try:
            return shared_rate(self._streams(), self.sink, rates)
        except self.server.SoundServerError:
            return None

    def park(self, sink: str) -> list[AppStream]:
        """Move every app on our sink to ``sink`` (another sink, while ours is remade);
        returns those moved."""
        moved = []
        for a in self._streams():
            if a.sink != self.sink:
                continue
            try:
                self.server.move_app_stream(a.index, sink)
                moved.append(a)
            except self.server.SoundServerError as e:
                log.info("could not move %s (stream %d) to %s: %s", a.app or a.node, a.index, sink, e)
        return moved

    def count_on(self, sink: str) -> int:
        """How many apps play to ``sink`` now (0 when the server is away)."""
        try:
            return sum(a.sink == sink for a in self._streams())
        except self.server.SoundServerError:
            return 0

    def unpark(self, sink: str) -> int:
        """Move every app on ``sink`` back to our sink; returns how many moved."""
        n = 0
        for a in self._streams():
            if a.sink != sink:
                continue
            try:
                self.server.move_app_stream(a.index, self.sink)
                n += 1
            except self.server.SoundServerError as e:
                log.warning("could not move %s (stream %d) back to %s: %s", a.app or a.node, a.index, self.sink, e)
        return n

    def refresh(self) -> None:
        """Remember the streams on our sink now (and forget the ones that left it)."""
        try:
            streams = self._streams()
        except self.server.SoundServerError:
            return  # the server is away: keep what we knew
        self.remembered = {stream_key(a): a for a in streams if a.sink == self.sink}

    def reattach(self) -> list[AppStream]:
        """Move the remembered streams that play elsewhere back to our sink; returns those
        moved. Raises nothing: a server that is not back yet is tried again later."""
        if not self.remembered:
            return []
        try:
            streams = self._streams()
        except self.server.SoundServerError:
            return []
        moved = []
        for a in streams:
            if a.sink != self.sink and stream_key(a) in self.remembered:
                try:
                    self.server.move_app_stream(a.index, self.sink)
                except self.server.SoundServerError as e:
                    log.info("could not move %s (stream %d) back to %s yet: %s", a.app or a.node, a.index, self.sink, e)
                    continue
                moved.append(a)
                self.moved_back += 1
                log.info("moved %s (stream %d, pid %s) back from %s to %s: it played there before the server restarted",
                         a.app or a.node, a.index, a.pid, a.sink or "?", self.sink)
        return moved
