"""The two streams as native PulseAudio streams (libpulse, through pipewire-pulse as well).

The C side (``native/pulse_stream.c``, built by cffi at install) runs libpulse's threaded
main loop; its read and write callbacks only copy between the server and our two rings
(rtmixer's PortAudio ring buffers, whose functions it is given as pointers). Compared with
PortAudio through ALSA's ``pulse`` plugin it saves the plugin's own period buffering and
lets us set the server's buffers directly:

- capture (``PA_STREAM_ADJUST_LATENCY``): ``fragsize`` = ``latency.capture_buffer_ms``;
- playback (``PA_STREAM_EARLY_REQUESTS``): ``tlength`` = ``latency.playback_buffer_ms``,
  ``minreq`` :data:`REQUEST_S` (which is also the sink's own latency), ``prebuf`` one
  request. The server's queue carries the cushion: it covers a late request (a stall of
  the server, the machine or our stream thread) and a late block of the worker alike,
  which is what runs out on a loaded machine. Our playback ring is only the hand-off
  between the worker's blocks and the server's small requests; a request it cannot meet
  in full is topped up from it every millisecond while the server's queue plays on.

After each delivery the capture callback also writes an eventfd that the worker waits on
(:meth:`PulseStreams.wait`), so a block is taken when it is there, not at the worker's
next poll.

Same interface as :class:`rtupscale.audio.streams.LiveStreams`, which stays the path for
devices that are not on a sound server (raw ALSA devices through PortAudio).
"""

from __future__ import annotations

import logging
import math
import os
import select

from rtupscale import FACTOR
from rtupscale.audio import pulse
from rtupscale.audio.devices import DeviceError, Endpoint
from rtupscale.audio.rings import FrameRing
from rtupscale.audio.streams import XrunCounters

log = logging.getLogger("rtupscale.audio")

try:
    from rtupscale.audio import _pulse_native as _native
except ImportError as e:  # not built (no compiler or libpulse headers at install)
    _native = None
    _IMPORT_ERROR = str(e)
else:
    _IMPORT_ERROR = ""

OPEN_TIMEOUT_MS = 5000

REQUEST_S = 0.002
"""The playback stream's request size (``minreq``, at most a quarter of ``tlength``), s.

The stream uses ``PA_STREAM_EARLY_REQUESTS``: the sink's own latency is set to one request
and all of ``tlength`` T is our queue ahead of it, which the server asks to keep full a
request m at a time. A request or a block that comes late is covered until the queue is
down to what the sink takes at once: about T - 2m. (``PA_STREAM_ADJUST_LATENCY`` would
split T into a sink latency and a queue of which only one request covers a late one; the
comparison is in docs/measurements/2026-12-05-live-daemon.md.) Smaller requests double the
server's wake-ups for the same cover."""

PIPEWIRE_REQUEST_FRAMES = 1024
"""The playback stream's request size on pipewire-pulse, in frames at the output rate.

There the request also sets the DAC graph's quantum: with early requests pipewire-pulse
makes ``minreq`` the stream's ``node.latency``, raises it to ``pulse.min.req`` (256/48000,
5.3 ms) first, and the graph runs the largest power of two under it. At 176.4 kHz that is
512 frames (2.9 ms): each of pipewire-pulse's graph cycles must then be done within 2.9 ms,
and a stall of its data thread longer than that reaches the DAC as a gap of a quantum,
however much of our audio the server holds. 1024 frames is 5.8 ms at 176.4 kHz and 5.3 ms
at 192 kHz: twice the cover at 176.4 kHz for at most 2.9 ms more latency, and what 192 kHz
had already. (Measured in docs/measurements/2026-12-06-sink-ahead.md.)"""


def request_s(out_rate: int, pipewire: bool) -> float:
    """The playback request size (s) to ask for at ``out_rate`` on this server."""
    return PIPEWIRE_REQUEST_FRAMES / out_rate if pipewire else REQUEST_S


