"""One opening of the live audio path: virtual sink, endpoints, rings, streams, pipeline.

A session is assembled from parts passed in (:class:`SessionParts`): the sound-server
client, the virtual sink, the engine factory and the stream factory, so it can be built
with fakes. The main thread builds it and closes it; its :class:`~rtupscale.live.worker.Worker`
runs it.
"""

from __future__ import annotations

import collections
import enum
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from rtupscale import FACTOR
from rtupscale.audio.dac_gaps import DacGapDetector
from rtupscale.audio.devices import Endpoint, resolve_capture, resolve_playback
from rtupscale.audio.pipeline import Pipeline
from rtupscale.audio.rings import FrameRing
from rtupscale.audio.streams import Streams, prefill_warning
from rtupscale.live.server import SoundServerClient
from rtupscale.live.sink import VirtualSink

log = logging.getLogger("rtupscale.daemon")

SINK_LATENCY_LIMIT_S = 0.1
"""A DAC sink latency above this (the server says so) for ``SINK_AHEAD_PERSIST_S`` reopens
the audio path: ALSA's pulse plugin re-makes its stream after a device underflow without
asking for a low sink latency, and only a new stream brings it back."""
SINK_AHEAD_PERSIST_S = 3.0
"""How long the DAC sink may run ahead before the path is reopened. A sink that ran without
a low-latency client (idle, or its last client gone) renders up to its maximum latency
ahead (2 s for PulseAudio's ALSA and null sinks) and drains back at real time once our
stream asks for less: that is not a fault."""


class SinkAheadWatch:
    """Tells a DAC sink that stays ahead of real time from one that drains back.

    Explicit state: when the sink's latency first went over ``limit_s`` in the current run
    of samples over it (``None`` while under)."""

    def __init__(self, limit_s: float = SINK_LATENCY_LIMIT_S, persist_s: float = SINK_AHEAD_PERSIST_S):
        self.limit_s = limit_s
        self.persist_s = persist_s
        self.over_since: float | None = None

    def update(self, sink_s: float, now: float) -> str | None:
        """Take one sample of the sink's latency (s) at ``now`` (monotonic s); the failure
        reason when it has been over the limit for ``persist_s``, else None."""
        if sink_s <= self.limit_s:
            self.over_since = None
            return None
        if self.over_since is None:
            self.over_since = now
        if now - self.over_since < self.persist_s:
            return None
        return (f"the DAC sink runs {1e3 * sink_s:.0f} ms ahead of real time for "
                f"{now - self.over_since:.1f} s (after a server underrun)")


WORKER_JOIN_S = 2.0
"""How long :meth:`Session.close` waits for the worker to end."""

XRUN_TIMES_KEPT = 64
"""How many xrun times ``status`` keeps (``xrun_times``)."""


class Backend(str, enum.Enum):
    PULSE = "pulse"
    PORTAUDIO = "portaudio"


def open_streams(backend: str, capture: Endpoint, playback: Endpoint, rate: int, channels: int,
                 cap_ring: FrameRing, play_ring: FrameRing, latency_in_s: float, latency_out_s: float,
                 pipewire: bool = False) -> Streams:
    """The stream backend ``backend`` on these devices and rings (not opened yet);
    ``pipewire``: the server is pipewire-pulse (the native streams' request size)."""
    if backend == Backend.PULSE:
        from rtupscale.audio import pulse_streams

        return pulse_streams.PulseStreams(capture, playback, rate, channels, cap_ring, play_ring, latency_in_s,
                                          latency_out_s, pulse_streams.request_s(FACTOR * rate, pipewire))
    from rtupscale.audio.streams import LiveStreams

    return LiveStreams(capture, playback, rate, channels, cap_ring, play_ring, latency_in_s, latency_out_s)


def _choose_backend(setting: str, capture: Endpoint, playback: Endpoint) -> str:
    from rtupscale.audio.pulse_streams import choose_backend

    return choose_backend(setting, capture, playback)


@dataclass
class SessionParts:
    """What a session is built from. Tests pass fakes for any of these."""

    server: SoundServerClient
    sink: VirtualSink
    build_engine: Callable  # (config, runner, rate) -> Engine
    open_streams: Callable[..., Streams] = open_streams
    resolve_capture: Callable = resolve_capture
    resolve_playback: Callable = resolve_playback
    choose_backend: Callable[[str, Endpoint, Endpoint], str] = _choose_backend
    before_start: Callable[[], None] = lambda: None
    """Called before the streams start (the daemon collects garbage and freezes the heap)."""


