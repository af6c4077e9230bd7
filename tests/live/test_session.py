"""A session, its worker and the daemon's recovery, assembled from fakes: no sound server."""

from __future__ import annotations

import time

import pytest

from rtupscale.audio import pulse
from rtupscale.config import Config
from rtupscale.engine import build_engine
from rtupscale.live import worker as worker_mod
from rtupscale.live.daemon import Daemon, State
from rtupscale.live.session import Session, SessionParts
from rtupscale.audio import pulse
from rtupscale.live.sink import VirtualSink
from tests.live.fakes import FakeServer, FakeStreams, StuckWorker, resolve_capture, resolve_playback


def _engine(config, runner, rate):
    return build_engine(config, config.audio.channels, rate, runner)


def _parts(server, tmp_path, **streams_kw):
    return SessionParts(
        server=server, sink=VirtualSink(server, tmp_path), build_engine=_engine,
        open_streams=lambda *a: FakeStreams(*a, **streams_kw),
        resolve_capture=resolve_capture, resolve_playback=resolve_playback,
        choose_backend=lambda setting, c, p: "pulse",
    )


@pytest.fixture(autouse=True)
def _runtime_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))


def _wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return cond()


def test_session_runs_audio_through_the_engine_and_closes(tmp_path):
    server = FakeServer()
    events = []
    s = Session(Config(), None, _parts(server, tmp_path))
    assert s.sink_module in server.modules  # the virtual sink was made
    s.start(events)
    try:
        assert _wait_for(lambda: s.streams.played > 20000), "no audio reached the fake DAC"
        assert s.failure is None and s.state.first_audio_at is not None
        assert s.pipeline.counters.blocks > 0
    finally:
        assert s.close() is True
    assert s.streams.closed and not server.modules  # streams freed, sink removed


def test_the_threads_the_streams_start_in_open_are_promoted(tmp_path):
    """The native streams start libpulse's thread in open(): start() must count it as the
    streams' own (SCHED_FIFO where allowed), not as a thread that was there before."""
    s = Session(Config(), None, _parts(FakeServer(), tmp_path, thread_in_open=True))
    s.start([])
    try:
        tid = s.streams.callback_thread_id
        assert tid is not None
        assert any(entry.startswith(f"{tid}: ") for entry in s.audio_thread_priority), s.audio_thread_priority
    finally:
        s.close()


def test_close_keeps_the_sink_for_a_reopen(tmp_path):
    server = FakeServer()
    parts = _parts(server, tmp_path)
    s = Session(Config(), None, parts)
    s.start([])
    s.close(keep_sink=True)
    assert list(server.modules) == [1]
    s2 = Session(Config(), None, parts)  # the same sink is taken over
    assert s2.sink_module == 1 and server.unloaded == []
    s2.close()


def test_a_new_sink_s_clock_is_restarted_once_on_pulseaudio_only(tmp_path):
    """PulseAudio: a null sink just loaded gives a stream moved onto it no data for up to 2 s
    unless its clock is restarted once its monitor's capture is connected (after the streams
    start). A sink kept across a reopen is not touched (apps play on it); PipeWire has no
    such wait and is left alone."""
    server = FakeServer()
    parts = _parts(server, tmp_path)
    s = Session(Config(), None, parts)
    assert server.clock_restarts == []  # not before the capture runs
    s.start([])
    assert server.clock_restarts == ["rtupscale"]
    s.close(keep_sink=True)
    s2 = Session(Config(), None, parts)
    s2.start([])
    s2.close()
    assert server.clock_restarts == ["rtupscale"]  # the kept sink: not again

    class PipeWire(FakeServer):
        def server_info(self):
            return pulse.ServerInfo(name="PulseAudio (on PipeWire 0.3.65)", version="15.0.0", default_sink="dac",
                                    default_source="mic")

    server = PipeWire()
    s = Session(Config(), None, _parts(server, tmp_path))
    s.start([])
    s.close()
    assert server.clock_restarts == []


