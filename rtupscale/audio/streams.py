"""The two PortAudio streams, through rtmixer: its callback is C, runs without the GIL, and
only copies between the device and our rings.

rtmixer's ring-buffer actions end themselves: the playback action when its ring cannot fill
a whole callback (an underflow of our ring), the record action when its ring is full. The
worker checks them between blocks (:meth:`LiveStreams.poll`) and re-arms. PortAudio's own
xrun flags are counted by the callback and fetched with ``fetch_and_reset_stats``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import rtmixer

from rtupscale import FACTOR
from rtupscale.audio.devices import Endpoint
from rtupscale.audio.rings import FrameRing

if TYPE_CHECKING:
    from rtupscale.audio.pulse import StreamLatency

log = logging.getLogger("rtupscale.audio")

CLIENT_PROPS = "application.name=rtupscale media.role=music application.icon_name=audio-card"

PORTAUDIO_MIN_PREFILL_MS = 10.0
"""Below this pre-fill the PortAudio path is warned about (see :func:`prefill_warning`)."""


def prefill_warning(prefill_ms: float, backend: str = "portaudio") -> str | None:
    """A warning line when ``latency.prefill_ms`` is too small for the ``backend``'s streams,
    else None.

    - ``portaudio``: the pre-fill is the only cushion against the device's periods (a
      callback takes a whole period at once). Measured through ALSA's pulse plugin: pre-fill
      30 ms with a 20 ms device buffer ran clean.
    - ``pulse`` (native streams): none. The server's queue (``latency.playback_buffer_ms``)
      is the cushion and the pre-fill only the hand-off. The drift control counts what the
      server is owed against the ring's level (:meth:`Pipeline.sample_levels`), so a small
      pre-fill does not let the queue drain (figures: docs/measurements/)."""
    if backend != "portaudio" or prefill_ms >= PORTAUDIO_MIN_PREFILL_MS:
        return None
    return (f"latency.prefill_ms {prefill_ms:g} is small for PortAudio streams (a raw ALSA device, or "
            f"audio.backend: portaudio): there the pre-fill is the only cushion against the device's periods; "
            f"use {PORTAUDIO_MIN_PREFILL_MS:g} ms or more (30 ms ran clean through ALSA's pulse plugin)")


@dataclass
class XrunCounters:
    """Counted from PortAudio's callback flags and from our rings' ends."""

    input_overflows: int = 0  # PortAudio: capture data lost before our callback
    output_underflows: int = 0  # PortAudio: the device played a gap
    capture_ring_full: int = 0  # our capture ring overflowed (the worker stalled)
    playback_ring_empty: int = 0  # our playback ring ran dry (late worker, or drift)
    callbacks_in: int = 0
    callbacks_out: int = 0
    ring_short: int = 0
    """Native PulseAudio streams: times a server request found the playback ring empty. Not
    an xrun: the server still plays its own queue (``latency.playback_buffer_ms``) and the
    request is topped up a millisecond later. With a pre-fill smaller than a block of output
    (the default) it is routine."""
    underflow_causes: dict[str, int] = field(default_factory=dict)
    """Native PulseAudio streams: output underflows by cause
    (:func:`rtupscale.audio.pulse_streams.underflow_cause`)."""
    last_underflow: str = ""
    """Native PulseAudio streams: what led to the last output underflow, and what to change."""



class Streams(Protocol):
    """What the live daemon needs of a stream backend: a capture stream into ``cap_ring``
    and a playback stream (4x the rate) out of ``play_ring``, whose callbacks only copy.

    Implemented by :class:`LiveStreams` (PortAudio through rtmixer) and
    :class:`rtupscale.audio.pulse_streams.PulseStreams` (native libpulse). ``open``,
    ``start``, ``close`` and the latency figures run on the main thread; ``wait``, ``poll``,
    ``collect_stats``, ``arm_playback`` and ``owed_average`` on the worker.
    """

    xruns: XrunCounters
    playing: bool
    """Playback armed, and no gap seen by :meth:`poll` since."""
    wakes_worker: bool
    """True: :meth:`wait` returns when capture arrives; False: it sleeps (the worker polls)."""

    @property
    def arm_frames(self) -> int:
        """Frames the device side takes from the playback ring at once when armed."""

    def open(self) -> None: ...

    def start(self) -> None:
        """Start both streams and the capture; playback waits for :meth:`arm_playback`."""

    def arm_playback(self) -> None: ...

    def close(self) -> None: ...

    def wait(self, timeout_s: float) -> None: ...

    def poll(self) -> tuple[bool, bool]:
        """(capture ended, playback ended) since the last call; re-arms the capture."""

    def collect_stats(self) -> int:
        """Fetch the xrun counts since the last call into :attr:`xruns`; returns new xruns."""

    def owed_average(self) -> float:
        """Frames the device side asked for and did not get yet, averaged since the last call."""

    def server_latencies(self) -> "StreamLatency | None":
        """The sound server's own latency figures for the two streams, where it has them."""

    @property
    def device_latency_s(self) -> tuple[float, float]:
        """Input and output latency of the open streams, s."""


