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
from rtupscale.dsp.crossfade import crossfade

HISTORY_FRAMES = 4096
"""Input frames kept for priming a replacement engine (a reload with a new block size)."""
CATCHUP_BAND_S = 0.003
"""A playback level further than this from its target is a jump (not drift) that the drift
control removes quickly (the smoothed level's own ripple is far smaller, whatever the block)."""
TIMING_WINDOW = 8192
"""Processing times of the last this many blocks feed the median / p99 in ``status``."""


START_SETTLE_S = 3.0
"""A session's first sound is faded in if it comes within this much silent input of the start.
It covers PulseAudio's wait before a new null sink's first render (up to about 2.2 s): apps
moved onto a virtual sink made again for a rate switch resume that late, mid-waveform."""
SOUND_FLOOR = 1e-5
"""Input at or under this peak (-100 dBFS) is silence to the start fade."""


@dataclass
class PipelineCounters:
    blocks: int = 0
    late_skips: int = 0  # capture backlog beyond the limit: frames dropped to bound latency
    skipped_frames: int = 0
    playback_full: int = 0  # output frames that did not fit the playback ring
    drops: int = 0  # times the playback ring was far over target and output was dropped
    dropped_blocks: int = 0
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
        fade_in_frames: int = 0,
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
        # The drift control moves the level by ppm; a jump (a server that rendered ahead in
        # silence, a burst of capture) is cut instead: fade out, drop blocks, fade in.
        self.drop_above = self.prefill_frames + max(int(0.06 * self.out_rate), 4 * FACTOR * block_size)
        self._dropping = False
        self.drift = DriftController(self.out_rate, self.prefill_frames, catchup_band_frames=CATCHUP_BAND_S * self.out_rate)
        self.adjuster = RateAdjuster(channels, FACTOR * block_size, max_deviation=0.01)
        self._in_inter = np.zeros((block_size, channels), np.float32)
        self._in_c = cbuffer(self._in_inter)
        self._in_planar = np.zeros((channels, block_size), np.float32)
        self._out_c = cbuffer(self.adjuster.out_buffer)
        self._zeros = np.zeros((4096, channels), np.float32)
        self._zeros_c = cbuffer(self._zeros)
        # the recent input, for adopt(): a ring of whole blocks, the oldest at _hist_pos
        self._hist = np.zeros((channels, -(-max(HISTORY_FRAMES, block_size) // block_size) * block_size), np.float32)
        self._hist_pos = 0
        self._fade_total = 0
        self._fade_left = 0
        self._fade_rising = False
        # fade_in_frames: a session that starts into sound (apps already playing, or moved
        # to the virtual sink as it opens) fades that first sound in, not a step from silence;
        # once START_SETTLE_S of silence has gone through, sound that begins is the music's own
        self._await_sound = fade_in_frames > 0
        self._fade_in_frames = int(fade_in_frames)
        self._settle_frames = int(START_SETTLE_S * rate)
        # fades to and from silence of the interleaved [frames, channels] output
        self._fade_k = np.arange(self.adjuster.max_out, dtype=np.float32)
        self._fade_g = np.zeros(self.adjuster.max_out, np.float32)
        self._silence = np.zeros((self.adjuster.max_out, channels), np.float32)
        self._fade_scratch = np.zeros((self.adjuster.max_out, channels), np.float32)
        self._times = np.zeros(TIMING_WINDOW, np.float64)
        self._cpu_times = np.zeros(TIMING_WINDOW, np.float64)
        self.counters = PipelineCounters()
        self.step_ratio = 1.0
        # time-averaged ring levels (Little's law turns them into waiting times)
        self._last_sample_t: float | None = None
        self.cap_level_avg = 0.0
        self.play_level_avg = float(self.prefill_frames)
        self._avg_tau_s = 2.0
        self.min_fill = 1 << 62  # the lowest playback ring level seen while playing: the cushion left
        self.owed = 0.0  # what the device side was owed over the last sample's interval (see sample_levels)

    # -- levels -------------------------------------------------------------------
    def sample_levels(self, now: float, playing: bool = True, cap_level: int | None = None, owed: float = 0.0) -> None:
        """Sample both ring levels (call at the worker's wake-ups, which are not tied to the
        callbacks); feeds the drift controller with the time-weighted playback level.
        Nothing is measured while playback is not armed (start, or refilling).

        ``owed``: frames the device side asked for and the ring could not give yet, on
        average since the last sample (the native streams: the sound server's queue is
        short by that much). The drift control sees the ring's level less what is owed, a
        level that can go below empty: a pre-fill smaller than one request of the server
        would otherwise let the server's queue drain while the ring looks full enough. The ring's own level is what ``status`` shows (the
        server's account of its queue is taken separately)."""
        if self._last_sample_t is None or not playing:
            self._last_sample_t = now if playing else None
            return
        dt = now - self._last_sample_t
        if dt <= 0:
            return
        self._last_sample_t = now
        play = self.playback.fill
        cap = self.capture.fill if cap_level is None else cap_level
        if play < self.min_fill:
            self.min_fill = play
        a = min(1.0, dt / self._avg_tau_s)
        self.cap_level_avg += a * (cap - self.cap_level_avg)
        self.play_level_avg += a * (play - self.play_level_avg)
        self.owed = owed
        self.step_ratio = self.drift.update(play - owed, dt)

    def prefill(self, extra: int = 0) -> None:
        """Top the playback ring up to its target with silence (start, or after an underflow).

        ``extra``: frames the device side takes at once when playback is armed (a server
        buffer filled in one go), so that the ring is still at its target afterwards."""
        missing = min(self.prefill_frames + int(extra) - self.playback.fill, self.playback.space)
        while missing > 0:
            n = self.playback.write(self._zeros_c, min(missing, self._zeros.shape[0]))
            if n == 0:
                break
            missing -= n

    def set_target(self, prefill_frames: int) -> None:
        """A new pre-fill: the drift control moves the level there (no jump, no gap)."""
        self.prefill_frames = int(prefill_frames)
        self.drop_above = self.prefill_frames + max(int(0.06 * self.out_rate), 4 * FACTOR * self.block_size)
        self.drift.target = float(prefill_frames)
        self.drift.reset_band()

    # -- replacing the pipeline (reload) -------------------------------------------------
    def adopt(self, old: "Pipeline") -> None:
        """Continue where ``old`` stops (worker thread, at a block boundary): the drift
        controller (it holds the clock ratio), counters, level averages and the rate
        adjuster's phase carry over; the engine is primed with the recent input so that its
        bypass path continues seamlessly, and starts on its bypass path if the old one was
        there."""
        self.drift = old.drift
        self.drift.target = float(self.prefill_frames)
        self.drift.reset_band()
        self.counters = old.counters
        self._times = old._times
        self._cpu_times = old._cpu_times
        self.step_ratio = old.step_ratio
        self.cap_level_avg, self.play_level_avg = old.cap_level_avg, old.play_level_avg
        self._last_sample_t = old._last_sample_t
        self.min_fill = old.min_fill
        self.adjuster.take_state(old.adjuster)
        recent = np.roll(old._hist, -old._hist_pos, axis=1)  # oldest first (once per reload)
        m = min(self._hist.shape[1], recent.shape[1])
        self._hist[:, -m:] = recent[:, -m:]
        self._hist_pos = 0
        b, hn = self.block_size, self._hist.shape[1]
        need = 2 * self.engine.latency + 256
        k = min(hn // b, -(-need // b)) * b
        for i in range(hn - k, hn, b):
            np.copyto(self._in_planar, self._hist[:, i:i + b])
            self.engine.process(self._in_planar)
        if old.engine.model_gain == 0.0:
            # the old engine faded its model out (the daemon switches then): continue on the
            # plain path and fade this engine's model in, never start on it (a step)
            self.engine.start_on_bypass()

    # -- fade out (stop) ---------------------------------------------------------------
    def begin_fade_out(self, frames: int) -> None:
        frames = max(1, int(frames))
        if self._fade_rising and self._fade_total:  # still fading in: down from where it is
            self._fade_left = int(frames * (1.0 - self._fade_left / self._fade_total))
        else:
            self._fade_left = frames
        self._fade_total = frames
        self._fade_rising = False
        self._await_sound = False

    def begin_fade_in(self, frames: int) -> None:
        """Ramp the output up from silence over ``frames`` output frames."""
        self._fade_rising = True
        self._fade_left = self._fade_total = max(1, int(frames))

    @property
    def faded(self) -> bool:
        return self._fade_total > 0 and self._fade_left == 0 and not self._fade_rising

    def _apply_fade(self, out: np.ndarray) -> None:
        n = out.shape[0]
        g = self._fade_g[:n]
        # gain (left - k) / total, clipped at 0: a linear ramp down across blocks (rising:
        # 1 less that, the same ramp up)
        np.subtract(float(self._fade_left), self._fade_k[:n], out=g)
        g *= 1.0 / self._fade_total
        if self._fade_rising:
            np.subtract(1.0, g, out=g)
        np.clip(g, 0.0, 1.0, out=g)
        crossfade(self._silence[:n].T, out.T, g, out.T, self._fade_scratch[:n].T)
        self._fade_left = max(0, self._fade_left - n)
        if self._fade_rising and self._fade_left == 0:
            self._fade_total = 0  # faded in: nothing more to apply

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
        c0 = time.thread_time()
        cap.read(self._in_c, self.block_size)
        np.copyto(self._in_planar, self._in_inter.T)
        b, p = self.block_size, self._hist_pos
        np.copyto(self._hist[:, p:p + b], self._in_planar)
        self._hist_pos = (p + b) % self._hist.shape[1]
        if self._await_sound:
            if max(float(self._in_planar.max()), -float(self._in_planar.min())) > SOUND_FLOOR:  # no temporary
                self._await_sound = False
                self.begin_fade_in(self._fade_in_frames)
            else:
                self._settle_frames -= self.block_size
                self._await_sound = self._settle_frames > 0
        y = self.engine.process(self._in_planar)
        out = self.adjuster.process(y, self.step_ratio)
        n = out.shape[0]
        if self._fade_total:
            self._apply_fade(out)
        level = self.playback.fill
        if self._dropping:
            if level > self.prefill_frames:
                self.counters.dropped_blocks += 1
                self._record_time(t0, c0)
                return True
            self._dropping = False
            self._ramp(out, rising=True)
        elif level > self.drop_above:
            self._dropping = True
            self.counters.drops += 1
            self._ramp(out, rising=False)
        written = self.playback.write(self._out_c, n)  # out is a prefix of out_buffer
        if written < n:
            self.counters.playback_full += n - written
        self._record_time(t0, c0)
        return True

    def _record_time(self, t0: float, c0: float) -> None:
        dt = time.perf_counter() - t0
        c = self.counters
        self._times[c.blocks % TIMING_WINDOW] = dt
        self._cpu_times[c.blocks % TIMING_WINDOW] = time.thread_time() - c0
        c.blocks += 1
        if dt > c.max_process_s:
            c.max_process_s = dt

    def _ramp(self, out: np.ndarray, rising: bool) -> None:
        """A linear fade across this block (in: 0 -> 1, out: 1 -> 0)."""
        n = out.shape[0]
        g = self._fade_g[:n]
        np.multiply(self._fade_k[:n], 1.0 / n, out=g)
        if not rising:
            np.subtract(1.0, g, out=g)
        crossfade(self._silence[:n].T, out.T, g, out.T, self._fade_scratch[:n].T)

    # -- reporting ----------------------------------------------------------------
    def timing(self) -> dict[str, float]:
        """Processing time per block, ms: median, p99 (last blocks) and max (all), wall
        clock; and the worker thread's own CPU time in it (median, p99). Wall time well
        above CPU time means the worker was made to wait (preempted by other threads, a
        stalled machine, the GIL), not that the block's work was slow."""
        n = min(self.counters.blocks, TIMING_WINDOW)
        budget = 1e3 * self.block_size / self.rate
        if n == 0:
            return {"median_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "cpu_median_ms": 0.0, "cpu_p99_ms": 0.0, "budget_ms": budget}
        t = self._times[:n]
        ct = self._cpu_times[:n]
        return {
            "median_ms": 1e3 * float(np.median(t)),
            "p99_ms": 1e3 * float(np.percentile(t, 99)),
            "max_ms": 1e3 * self.counters.max_process_s,
            "cpu_median_ms": 1e3 * float(np.median(ct)),
            "cpu_p99_ms": 1e3 * float(np.percentile(ct, 99)),
            "budget_ms": budget,
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