def test_close_leaves_the_streams_open_when_the_worker_does_not_end(tmp_path):
    s = Session(Config(), None, _parts(FakeServer(), tmp_path))
    s.worker = StuckWorker()
    assert s.close() is False
    assert not s.streams.closed  # the worker may still touch them


def test_streams_that_do_not_open_are_a_runtime_error(tmp_path):
    with pytest.raises(RuntimeError, match="cannot open the audio streams.*device busy"):
        Session(Config(), None, _parts(FakeServer(), tmp_path, fail_open=True))


def test_a_capture_that_stops_fails_the_session(tmp_path, monkeypatch):
    monkeypatch.setattr(worker_mod, "STALL_S", 0.3)
    s = Session(Config(), None, _parts(FakeServer(), tmp_path, capture_stops_after=50))
    s.start([])
    try:
        assert _wait_for(lambda: s.failure is not None)
        assert "no audio from" in s.failure
    finally:
        s.close()


def test_daemon_recovers_a_failed_session_and_keeps_counting(tmp_path, monkeypatch):
    server = FakeServer()
    made = []

    def streams(*a):
        st = FakeStreams(*a)
        made.append(st)
        return st

    d = Daemon(Config(), None, server=server, parts={
        "open_streams": streams, "resolve_capture": resolve_capture, "resolve_playback": resolve_playback,
        "choose_backend": lambda setting, c, p: "pulse",
    })
    d.control = type("Ctl", (), {"path": tmp_path / "c.sock"})()
    d.session = d._start_session(d.config)
    first = d.session
    try:
        assert _wait_for(lambda: first.streams.played > 0)
        first.streams.xruns.output_underflows = 3
        first.fail("no audio from the fake (test)")
        d._recover(first.failure)
        assert d.session is not first and d.state == State.RUNNING and d.recoveries == 1
        assert first.streams.closed and not d.session.streams.closed
        assert list(server.modules) == [1] and server.unloaded == []  # the apps' sink stayed
        assert _wait_for(lambda: d.session.streams.played > 0)
        st = d.status()
        assert st["state"] == "running" and st["xruns"]["output_underflows"] == 3
    finally:
        d.session.close()
        d.sink.remove()
    assert not server.modules


def test_the_worker_loop_allocates_nothing_per_block(tmp_path):
    """The whole worker loop (not only the pipeline) over its first thousand wake-ups, with
    fake streams that deliver 64 frames per wake-up: no block-sized temporary, no growth."""
    import tracemalloc

    s = Session(Config(), None, _parts(FakeServer(), tmp_path))
    s.start([])
    try:
        assert _wait_for(lambda: s.streams.played > 20000)  # running, scratch made
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        blocks = s.pipeline.counters.blocks
        assert _wait_for(lambda: s.pipeline.counters.blocks >= blocks + 250, timeout=30)
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        s.close()
    assert s.failure is None
    assert peak - before < 4096, f"peak {peak - before} bytes"
    assert current - before < 2048, f"{current - before} bytes left behind"