@dataclass
class Routing:
    """What was chosen and what the server does with it (for logs and ``status``)."""

    server: str = "none"
    capture: str = ""
    playback: str = ""
    rate: int = 0
    out_rate: int = 0
    capture_route: str = ""
    playback_route: str = ""
    dac_rate: int | None = None
    resampled: bool | None = None
    advice: str = ""
    backend: str = ""
    quantum_in_s: float = 0.0
    """PipeWire: the graph quantum of the virtual sink (capture side) and of the DAC, s."""
    quantum_out_s: float = 0.0


GAP_UNDERFLOW_S = 5.0
"""A gap found within this long of an underflow notice is that underflow (counted once)."""


class DacGaps:
    """The DAC gap check of a session on PipeWire (:mod:`rtupscale.audio.dac_gaps`), fed from
    the main thread with the playback's timing updates; counts the gaps and their causes."""

    def __init__(self, rate: int):
        self.rate = rate
        self.detector = DacGapDetector(rate)
        self.count = 0
        self.frames = 0
        self.causes: collections.Counter = collections.Counter()
        self.last = ""
        self.times: collections.deque = collections.deque(maxlen=XRUN_TIMES_KEPT)
        """``(time.monotonic(), 1)`` for each gap, when it was found (a few timing updates after it)."""
        self._seq = -1
        self._underflows = 0
        self._underflow_at = -1e9

    def check(self, streams) -> list[str]:
        """Look at the newest timing update; returns a log line per gap found."""
        x = streams.playback_indexes()
        now = time.monotonic()
        if streams.xruns.output_underflows != self._underflows:
            self._underflows, self._underflow_at = streams.xruns.output_underflows, now
        if x is None or x[3] == self._seq:
            return []
        self._seq = x[3]
        if not streams.playing:  # corked or disarmed: the sink takes nothing, and knows it
            self.detector.reset()
            return []
        lines = []
        for g in self.detector.add(x[0], x[1], x[2]):
            if now - self._underflow_at < GAP_UNDERFLOW_S:
                continue  # the server reported it: counted as an output underflow
            q = self.detector.quantum
            cause = "server_late" if g.queued_frames >= max(q, 1) else "queue_short"
            self.count += 1
            self.times.append((now, 1))
            self.frames += g.frames
            self.causes[cause] += 1
            ms, held = 1e3 * g.frames / self.rate, 1e3 * g.queued_frames / self.rate
            if cause == "server_late":
                self.last = (f"the DAC played {ms:.1f} ms of silence in our stream while the server held {held:.1f} ms of it: "
                             f"its data thread missed the DAC's graph cycles (quantum {1e3 * q / self.rate:.1f} ms; "
                             "a stall of the server or of the machine)")
            else:
                self.last = (f"the DAC played {ms:.1f} ms of silence in our stream: the server's queue for it was short "
                             f"({held:.1f} ms); raise latency.playback_buffer_ms")
            lines.append(f"gap at the DAC: {self.last}")
        return lines


@dataclass
class WorkerState:
    """What the worker reports to the main thread (plain fields: one writer each)."""

    heartbeat: float = field(default_factory=time.monotonic)
    first_audio_at: float | None = None
    late_wakes: int = 0
    max_late_wake_s: float = 0.0
    priority: str = "normal"
    xrun_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=XRUN_TIMES_KEPT))
    """``(time.monotonic(), count)`` each time the stream xruns rose: when the worker's
    check (every ``worker.STATS_EVERY_S``) found them, the newest ``XRUN_TIMES_KEPT``."""