def underflow_cause(request_gap_s: float, ring_empty_s: float, request_s: float, owed_s: float = 0.0,
                    backlog_s: float = 0.0, capture_gap_s: float = 0.0) -> tuple[str, str]:
    """Why the server ran out of our queue, from what led to it (see ``underflow_cb``), and
    what to change: ``(cause, one line)``. A stall is a wait longer than 1.5 request periods
    ``request_s`` + 3 ms; a shortfall is owing the server that much audio.

    - ``server_late``: no request of the server reached us for ``request_gap_s`` while its
      queue drained: a stall of the server, of the machine or of our stream thread (the two
      ends look the same from here). Our ring may have run empty as well: capture comes
      through the same server, and stalls with it;
    - ``capture_late``: the server kept asking, and no capture reached us for
      ``capture_gap_s``: the worker had nothing to process (a new stream on a sink that
      had been idle may get nothing for up to about 2 s: trap 1 of ../shared/audio);
    - ``ring_short``: the server kept asking at its pace, and our playback ring stayed empty
      for ``ring_empty_s``, or after a request we still owed the server ``owed_s`` of audio:
      the worker's output came late (a slow block, or capture late);
    - ``queue_short``: neither: every request came in time and was met, and the sink still
      ran out (why is not seen from here). ``backlog_s`` (capture the worker had not yet
      taken) says whether the worker was behind.

    A stall of the server's requests can leave our ring empty for about as long again
    (capture stalls with it, and the worker catches up); a ring empty for more than twice
    the longest wait between requests is the ring's own. What we owed is not weighed so:
    after a stall the server asks for everything it played meanwhile. A capture gap
    explains at most twice itself, of an empty ring or of what we owed.

    The server's queue covers them all, so the setting to raise is the same.
    """
    gap_ms, period_ms, empty_ms = 1e3 * request_gap_s, 1e3 * request_s, 1e3 * ring_empty_s
    stall = 1.5 * request_s + 0.003
    if request_gap_s > stall and not ring_empty_s > 2 * request_gap_s:
        return "server_late", (
            f"no request from the sound server reached us for {gap_ms:.1f} ms (it asks every {period_ms:.1f} ms): "
            "the server, the machine or our stream thread stalled; raise latency.playback_buffer_ms "
            "(or, on a virtual machine, whose idle CPUs wake late, set latency.keep_cpus_awake)"
        )
    if capture_gap_s > stall and stall < max(ring_empty_s, owed_s) <= 2 * capture_gap_s:
        return "capture_late", (
            f"no audio reached us from the capture source for {1e3 * capture_gap_s:.1f} ms, so the worker had "
            "nothing to send (the source or the server's side of it stalled); "
            "raise latency.playback_buffer_ms to cover such a stall"
        )
    if ring_empty_s > stall:
        return "ring_short", (
            f"our playback ring stayed empty for {empty_ms:.1f} ms while the sound server asked: "
            "the worker's output came late (see the time per block); raise latency.playback_buffer_ms"
        )
    if owed_s > stall:
        return "ring_short", (
            f"our playback ring could not meet the sound server's requests (we owed it {1e3 * owed_s:.1f} ms): "
            "the worker's output came late (see the time per block); raise latency.playback_buffer_ms"
        )
    return "queue_short", (
        f"the server's queue ran out although its requests came at most {gap_ms:.1f} ms apart and were met "
        f"(owed at most {1e3 * owed_s:.1f} ms, worker backlog {1e3 * backlog_s:.1f} ms): "
        "raise latency.playback_buffer_ms"
    )


def available() -> str | None:
    """None if the native streams can be used, else why not (one line)."""
    if _native is None:
        return f"rtupscale's native PulseAudio streams are not built ({_IMPORT_ERROR}); reinstall with gcc and libpulse-dev"
    return None