class LiveStreams:
    """A capture stream into ``capture`` and a playback stream (4x the rate) from ``playback``.

    Args:
        capture, playback: where the streams go (see :mod:`rtupscale.audio.devices`).
        rate: capture rate, Hz.
        channels: channels of both streams.
        latency_in_s, latency_out_s: PortAudio's suggested device latencies.
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
    ):
        self.capture, self.playback = capture, playback
        self.rate, self.channels = rate, channels
        self.cap_ring, self.play_ring = cap_ring, play_ring
        self.latency_in_s, self.latency_out_s = latency_in_s, latency_out_s
        self.recorder: rtmixer.Recorder | None = None
        self.mixer: rtmixer.Mixer | None = None
        self._rec_action = None
        self._play_action = None
        self._stats_rec = None
        self._stats_play = None
        self.xruns = XrunCounters()
        self.playing = False

    wakes_worker = False

    # -- open / close (main thread) -----------------------------------------------------
    def open(self) -> None:
        os.environ["PULSE_PROP"] = CLIENT_PROPS
        if self.capture.server_name:
            os.environ["PULSE_SOURCE"] = self.capture.server_name
        self.recorder = rtmixer.Recorder(
            device=self.capture.portaudio_device,
            channels=self.channels,
            samplerate=self.rate,
            latency=self.latency_in_s,
        )
        if self.playback.server_name:
            os.environ["PULSE_SINK"] = self.playback.server_name
        self.mixer = rtmixer.Mixer(
            device=self.playback.portaudio_device,
            channels=self.channels,
            samplerate=FACTOR * self.rate,
            latency=self.latency_out_s,
        )

    def start(self) -> None:
        """Start both streams and the capture; playback is armed by :meth:`arm_playback`."""
        assert self.recorder is not None and self.mixer is not None
        self.mixer.start()
        self.recorder.start()
        self._rec_action = self.recorder.record_ringbuffer(self.cap_ring.ring)

    arm_frames = 0
    """Frames the device side takes from the ring at once when armed (PortAudio: one
    callback at a time, so none beyond the pre-fill)."""

    def arm_playback(self) -> None:
        assert self.mixer is not None
        self._play_action = self.mixer.play_ringbuffer(self.play_ring.ring)
        self.playing = True

    def close(self) -> None:
        for s in (self.recorder, self.mixer):
            if s is None:
                continue
            try:
                s.abort()
                s.close()
            except Exception as e:  # the server went away; the stream is gone either way
                log.debug("closing stream: %s", e)
        self.recorder = self.mixer = None
        self.playing = False

    # -- between blocks (worker thread) ---------------------------------------------------
    def wait(self, timeout_s: float) -> None:
        """Sleep until the next look at the rings. rtmixer's callbacks cannot signal, so
        this is a plain sleep: the worker polls."""
        time.sleep(timeout_s)

    def poll(self) -> tuple[bool, bool]:
        """(capture ended, playback ended): a ring action that ended itself; re-arms it."""
        cap_ended = play_ended = False
        if self._rec_action is not None and self._rec_action not in self.recorder.actions:
            cap_ended = True
            self.xruns.capture_ring_full += 1
            self._rec_action = self.recorder.record_ringbuffer(self.cap_ring.ring)
        if self.playing and self._play_action not in self.mixer.actions:
            play_ended = True
            self.xruns.playback_ring_empty += 1
            self.playing = False  # the worker re-fills and calls arm_playback()
        return cap_ended, play_ended

    def collect_stats(self) -> int:
        """Fetch PortAudio's xrun flags counted since the last call; returns new xruns."""
        new = 0
        if self._stats_rec is None:
            self._stats_rec = self.recorder.fetch_and_reset_stats()
        elif self._stats_rec not in self.recorder.actions:
            st = self._stats_rec.stats
            self.xruns.input_overflows += st.input_overflows
            self.xruns.callbacks_in += st.blocks
            new += st.input_overflows
            self._stats_rec = None
        if self._stats_play is None:
            self._stats_play = self.mixer.fetch_and_reset_stats()
        elif self._stats_play not in self.mixer.actions:
            st = self._stats_play.stats
            self.xruns.output_underflows += st.output_underflows
            self.xruns.callbacks_out += st.blocks
            new += st.output_underflows
            self._stats_play = None
        return new

    def owed_average(self) -> float:
        """What the device was owed on average since the previous call (see
        :meth:`PulseStreams.owed_average`): none here. PortAudio's callback takes what the
        ring holds and plays silence for the rest (an underflow); it does not wait for more."""
        return 0.0

    def server_latencies(self) -> None:
        """None: PortAudio's figures are :attr:`device_latency_s`."""
        return None

    @property
    def device_latency_s(self) -> tuple[float, float]:
        """PortAudio's input and output latency of the open streams, s."""
        return float(self.recorder.latency), float(self.mixer.latency)
