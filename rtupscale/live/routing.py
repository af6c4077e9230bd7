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
import time

from rtupscale.audio.pulse import AppStream
from rtupscale.live.server import SoundServerClient

log = logging.getLogger("rtupscale.daemon")

RETAKE_S = 2.0
"""``routing.all_apps``: for this long after a stream was moved to our sink, a stream found
elsewhere is moved again (the server linked it where it had asked to go)."""
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


def others_streams(server: SoundServerClient) -> list[AppStream]:
    """Every playback stream on the server but this process's own."""
    pid = os.getpid()
    return [a for a in server.list_app_streams() if a.pid != pid]


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
        return others_streams(self.server)

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

    def move_until_there(self, indices: set[int], sink: str, limit_s: float) -> tuple[int, int, int]:
        """Move the streams ``indices`` to ``sink`` until each plays there, wherever it is now,
        for up to ``limit_s`` (a PipeWire server accepts a move before the new sink can take
        streams, and the stream stays where it was; a stream whose sink is removed meanwhile
        goes to the fallback sink). Streams that ended are left out. Returns ``(moves, tries,
        left)``: the moves made, the rounds, and the streams still elsewhere at the end."""
        deadline = time.monotonic() + limit_s
        moves = tries = 0
        while True:
            tries += 1
            try:
                now = {a.index: a for a in self._streams()}
            except self.server.SoundServerError:
                return moves, tries, len(indices)
            todo = [now[i] for i in sorted(indices) if i in now and now[i].sink != sink]
            if not todo or time.monotonic() > deadline:
                return moves, tries, len(todo)
            for a in todo:
                try:
                    self.server.move_app_stream(a.index, sink)
                    moves += 1
                except self.server.SoundServerError as e:
                    log.info("could not move %s (stream %d) to %s: %s", a.app or a.node, a.index, sink, e)
            time.sleep(0.1)

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


class AllApps:
    """``routing.all_apps``: every app's playback stream on our sink, new ones as they come;
    each put back on the sink it came from when the daemon stops.

    A stream is taken once, when it is first seen: one the user moves elsewhere afterwards
    stays there. Streams of excluded apps (``routing.exclude``), our own, and those on
    ``skip_sinks`` (the parking sink of a rate switch) are left alone.

    Args:
        server: the sound-server client.
        sink: the virtual sink's name.
        exclude: application names to leave alone (whole names, any case).
        skip_sinks: sinks whose streams are left alone.
    """

    def __init__(self, server: SoundServerClient, sink: str, exclude: tuple[str, ...] = (),
                 skip_sinks: tuple[str, ...] = ()):
        self.server = server
        self.sink = sink
        self.exclude = {n.strip().casefold() for n in exclude}
        self.skip_sinks = set(skip_sinks)
        self.seen: set[int] = set()
        """Stream indices looked at (taken or not): each is decided once."""
        self.came_from: dict[tuple, str] = {}
        """Each taken stream (by :func:`stream_key`, which outlives a server restart): the sink it played to."""
        self.taken = 0
        self.pending: dict[int, float] = {}
        """Streams just moved (index -> until when): PipeWire can accept the move of a stream
        that is still being linked and then link it where it asked to go; such a stream is
        moved again until then (a user moving it back later is left alone)."""

    def _streams(self) -> list[AppStream]:
        return others_streams(self.server)

    def take(self, now: float | None = None) -> list[AppStream]:
        """Move the streams not seen before to our sink (and again those of ``pending`` that
        are not on it); returns those moved. Raises nothing: a server that is away is tried
        at the next event."""
        now = time.monotonic() if now is None else now
        try:
            streams = self._streams()
        except self.server.SoundServerError:
            return []
        moved = []
        for a in streams:
            if a.index in self.pending and a.sink != self.sink and now < self.pending[a.index]:
                try:
                    self.server.move_app_stream(a.index, self.sink)
                    log.info("routing.all_apps: moved %s (stream %d) to %s again (it was linked to %s)",
                             a.app or a.node or "?", a.index, self.sink, a.sink)
                except self.server.SoundServerError:
                    pass
        self.pending = {i: t for i, t in self.pending.items() if t > now}
        for a in streams:
            if a.index in self.seen:
                continue
            self.seen.add(a.index)
            if a.sink == self.sink or a.sink in self.skip_sinks or not a.sink:
                continue
            if a.app.strip().casefold() in self.exclude:
                log.info("routing.all_apps: %s (stream %d) is excluded: it stays on %s", a.app, a.index, a.sink)
                continue
            try:
                self.server.move_app_stream(a.index, self.sink)
            except self.server.SoundServerError as e:
                log.info("routing.all_apps: could not move %s (stream %d) to %s: %s", a.app or a.node, a.index, self.sink, e)
                continue
            self.came_from.setdefault(stream_key(a), a.sink)
            self.pending[a.index] = now + RETAKE_S
            self.taken += 1
            moved.append(a)
            log.info("routing.all_apps: moved %s (stream %d) from %s to %s", a.app or a.node or "?", a.index, a.sink, self.sink)
        live = {a.index for a in streams}
        self.seen &= live  # an index the server gives again later is a new stream
        return moved

    def give_back(self) -> int:
        """Move every taken stream still on our sink back to the sink it came from; returns
        how many moved. One whose sink is gone stays (the server moves it on when our sink
        goes)."""
        try:
            streams = self._streams()
        except self.server.SoundServerError:
            return 0
        n = 0
        for a in streams:
            origin = self.came_from.get(stream_key(a))
            if origin is None or a.sink != self.sink:
                continue
            try:
                self.server.move_app_stream(a.index, origin)
                n += 1
                log.info("routing.all_apps: moved %s (stream %d) back to %s", a.app or a.node or "?", a.index, origin)
            except self.server.SoundServerError as e:
                log.info("routing.all_apps: %s (stream %d) not moved back to %s: %s", a.app or a.node, a.index, origin, e)
        self.came_from.clear()
        self.seen.clear()
        return n