def choose_backend(setting: str, capture: Endpoint, playback: Endpoint) -> str:
    """``pulse`` or ``portaudio`` for ``audio.backend`` = ``setting`` and these devices.

    Raises:
        DeviceError: ``pulse`` asked for where it cannot be used (one line: why).
    """
    on_server = bool(capture.server_name and playback.server_name)
    if setting == "portaudio":
        return "portaudio"
    why = available()
    if setting == "pulse":
        if not on_server:
            raise DeviceError("audio.backend: pulse needs both devices on a sound server; use auto or portaudio")
        if why:
            raise DeviceError(f"audio.backend: pulse: {why}")
        return "pulse"
    if on_server and why:
        log.warning("%s: using PortAudio", why)
    return "pulse" if on_server and not why else "portaudio"


def _ring_ops():
    """The C function pointers of rtmixer's ring buffer, as ``rtu_ring_ops``."""
    import _rtmixer  # rtmixer's compiled module: PortAudio's pa_ringbuffer.c

    ffi = _native.ffi
    src_ffi, src = _rtmixer.ffi, _rtmixer.lib
    ops = ffi.new("rtu_ring_ops *")
    for field, name in (
        ("read_available", "PaUtil_GetRingBufferReadAvailable"),
        ("write", "PaUtil_WriteRingBuffer"),
        ("read", "PaUtil_ReadRingBuffer"),
    ):
        addr = int(src_ffi.cast("uintptr_t", src_ffi.addressof(src, name)))
        setattr(ops, field, ffi.cast(ffi.typeof(getattr(ops, field)), addr))
    return ops  # rtu_open copies it


def _ring_ptr(ring: FrameRing):
    import _rtmixer

    return _native.ffi.cast("void *", int(_rtmixer.ffi.cast("uintptr_t", ring._ptr)))