def test_rate_auto_remakes_the_sink_at_the_apps_rate_and_brings_them_back(tmp_path):
    """``audio.rate: auto``: the apps on our sink all play at 48 kHz, so the sink is made again
    at 48000 and the path reopens at 48000 in / 192000 out; meanwhile the apps wait on a
    silent sink and come back. Apps at two rates leave it where it is."""
    import dataclasses

    from rtupscale.audio.pulse import AppStream
    from rtupscale.config import AudioConfig
    from rtupscale.live.daemon import PARK_SUFFIX
    from rtupscale.live.routing import OurApps

    class Server(FakeServer):
        streams: list = []
        moves: list = []

        def list_app_streams(self):
            return list(self.streams)

        def move_app_stream(self, index, sink):
            self.moves.append((index, sink))
            self.streams = [dataclasses.replace(a, sink=sink) if a.index == index else a for a in self.streams]

    server = Server()
    server.streams = [AppStream(5, "rtupscale", "player", 4242, "song", "", 48000)]
    config = dataclasses.replace(Config(), audio=AudioConfig(rate="auto"))
    d = Daemon(config, None, server=server, parts={
        "open_streams": FakeStreams, "resolve_capture": resolve_capture, "resolve_playback": resolve_playback,
        "choose_backend": lambda setting, c, p: "pulse",
    })
    d.control = type("Ctl", (), {"path": tmp_path / "c.sock"})()
    d.apps = OurApps(server, "rtupscale")
    d.session = d._start_session(d.config)
    first = d.session
    try:
        assert first.rate == 44100 and server.modules[first.sink_module][1] == 44100
        d._follow_rate(time.monotonic())
        s = d.session
        assert s is not first and first.streams.closed
        assert (s.rate, s.pipeline.out_rate, d.rate_switches) == (48000, 192000, 1)
        assert [v for v in server.modules.values()] == [("rtupscale", 48000, 2)]  # the park sink is gone
        assert server.moves == [(5, f"rtupscale-{PARK_SUFFIX}"), (5, "rtupscale")]
        st = d.status()
        assert st["capture"]["follows_apps"] and st["capture"]["rate"] == 48000
        # a second app at 44.1 kHz: two rates, the sink stays (and within RATE_SWITCH_MIN_S anyway)
        server.streams = server.streams + [AppStream(6, "rtupscale", "other", 5151, "x", "", 44100)]
        assert d._follow_rate(time.monotonic() + 60) == 0.0 and d.session is s
        # the 48 kHz app leaves: the sink follows the one left, but not sooner than RATE_SWITCH_MIN_S
        server.streams = server.streams[1:]
        now = d.last_rate_switch + 0.5
        assert d._follow_rate(now) > now and d.session is s
        d._follow_rate(now + 5)
        assert d.session.rate == 44100 and d.rate_switches == 2
    finally:
        d.session.close()
        d.sink.remove()


def test_a_sink_left_by_a_daemon_that_died_is_taken_over_at_the_same_rate(tmp_path):
    """A sink whose owner is gone (no lock held) is kept, with its apps, when it has the rate
    and channels asked for; at another rate it is replaced."""
    server = FakeServer()
    left = server.load_null_sink("rtupscale", 44100, 2)
    sink = VirtualSink(server, tmp_path)
    try:
        assert sink.ensure("rtupscale", 44100, 2) == left and server.unloaded == []
    finally:
        sink.remove()
    left = server.load_null_sink("rtupscale", 48000, 2)
    sink = VirtualSink(server, tmp_path)
    try:
        assert sink.ensure("rtupscale", 44100, 2) != left and server.unloaded[-1] == left
    finally:
        sink.remove()


class _AheadServer(FakeServer):
    """A server whose DAC sink reports ``sink_s`` of latency."""

    def __init__(self):
        super().__init__()
        self.sink_s = 0.002

    def stream_latencies(self):
        return pulse.StreamLatency(capture_buffer=0.004, source=0.0, playback_buffer=0.02, sink=self.sink_s)


def test_a_dac_sink_that_drains_back_is_not_a_fault_one_that_stays_ahead_is(tmp_path, monkeypatch):
    """A sink that ran without a low-latency client renders up to 2 s ahead and drains back at
    real time once our stream asks for less: no reopen. One that stays ahead is reopened."""
    from rtupscale.live import session as session_mod

    clock = [1000.0]
    monkeypatch.setattr(session_mod.time, "monotonic", lambda: clock[0])
    server = _AheadServer()
    s = Session(Config(), None, _parts(server, tmp_path))
    try:
        for ahead in (0.831, 0.6, 0.35, 0.1, 0.01):  # a leftover draining at real time
            server.sink_s = ahead
            s.measure_device_latency()
            assert s.failure is None, (ahead, s.failure)
            clock[0] += 0.25
        for _ in range(int(session_mod.SINK_AHEAD_PERSIST_S) + 1):  # stuck ahead
            server.sink_s = 0.4
            s.measure_device_latency()
            clock[0] += 1.0
        assert s.failure is not None and "400 ms ahead of real time" in s.failure
    finally:
        s.close()


