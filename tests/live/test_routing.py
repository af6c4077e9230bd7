"""The apps on our virtual sink are remembered and put back after a server restart."""

from __future__ import annotations

import os

from rtupscale.audio.pulse import AppStream
from rtupscale.live.routing import OurApps, shared_rate
from tests.live.fakes import FakeServer


class Server(FakeServer):
    def __init__(self, streams):
        super().__init__()
        self.streams = streams
        self.moves = []

    def list_app_streams(self):
        return list(self.streams)

    def move_app_stream(self, index, sink):
        self.moves.append((index, sink))
        self.streams = [AppStream(a.index, sink, a.app, a.pid, a.media, a.node) if a.index == index else a for a in self.streams]


def test_a_stream_that_was_ours_goes_back_after_the_restart_and_others_stay():
    music = AppStream(7, "rtupscale", "pw-play", 4242, "song.flac", "pw-play")
    chat = AppStream(8, "dac", "chat", 5151, "call", "chat")
    own = AppStream(9, "rtupscale", "rtupscale", os.getpid(), "ours", "rtupscale")
    server = Server([music, chat, own])
    apps = OurApps(server, "rtupscale")
    apps.refresh()
    assert list(apps.remembered.values()) == [music]  # not the chat on the DAC, not our own stream
    # the server restarted: new indices, the music was moved to the DAC
    server.streams = [AppStream(31, "dac", "pw-play", 4242, "song.flac", "pw-play"), AppStream(32, "dac", "chat", 5151, "call", "chat")]
    moved = apps.reattach()
    assert [a.index for a in moved] == [31] and server.moves == [(31, "rtupscale")]
    assert apps.reattach() == []  # already back: nothing more to move


def test_a_server_that_is_not_back_keeps_the_memory():
    server = Server([AppStream(7, "rtupscale", "pw-play", 4242, "song.flac", "pw-play")])
    apps = OurApps(server, "rtupscale")
    apps.refresh()

    def down():
        raise server.SoundServerError("connection refused")

    server.list_app_streams = down
    apps.refresh()
    assert apps.reattach() == [] and len(apps.remembered) == 1


def _app(index, sink, rate, corked=False, pid=4242):
    return AppStream(index, sink, "player", pid, f"track {index}", "", rate, corked)


def test_the_shared_rate_is_the_one_rate_of_the_apps_playing_on_the_sink():
    rates = (44100, 48000)
    assert shared_rate([_app(1, "rtupscale", 48000), _app(2, "dac", 44100)], "rtupscale", rates) == 48000
    assert shared_rate([_app(1, "rtupscale", 48000), _app(2, "rtupscale", 48000)], "rtupscale", rates) == 48000
    # paused apps do not count; apps at two rates, at an unknown or unsupported rate, or none: no verdict
    assert shared_rate([_app(1, "rtupscale", 48000), _app(2, "rtupscale", 44100, corked=True)], "rtupscale", rates) == 48000
    assert shared_rate([_app(1, "rtupscale", 48000), _app(2, "rtupscale", 44100)], "rtupscale", rates) is None
    assert shared_rate([_app(1, "rtupscale", 96000)], "rtupscale", rates) is None
    assert shared_rate([_app(1, "rtupscale", 0)], "rtupscale", rates) is None
    assert shared_rate([_app(2, "dac", 48000)], "rtupscale", rates) is None


class RateServer(Server):
    def move_app_stream(self, index, sink):
        self.moves.append((index, sink))
        self.streams = [AppStream(a.index, sink, a.app, a.pid, a.media, a.node, a.rate, a.corked)
                        if a.index == index else a for a in self.streams]


def test_apps_are_parked_on_another_sink_and_come_back():
    server = RateServer([_app(1, "rtupscale", 48000), _app(2, "dac", 44100, pid=5151),
                         _app(3, "rtupscale", 44100, pid=os.getpid())])
    apps = OurApps(server, "rtupscale")
    assert apps.rate((44100, 48000)) == 48000  # our own stream (pid) does not count
    assert [a.index for a in apps.park("rtupscale-switching")] == [1]
    assert server.moves == [(1, "rtupscale-switching")]
    assert apps.rate((44100, 48000)) is None  # nothing on our sink now
    assert apps.move_until_there({1}, "rtupscale", 1.0) == (1, 2, 0)  # a move, then a round that found it there
    assert [a.sink for a in server.streams] == ["rtupscale", "dac", "rtupscale"]