class PulseStreams:
    """A capture stream into ``cap_ring`` and a playback stream (4x the rate) from
    ``play_ring``, both on the sound server: implements
    :class:`~rtupscale.audio.streams.Streams`.

    Args:
        capture, playback: server endpoints (``server_name`` set).
        rate: capture rate, Hz.
        latency_in_s: the capture fragment (server-side), s.
        latency_out_s: the playback buffer (server-side ``tlength``), s.
        request_s: the playback request size to ask for (``minreq``, at most a quarter of
            ``tlength``), s: :func:`request_s`.
    """

    def __init__(
        self,
        capture: Endpoint,
        playback: Endpoint,
        rate: int,
        channels: int,
        cap_ring: FrameRing,
        play_ring: FrameRing,
        latency_in_s: float,
        latency_out_s: float,
        request_s: float = REQUEST_S,
    ):
        why = available()
        if why:
            raise RuntimeError(why)
        if not (capture.server_name and playback.server_name):
            raise ValueError("native PulseAudio streams need server devices for both capture and playback")
        self.capture, self.playback = capture, playback
        self.rate, self.channels = rate, channels
        self.cap_ring, self.play_ring = cap_ring, play_ring
        self.latency_in_s, self.latency_out_s = latency_in_s, latency_out_s
        self.request_asked_s = request_s
        self.xruns = XrunCounters()
        self._p = None
        self._wake_fd: int | None = None
        self._poller = None
        self._stats = _native.ffi.new("rtu_stats *")
        self._lat_stats = _native.ffi.new("rtu_stats *")
        self._owed_t = _native.ffi.new("uint64_t *")
        self._owed_prev: tuple[int, int] | None = None
        self._seen_capture_full = 0
        self._seen_holes = 0
        self.playing = False  # armed, and no gap seen by poll() since
        self._tlength_frames = 0
        self.request_s = 0.0
        """The request size the server granted (``minreq``), s; set by :meth:`open`."""
        self.fragment_s = 0.0
        """The capture fragment the server granted (``fragsize``), s; set by :meth:`open`."""
        self.queue_s = 0.0
        """The playback queue the server granted (``tlength``), s; set by :meth:`open`."""

    wakes_worker = True

    # -- open / close (main thread) -----------------------------------------------------
    def open(self) -> None:
        ffi, lib = _native.ffi, _native.lib
        ops = _ring_ops()
        prm = ffi.new("rtu_params *")
        prm.rate, prm.out_rate, prm.channels = self.rate, FACTOR * self.rate, self.channels
        prm.fragsize_us = max(500, int(1e6 * self.latency_in_s))
        prm.tlength_us = max(1000, int(1e6 * self.latency_out_s))
        prm.minreq_us = max(250, min(math.ceil(1e6 * self.request_asked_s), prm.tlength_us // 4))  # whole frames
        prm.timeout_ms = OPEN_TIMEOUT_MS
        err = ffi.new("char[]", 512)
        p = lib.rtu_open(
            b"rtupscale", self.capture.server_name.encode(), self.playback.server_name.encode(), prm,
            _ring_ptr(self.cap_ring), _ring_ptr(self.play_ring), ops, err, 512,
        )
        if p == ffi.NULL:
            raise RuntimeError(ffi.string(err).decode(errors="replace"))
        self._p = p
        self._owed_prev = None
        # the capture callback writes this eventfd after each delivery: the worker wakes
        # when a block may be there, not on a timer (see wait)
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poller = select.poll()
        self._poller.register(self._wake_fd, select.POLLIN)
        lib.rtu_set_wake(p, self._wake_fd)
        g = ffi.new("uint32_t[4]")
        lib.rtu_granted(p, g + 0, g + 1, g + 2, g + 3)
        fb = 4 * self.channels
        self._tlength_frames = int(g[1]) // fb
        self.request_s = int(g[2]) / fb / (FACTOR * self.rate)
        self.fragment_s = int(g[0]) / fb / self.rate
        self.queue_s = int(g[1]) / fb / (FACTOR * self.rate)
        log.info(
            "native PulseAudio streams: capture fragment %.1f ms, playback buffer %.1f ms (request %.1f ms, start at %.2f ms)",
            1e3 * g[0] / fb / self.rate, 1e3 * g[1] / fb / (FACTOR * self.rate),
            1e3 * g[2] / fb / (FACTOR * self.rate), 1e3 * g[3] / fb / (FACTOR * self.rate),
        )

    @property
    def arm_frames(self) -> int:
        """Frames the server takes at once when armed: its whole buffer (``tlength``)."""
        return self._tlength_frames

    def start(self) -> None:
        """Both streams run from :meth:`open`; playback writes once :meth:`arm_playback`."""

    def arm_playback(self) -> None:
        _native.lib.rtu_arm(self._p)
        self.playing = True

    def close(self) -> None:
        if self._p is not None:
            _native.lib.rtu_close(self._p)  # its main loop stops: nothing writes the eventfd now
            self._p = None
        if self._wake_fd is not None:
            self._poller.unregister(self._wake_fd)
            os.close(self._wake_fd)
            self._wake_fd = None
        self.playing = False

    # -- between blocks (worker thread) ---------------------------------------------------
    def wait(self, timeout_s: float) -> None:
        """Sleep until the capture callback has delivered audio, or ``timeout_s`` at most
        (the GIL is released while it waits). A worker that polled on a timer took a block
        up to a period after it was there, on average half a period of latency."""
        if self._poller.poll(1e3 * timeout_s):
            try:
                os.eventfd_read(self._wake_fd)
            except BlockingIOError:  # read by an earlier call already
                pass

    def _refresh(self):
        _native.lib.rtu_get_stats(self._p, self._stats)
        return self._stats

    def poll(self) -> tuple[bool, bool]:
        """(capture overflowed, playback ran dry) since the last call. The capture stream
        never stops; after a gap the playback writes nothing until :meth:`arm_playback`."""
        st = self._refresh()
        cap_ended = st.capture_full != self._seen_capture_full
        if cap_ended:
            self.xruns.capture_ring_full += st.capture_full - self._seen_capture_full
            self._seen_capture_full = st.capture_full
        play_ended = self.playing and not st.playing
        if play_ended:  # the ring stayed empty (no audio, or a stalled worker): refill, re-arm
            self.playing = False
            self.xruns.playback_ring_empty = int(st.starved)
        if st.failed:
            raise RuntimeError("the sound server closed our streams (server or device gone)")
        return cap_ended, play_ended

    def collect_stats(self) -> int:
        """New xruns since the last call: capture the server lost (holes, as input
        overflows) and times the server ran out of our queue (output underflows)."""
        st = self._refresh()
        holes = int(st.holes != self._seen_holes)
        self._seen_holes = st.holes
        self.xruns.input_overflows += holes
        under = int(st.underflows) - self.xruns.output_underflows
        self.xruns.output_underflows = int(st.underflows)
        if under:
            # the report of the newest one (those between two calls share it)
            cause, line = underflow_cause(1e-6 * st.uf_request_gap_us, 1e-6 * st.uf_ring_empty_us, self.request_s,
                                          st.uf_owed_frames / (FACTOR * self.rate), st.uf_capture_frames / self.rate,
                                          1e-6 * st.uf_capture_gap_us)
            self.xruns.underflow_causes[cause] = self.xruns.underflow_causes.get(cause, 0) + under
            self.xruns.last_underflow = line
        self.xruns.ring_short = int(st.ring_empty)
        new = holes + under
        self.xruns.callbacks_in = int(st.callbacks_in)
        self.xruns.callbacks_out = int(st.callbacks_out)
        return new

    def owed_frames(self) -> int:
        """Frames the server asked for that we have not written yet (as of the last fill):
        its queue is short by that much."""
        return int(self._refresh().owed_frames) if self._p is not None else 0

    def owed_average(self) -> float:
        """What the server was owed on average (frames) since the previous call (the first
        call: :meth:`owed_frames`). The drift control counts it against our ring's level,
        which cannot go below empty (see :meth:`Pipeline.sample_levels`). An average, not
        the debt at the moment of the call: the worker looks right after capture
        deliveries, which come from the same server as its requests, so a look at the
        moment sees the debt at much the same point of the request cycle each time."""
        if self._p is None:
            return 0.0
        area = int(_native.lib.rtu_owed_area(self._p, self._owed_t))
        t = int(self._owed_t[0])
        prev, self._owed_prev = self._owed_prev, (area, t)
        if prev is None or t <= prev[1]:
            return float(self.owed_frames())
        return (area - prev[0]) / (t - prev[1])

    def frames_captured(self) -> int:
        return int(self._refresh().frames_in) if self._p is not None else 0

    def server_latencies(self) -> "pulse.StreamLatency | None":
        """The server's latencies of our two streams, as the C side last sampled them (every
        250 ms, on libpulse's thread; read here without a lock); None before the first."""
        st = self._lat_stats  # not the worker's buffer: this runs on the main and control threads
        _native.lib.rtu_get_stats(self._p, st)
        if st.lat_samples == 0:
            return None
        return pulse.StreamLatency(
            capture_buffer=1e-6 * st.lat_capture_buffer_us,
            source=1e-6 * st.lat_source_us,
            playback_buffer=1e-6 * st.lat_playback_buffer_us,
            sink=1e-6 * st.lat_sink_us,
        )

    def playback_indexes(self) -> tuple[int, int, float, int] | None:
        """The server's read and write index of our playback (frames), when they were
        current (s, the server's clock) and the update's sequence number, as of the last
        timing update (every 250 ms); None before the first. Main thread."""
        if self._p is None:
            return None
        st = self._lat_stats
        _native.lib.rtu_get_stats(self._p, st)
        if st.lat_play_seq == 0:
            return None
        fb = 4 * self.channels
        return int(st.lat_play_read_index) // fb, int(st.lat_play_write_index) // fb, 1e-6 * st.lat_play_at_us, int(st.lat_play_seq)

    @property
    def device_latency_s(self) -> tuple[float, float]:
        """The server's latency of our capture and playback streams (the playback's with
        the sink's), s; 0 before the first sample."""
        sl = self.server_latencies()
        if sl is None:
            return 0.0, 0.0
        return sl.capture_buffer + sl.source, sl.playback_buffer + sl.sink
