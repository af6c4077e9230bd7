"""The worker's one step: capture ring -> engine -> drift rate adjust -> playback ring.

Everything here runs in the one worker thread; every buffer is allocated in ``__init__``.
The same class is driven by the live daemon (rings filled and drained by rtmixer's C
callbacks) and by the drift simulation test (rings driven by a simulated clock).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from rtupscale import FACTOR
from rtupscale.audio.drift import DriftController, RateAdjuster
from rtupscale.audio.rings import FrameRing, cbuffer

TIMING_WINDOW = 8192
"""Processing times of the last this many blocks feed the median / p99 in ``status``."""


@dataclass
class PipelineCounters:
    blocks: int = 0
    late_skips: int = 0  # capture backlog beyond the limit: frames dropped to bound latency
    skipped_frames: int = 0
    playback_full: int = 0  # output frames that did not fit the playback ring
    max_process_s: float = 0.0


class Pipeline:
    """One block from the capture ring through the engine into the playback ring.

    Args:
        engine: anything with ``process([channels, block] float32) -> [channels, 4*block]``,
            ``request_reset()`` and ``latency`` (input frames).
        rate: capture rate, Hz (playback runs at ``4 * rate``).
        capture: ring of input frames (written by the capture callback).
        playback: ring of output frames (read by the playback callback).
        prefill_frames: the playback ring level to hold, output frames.
        max_backlog_s: capture older than this is dropped (a stalled worker must not turn
            into permanent latency); the engine state is reset under its crossfade.
    """

    def __init__(
        self,
        engine,
        channels: int,
        rate: int,
        block_size: int,
        capture: FrameRing,
        playback: FrameRing,
        prefill_frames: int,
        max_backlog_s: float = 0.15,
    ):
        self.engine = engine
        self.channels = channels
        self.rate = rate
        self.out_rate = FACTOR * rate
        self.block_size = block_size
        self.capture = capture
        self.playback = playback
        self.prefill_frames = int(prefill_frames)
        self.max_backlog = max(2 * block_size, int(max_backlog_s * rate))
        self.drift = DriftController(self.out_rate, self.prefill_frames)
        self.adjuster = RateAdjuster(channels, FACTOR * block_size, max_deviation=0.01)
        self._in_inter = np.zeros((block_size, channels), np.float32)
        self._in_c = cbuffer(self._in_inter)
        self._in_planar = np.zeros((channels, block_size), np.float32)
        self._out_c = cbuffer(self.adjuster.out_buffer)
        self._zeros = np.zeros((max(self.prefill_frames, 1), channels), np.float32)
        self._zeros_c = cbuffer(self._zeros)
        self._times = np.zeros(TIMING_WINDOW, np.float64)
        self.counters = PipelineCounters()
        self.step_ratio = 1.0
        # time-averaged ring levels (Little's law turns them into waiting times)
        self._last_sample_t: float | None = None
        self.cap_level_avg = 0.0
        self.play_level_avg = float(self.prefill_frames)
        self._avg_tau_s = 2.0

    # -- levels -------------------------------------------------------------------
    def sample_levels(self, now: float) -> None:
        """Sample both ring levels (call at the worker's wake-ups, which are not tied to the
        callbacks); feeds the drift controller with the time-weighted playback level."""
        if self._last_sample_t is None:
            self._last_sample_t = now
            return
        dt = now - self._last_sample_t
        if dt <= 0:
            return
        self._last_sample_t = now
        play = self.playback.fill
        cap = self.capture.fill
        a = min(1.0, dt / self._avg_tau_s)
        self.cap_level_avg += a * (cap - self.cap_level_avg)
        self.play_level_avg += a * (play - self.play_level_avg)
        self.step_ratio = self.drift.update(play, dt)

    def prefill(self) -> None:
        """Top the playback ring up to its target with silence (start, or after an underflow)."""
        missing = self.prefill_frames - self.playback.fill
        if missing > 0:
            self.playback.write(self._zeros_c, min(missing, self.playback.space))

    # -- the step -----------------------------------------------------------------
    def step(self) -> bool:
        """Process one block if one is waiting. Returns True if it did."""
        cap = self.capture
        avail = cap.fill
        if avail < self.block_size:
            return False
        if avail > self.max_backlog:
            drop = avail - self.block_size
            cap.skip(drop)
            self.counters.late_skips += 1
            self.counters.skipped_frames += drop
            self.engine.request_reset()
        t0 = time.perf_counter()
        cap.read(self._in_c, self.block_size)
        np.copyto(self._in_planar, self._in_inter.T)
        y = self.engine.process(self._in_planar)
        out = self.adjuster.process(y, self.step_ratio)
        n = out.shape[0]
        written = self.playback.write(self._out_c, n)  # out is a prefix of out_buffer
        if written < n:
            self.counters.playback_full += n - written
        dt = time.perf_counter() - t0
        c = self.counters
        self._times[c.blocks % TIMING_WINDOW] = dt
        c.blocks += 1
        if dt > c.max_process_s:
            c.max_process_s = dt
        return True

    # -- reporting ----------------------------------------------------------------
    def timing(self) -> dict[str, float]:
        """Processing time per block, ms: median, p99 (last blocks) and max (all)."""
        n = min(self.counters.blocks, TIMING_WINDOW)
        if n == 0:
            return {"median_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "budget_ms": 1e3 * self.block_size / self.rate}
        t = self._times[:n]
        return {
            "median_ms": 1e3 * float(np.median(t)),
            "p99_ms": 1e3 * float(np.percentile(t, 99)),
            "max_ms": 1e3 * self.counters.max_process_s,
            "budget_ms": 1e3 * self.block_size / self.rate,
        }

    def buffered_latency_s(self) -> float:
        """Mean time a sample spends in this pipeline, s (Little's law on the ring levels,
        plus the engine's algorithmic latency and the rate adjuster's 2 output samples)."""
        return (
            self.cap_level_avg / self.rate
            + self.engine.latency / self.rate
            + self.play_level_avg / self.out_rate
            + RateAdjuster.HISTORY_DELAY / self.out_rate
        )