def test_the_sink_ahead_watch_restarts_when_the_sink_comes_back():
    from rtupscale.live.session import SinkAheadWatch

    w = SinkAheadWatch(limit_s=0.1, persist_s=3.0)
    assert w.update(0.5, 0.0) is None and w.update(0.5, 2.9) is None
    assert w.update(0.05, 3.0) is None and w.over_since is None  # back under: forgotten
    assert w.update(0.5, 4.0) is None and w.update(0.5, 6.9) is None
    assert "for 3.0 s" in w.update(0.5, 7.0)


def test_a_pipewire_graph_held_at_another_rate_is_reopened_only_while_that_can_help(tmp_path, monkeypatch, caplog):
    """PipeWire keeps the DAC's graph at another rate while anything runs on it. A player on
    the DAC or a recording of its monitor is named, and the playback is not reopened (each
    reopen is a pause at the DAC). With nothing seen on it, the daemon reopens, but at most
    ``REGRAPH_TRIES`` times in a row; a change in the server's streams lets it try again."""
    import logging

    from rtupscale.audio.pulse import AppStream
    from rtupscale.live import daemon as daemon_mod

    class Server(FakeServer):
        streams: list = []
        readers: list = []

        def list_app_streams(self):
            return list(self.streams)

        def list_monitor_readers(self, sink):
            return [a for a in self.readers if a.sink == sink]

    def resampled(s, server):  # the DAC node runs at 48000 under our 176400 Hz stream
        s.routing.dac_rate, s.routing.resampled = 48000, True
        s.routing.advice = "another stream holds the DAC's graph at 48000 Hz (...)"

    monkeypatch.setattr(daemon_mod, "check_playback_rate", resampled)
    monkeypatch.setattr(daemon_mod, "REGRAPH_EVERY_S", 0.0)
    server = Server()
    d = Daemon(Config(), None, server=server, parts={
        "open_streams": FakeStreams, "resolve_capture": resolve_capture, "resolve_playback": resolve_playback,
        "choose_backend": lambda setting, c, p: "pulse",
    })
    d.control = type("Ctl", (), {"path": tmp_path / "c.sock"})()
    d.session = d._start_session(d.config)
    d.session.server = type("Info", (), {"is_pipewire": True})()
    reopens = []
    monkeypatch.setattr(d, "_reopen", lambda why: reopens.append(why))
    caplog.set_level(logging.INFO, logger="rtupscale.daemon")
    try:
        server.readers = [AppStream(47, "dac", "parec", 4242, "record", "parec", 48000)]
        d.check_rates()
        assert reopens == [] and "held by parec (recording its monitor, stream 47)" in caplog.text
        server.readers = []
        server.streams = [AppStream(9, "dac", "pw-cat", None, "tone", "pw-cat", 48000)]
        d.check_rates()
        assert reopens == [] and "held by pw-cat (stream 9)" in caplog.text
        server.streams = [AppStream(3, "other-sink", "player", 5151, "song", "", 44100)]  # not on the DAC
        for _ in range(daemon_mod.REGRAPH_TRIES + 3):
            d.check_rates()
        assert len(reopens) == daemon_mod.REGRAPH_TRIES, reopens
        assert caplog.text.count(f"through {daemon_mod.REGRAPH_TRIES} reopens") == 1
        server.streams = []  # a stream left the server: worth another try
        d.check_rates()
        assert len(reopens) == daemon_mod.REGRAPH_TRIES + 1
    finally:
        d.session.close()
        d.sink.remove()