class LaggingServer(RateServer):
    """As PipeWire: a move is accepted at once and takes effect only at the next listing but
    one, and a stream whose sink is removed goes to the fallback sink (``dac``)."""

    def __init__(self, streams):
        super().__init__(streams)
        self.pending: dict[int, list] = {}  # index -> [sink, listings to go]

    def list_app_streams(self):
        for index, p in list(self.pending.items()):
            p[1] -= 1
            if p[1] < 0:
                del self.pending[index]
                super().move_app_stream(index, p[0])
                self.moves.pop()
        return list(self.streams)

    def move_app_stream(self, index, sink):
        self.moves.append((index, sink))
        if self.pending.get(index, [None])[0] != sink:  # the same move again does not restart it
            self.pending[index] = [sink, 1]

    def remove_sink(self, name):
        self.streams = [AppStream(a.index, "dac", a.app, a.pid, a.media, a.node, a.rate, a.corked)
                        if a.sink == name else a for a in self.streams]


def test_moves_are_repeated_until_each_stream_is_there_wherever_it_went():
    """A move that had not landed when its sink went: the stream is found on the fallback
    sink and moved back by its index."""
    server = LaggingServer([_app(1, "rtupscale", 48000), _app(2, "dac", 44100, pid=5151)])
    apps = OurApps(server, "rtupscale")
    assert [a.index for a in apps.park("rtupscale-switching")] == [1]
    assert server.streams[0].sink == "rtupscale"  # accepted, not yet done
    moves, tries, left = apps.move_until_there({1}, "rtupscale-switching", 2.0)
    assert left == 0 and tries >= 2 and server.streams[0].sink == "rtupscale-switching"
    # the park sink goes before the move back lands: the app falls to the DAC
    apps.server.move_app_stream(1, "rtupscale")
    server.pending.clear()
    server.remove_sink("rtupscale-switching")
    assert server.streams[0].sink == "dac"
    moves, tries, left = apps.move_until_there({1}, "rtupscale", 2.0)
    assert left == 0 and moves >= 1 and server.streams[0].sink == "rtupscale"
    assert server.streams[1].sink == "dac"  # the other app stays where it was
    assert apps.move_until_there({1, 99}, "rtupscale", 1.0) == (0, 1, 0)  # an ended stream is left out


def test_all_apps_takes_every_stream_once_leaves_excluded_ones_and_gives_them_back():
    from rtupscale.live.routing import AllApps

    music = AppStream(1, "dac", "Music Player", 100, "song", "", 44100)
    chat = AppStream(2, "headset", "chat", 200, "call", "", 48000)
    excluded = AppStream(3, "dac", "Firefox", 300, "video", "", 48000)
    parked = AppStream(4, "rtupscale-switching", "waiting", 400, "x", "", 48000)
    own = AppStream(5, "dac", "rtupscale", os.getpid(), "ours", "")
    server = RateServer([music, chat, excluded, parked, own])
    apps = AllApps(server, "rtupscale", exclude=(" firefox ",), skip_sinks=("rtupscale-switching",))
    assert sorted(a.index for a in apps.take(now=100.0)) == [1, 2]
    assert {a.index: a.sink for a in server.streams} == {1: "rtupscale", 2: "rtupscale", 3: "dac",
                                                          4: "rtupscale-switching", 5: "dac"}
    # at once, a stream found elsewhere was linked where it had asked to go: moved again
    server.move_app_stream(2, "headset")
    server.moves.clear()
    assert apps.take(now=100.5) == [] and server.moves == [(2, "rtupscale")]
    # later, the user moves the chat to the headset: it stays there; a new app is taken
    server.move_app_stream(2, "headset")
    server.streams.append(AppStream(6, "dac", "game", 600, "fx", "", 48000))
    server.moves.clear()
    assert [a.index for a in apps.take(now=110.0)] == [6] and server.moves == [(6, "rtupscale")]
    # at the end, each one still on our sink goes back where it came from
    server.moves.clear()
    assert apps.give_back() == 2
    assert sorted(server.moves) == [(1, "dac"), (6, "dac")]
    assert apps.came_from == {}


def test_a_stream_taken_before_a_server_restart_goes_back_to_its_first_sink():
    from rtupscale.live.routing import AllApps

    server = RateServer([AppStream(1, "dac", "player", 100, "song", "", 44100)])
    apps = AllApps(server, "rtupscale")
    apps.take()
    # the server restarted: new index, and PipeWire put the stream on the DAC; taken again
    server.streams = [AppStream(41, "dac", "player", 100, "song", "", 44100)]
    assert [a.index for a in apps.take()] == [41]
    server.moves.clear()
    assert apps.give_back() == 1 and server.moves == [(41, "dac")]
