"""Fakes for the live daemon's parts: a sound server, stream backends, device resolvers."""

from __future__ import annotations

import threading
import time

import numpy as np

from rtupscale import FACTOR
from rtupscale.audio import pulse
from rtupscale.audio.devices import Endpoint
from rtupscale.audio.rings import cbuffer
from rtupscale.audio.streams import XrunCounters


class FakeServer:
    """A sound server that answers from memory (see :class:`rtupscale.live.server.SoundServerClient`)."""

    SoundServerError = pulse.SoundServerError

    def __init__(self):
        self.modules: dict[int, tuple[str, int, int]] = {}
        self.next_module = 1
        self.unloaded: list[int] = []
        self.clock_restarts: list[str] = []

    def server_info(self):
        return pulse.ServerInfo(name="FakeAudio", version="1.0", default_sink="dac", default_source="mic")

    def null_sink_module(self, name):
        return next((m for m, v in self.modules.items() if v[0] == name), None)

    def load_null_sink(self, name, rate, channels):
        m = self.next_module
        self.next_module += 1
        self.modules[m] = (name, rate, channels)
        return m

    def unload_module(self, index):
        self.modules.pop(index, None)
        self.unloaded.append(index)

    def restart_sink_clock(self, name):
        self.clock_restarts.append(name)

    def list_sources(self):
        return []

    def list_sinks(self):
        return [pulse.ServerDevice(m, name, name, pulse.SampleSpec("float32le", ch, rate), "module-null-sink.c")
                for m, (name, rate, ch) in self.modules.items()]

    def stream_latencies(self):
        return pulse.StreamLatency(capture_buffer=0.004, source=0.0, playback_buffer=0.02, sink=0.002)

    def playback_route(self):
        return None

    def capture_route(self):
        return None

    def pipewire_clock(self):
        raise self.SoundServerError("no PipeWire")

    def pipewire_nodes(self):
        raise self.SoundServerError("no PipeWire")

    pipewire_verdict = staticmethod(pulse.pipewire_verdict)

    def list_app_streams(self):
        return []

    def list_monitor_readers(self, sink):
        return []

    def move_app_stream(self, index, sink):
        raise self.SoundServerError("no such stream")

    def resampling_advice(self, info, wanted_rate, device_rate):
        return ""


def resolve_capture(spec, virtual_sink, server):
    return Endpoint("capture", f"{virtual_sink}.monitor", "pulse", f"{virtual_sink}.monitor", 44100)


def resolve_playback(spec, virtual_sink, server):
    return Endpoint("playback", "dac", "pulse", "dac", 176400)


class FakeStreams:
    """Streams whose 'devices' run in :meth:`wait`: each call delivers ``period`` frames of a
    tone into the capture ring and, once armed, takes 4x that from the playback ring."""

    wakes_worker = True
    arm_frames = 0
    opened: list["FakeStreams"] = []

    def __init__(self, backend, capture, playback, rate, channels, cap_ring, play_ring, lat_in, lat_out,
                 pipewire=False, period=64, capture_stops_after=None, fail_open=False, thread_in_open=False):
        self.rate, self.channels = rate, channels
        self.cap_ring, self.play_ring = cap_ring, play_ring
        self.period = period
        self.xruns = XrunCounters()
        self.playing = False
        self.is_open = False
        self.closed = False
        self.fail_open = fail_open
        self.capture_stops_after = capture_stops_after
        t = np.arange(1 << 16) / rate
        tone = 0.25 * np.sin(2 * np.pi * 997.0 * t, dtype=np.float64)
        self._tone = np.ascontiguousarray(np.stack([tone] * channels, axis=1).astype(np.float32))
        self._pos = 0
        self._in = np.zeros((period, channels), np.float32)
        self._out = np.zeros((FACTOR * period, channels), np.float32)
        self._in_c, self._out_c = cbuffer(self._in), cbuffer(self._out)
        self.played = 0
        self.thread_in_open = thread_in_open
        self.callback_thread_id = None
        self._callback_done = threading.Event()
        FakeStreams.opened.append(self)

    def open(self):
        if self.fail_open:
            raise OSError("device busy")
        self.is_open = True
        if self.thread_in_open:  # as libpulse's threaded main loop starts in rtu_open
            started = threading.Event()

            def callback_thread():
                self.callback_thread_id = threading.get_native_id()
                started.set()
                self._callback_done.wait(5)

            threading.Thread(target=callback_thread, daemon=True).start()
            started.wait(2)

    def start(self):
        pass

    def arm_playback(self):
        self.playing = True

    def close(self):
        self._callback_done.set()
        self.closed = True
        self.is_open = False
        self.playing = False

    def wait(self, timeout_s):
        time.sleep(min(timeout_s, 0.001))
        if self.capture_stops_after is None or self.xruns.callbacks_in < self.capture_stops_after:
            n = self.period
            p = self._pos % (len(self._tone) - n)
            self._in[:] = self._tone[p:p + n]
            self._pos += n
            self.cap_ring.write(self._in_c, n)
            self.xruns.callbacks_in += 1
        if self.playing:
            self.played += self.play_ring.read(self._out_c, FACTOR * self.period)
            self.xruns.callbacks_out += 1

    def poll(self):
        return False, False

    def collect_stats(self):
        return 0

    def owed_average(self):
        return 0.0

    def server_latencies(self):
        return None

    @property
    def device_latency_s(self):
        return 0.004, 0.02


class StuckWorker:
    """A worker that never ends (a model call that hangs)."""

    def __init__(self):
        self.thread = threading.Thread(target=lambda: None)

    def stop(self, timeout_s):
        return False