class Session:
    """The audio path from ``config``, running ``runner`` (or none), at ``rate`` (default:
    ``audio.rate``, or a chosen capture source's own 44.1/48 kHz rate; the virtual sink is
    made at ``rate`` too).

    Raises:
        DeviceError: a device or the virtual sink cannot be had (a user error).
        RuntimeError: the streams do not open.
        SoundServerError: the sound server stopped answering.
    """

    def __init__(self, config, runner, parts: SessionParts, rate: int | None = None):
        self.config = config
        self.parts = parts
        a = config.audio
        self.channels = a.channels
        self.sink_module: int | None = None
        self.routing = Routing()
        server = None
        try:
            server = parts.server.server_info()
        except parts.server.SoundServerError as e:
            log.info("no sound server (%s): using PortAudio devices directly", e)
        self.server = server
        if server is not None:
            self.routing.server = f"{server.name} {server.version}"
        try:
            playback = parts.resolve_playback(a.playback, a.virtual_sink, server)
            if a.capture == "auto":
                self.sink_module = parts.sink.ensure(a.virtual_sink, rate or a.base_rate, a.channels)
            capture = parts.resolve_capture(a.capture, a.virtual_sink, server)
        except Exception:
            self.sink_module = None  # the daemon removes the sink when it stops
            raise
        self.capture_ep, self.playback_ep = capture, playback
        if rate is None:
            rate = a.base_rate
            if capture.server_name and a.capture != "auto" and capture.device_rate in (44100, 48000):
                rate = capture.device_rate  # a source at 48 kHz is captured at 48 kHz
        self.rate = rate
        self.routing.capture, self.routing.playback = str(capture), str(playback)
        self.routing.rate, self.routing.out_rate = rate, FACTOR * rate
        lat = config.latency
        self.engine = parts.build_engine(config, runner, rate)
        prefill = int(round(lat.prefill_ms * 1e-3 * FACTOR * rate))
        block = lat.block_size
        self.cap_ring = FrameRing(self.channels, max(16 * block, int(0.5 * rate)))
        self.play_ring = FrameRing(self.channels, 2 * prefill + 16 * FACTOR * block + FACTOR * int(0.25 * rate))
        self.pipeline = Pipeline(self.engine, self.channels, rate, block, self.cap_ring, self.play_ring, prefill,
                                 fade_in_frames=int(lat.crossfade_ms * 1e-3 * FACTOR * rate))
        self.routing.backend = parts.choose_backend(a.backend, capture, playback)
        if warning := prefill_warning(lat.prefill_ms, self.routing.backend):
            log.warning("%s", warning)
        self.streams: Streams = parts.open_streams(
            self.routing.backend, capture, playback, rate, self.channels, self.cap_ring, self.play_ring,
            1e-3 * lat.capture_buffer_ms, 1e-3 * lat.playback_buffer_ms, self._pipewire_native(),
        )
        self.worker = None  # a Worker, from start()
        self.audio_thread_priority: list[str] = []
        self.pending_pipeline: Pipeline | None = None
        self.fading_out = False
        self.failure: str | None = None
        self.state = WorkerState()
        self.started_at = time.monotonic()
        # device latencies, s: the server's figures (averaged) where it has them, else the streams'
        self.dev_latency: dict[str, float] | None = None
        self.sink_ahead = SinkAheadWatch()
        # PipeWire: the gaps the DAC played in our stream that no underflow notice reports
        self.dac_gaps = DacGaps(FACTOR * rate) if self._pipewire_native() else None
        # the backends start their callback threads in open(): those are promoted in start()
        from rtupscale.audio import priority

        self._threads_before = priority.thread_ids()
        try:
            self.streams.open()
        except Exception as e:
            self.close(keep_sink=True)  # a reopen tries again with it; the daemon removes it when it stops
            raise RuntimeError(f"cannot open the audio streams ({capture} -> {playback}): {e}") from e

    def fail(self, why: str) -> None:
        """Mark the session failed (the first reason stands): the daemon recovers."""
        if self.failure is None:
            self.failure = why

    # -- run ---------------------------------------------------------------------------
    def start(self, events) -> None:
        """Start the streams and the worker; the worker appends ``(level, message)`` to
        ``events`` for the main thread to log."""
        from rtupscale.audio import priority
        from rtupscale.live.worker import Worker

        # no worker runs yet: the one collection that may take milliseconds happens now
        if self.server is not None and not self.server.is_pipewire and self.sink_module is not None:
            # the capture of its monitor is connected (open()), and nothing is played yet
            self.parts.sink.start_clock()
        self.parts.before_start()
        self.streams.start()
        # the streams' threads (libpulse's main loop, PortAudio's callback): SCHED_FIFO
        self.audio_thread_priority = priority.promote_new_threads(self._threads_before)
        self.worker = Worker(self, events)
        self.worker.start()

    def close(self, keep_sink: bool = False) -> bool:
        """Stop the worker and the streams; remove the virtual sink unless ``keep_sink`` (a
        reopen: the next session takes it over, with the apps playing to it).

        Returns False when the worker did not end within ``WORKER_JOIN_S``: then the streams
        are left open (the worker may still touch them; freeing their C side under it would
        crash the process) and only stopped from delivering."""
        ended = True
        if self.worker is not None:
            ended = self.worker.stop(WORKER_JOIN_S)
        if ended:
            self.streams.close()
        else:
            log.error("the worker did not end within %g s: its streams are left open", WORKER_JOIN_S)
        if not keep_sink and self.sink_module is not None:
            self.parts.sink.remove()
        self.sink_module = None
        return ended

    # -- reporting ---------------------------------------------------------------------
    def measure_device_latency(self) -> None:
        """Average the server's account of our streams' latencies (main thread, ~1/s): what
        ``pactl`` lists for them, or where it lists nothing (pipewire-pulse) the native
        streams' own timing updates."""
        sample = None
        server = self.parts.server
        if self._pipewire_native():
            sample = self._pipewire_latency()
        elif (self.capture_ep.server_name or self.playback_ep.server_name) and not (self.server is not None and self.server.is_pipewire):
            # (pipewire-pulse lists zeros for these: PortAudio's own figures below serve better)
            try:
                sl = server.stream_latencies()
            except server.SoundServerError:
                return
            if None in (sl.capture_buffer, sl.source, sl.playback_buffer, sl.sink):
                sl = self.streams.server_latencies() or sl
            if None not in (sl.capture_buffer, sl.source, sl.playback_buffer, sl.sink):
                # capture: what the server holds, plus what the ALSA plugin holds until
                # PortAudio takes its next period (half of PortAudio's input buffer, on average)
                pa_in = 0.0
                if self.routing.backend == Backend.PORTAUDIO:
                    try:
                        pa_in = self.streams.device_latency_s[0]
                    except Exception:
                        pass
                sample = {"device_in": sl.capture_buffer + sl.source + pa_in / 2, "device_out": sl.playback_buffer, "sink": sl.sink}
                was_over = self.sink_ahead.over_since is not None
                if why := self.sink_ahead.update(sl.sink, time.monotonic()):
                    self.fail(why)
                elif was_over != (self.sink_ahead.over_since is not None):
                    log.info("the DAC sink runs %.0f ms ahead of real time%s", 1e3 * sl.sink,
                             ": waiting for it to come back" if not was_over else " (back)")
        if sample is None:
            try:
                dev_in, dev_out = self.streams.device_latency_s
            except Exception:
                return
            sample = {"device_in": dev_in, "device_out": dev_out, "sink": 0.0}
        if self.dev_latency is None:
            self.dev_latency = sample
        else:
            for k, v in sample.items():
                self.dev_latency[k] += 0.2 * (v - self.dev_latency[k])

    def check_dac_gaps(self) -> list[str]:
        """PipeWire: count the gaps the DAC played in our stream (main thread, often: it
        reads the C side's last timing update, no call to the server)."""
        if self.dac_gaps is None or self.streams is None:
            return []
        return self.dac_gaps.check(self.streams)

    def _pipewire_native(self) -> bool:
        return bool(self.server is not None and self.server.is_pipewire and self.routing.backend == Backend.PULSE)

    def _pipewire_latency(self) -> dict[str, float]:
        """Our streams' latencies on pipewire-pulse, s. ``pactl`` lists zeros for them there
        (0.3.65), so they come from the streams' own timing updates: our queue in the server
        (write index less read index: all of it ahead of the DAC) and the capture waiting in
        it; before the first update, the queue the server granted (``tlength``, kept full
        less what it is owed). On top, a quantum of each graph: pipewire-pulse hands the DAC
        one quantum per cycle from the front of our queue, and the virtual sink's monitor
        reaches our capture a quantum at a time. The quanta follow from the streams'
        ``node.latency`` (``rates.check_playback_rate`` reads them from pw-dump)."""
        st = self.streams
        sl = st.server_latencies()
        if sl is not None:
            dev_in, dev_out, sink = sl.capture_buffer + sl.source, sl.playback_buffer, sl.sink
        else:
            dev_in, dev_out, sink = 0.0, max(0.0, getattr(st, "queue_s", 0.0) - self.pipeline.owed / self.pipeline.out_rate), 0.0
        return {
            "device_in": dev_in + self.routing.quantum_in_s,
            "device_out": dev_out + self.routing.quantum_out_s,
            "sink": sink,
        }

    def latency_report(self) -> dict:
        """Where a sample's time goes, ms. The two rings (Little's law on their time-averaged
        levels) include the block; the device figures are the sound server's own (PortAudio's
        without a server). ``sink_ms`` is the DAC sink's latency: a monitor of that sink hears
        the audio this much before the DAC does."""
        p = self.pipeline
        dl = self.dev_latency
        if dl is None:
            try:
                dev_in, dev_out = self.streams.device_latency_s
            except Exception:
                dev_in = dev_out = math.nan
            dl = {"device_in": dev_in, "device_out": dev_out, "sink": 0.0}
        buffered = p.buffered_latency_s()
        return {
            "total_ms": 1e3 * (buffered + dl["device_in"] + dl["device_out"] + dl["sink"]),
            "block_ms": 1e3 * p.block_size / self.rate,
            "engine_ms": 1e3 * p.engine.latency / self.rate,
            "capture_ring_ms": 1e3 * p.cap_level_avg / self.rate,
            "playback_ring_ms": 1e3 * p.play_level_avg / p.out_rate,
            "prefill_target_ms": 1e3 * p.prefill_frames / p.out_rate,
            "device_in_ms": 1e3 * dl["device_in"],
            "device_out_ms": 1e3 * dl["device_out"],
            "sink_ms": 1e3 * dl["sink"],
        }
