"""Clock drift between the capture and the playback device.

The capture clock decides how many frames arrive; the playback clock how many leave. Two
devices never agree exactly (two PulseAudio null sinks differ by hundreds of ppm), so without
correction the playback ring slowly fills up (latency grows) or runs dry (a click). As
CamillaDSP's rate adjust does, we resample the output by a ratio a few hundred ppm away from 1,
chosen by a PI controller that keeps the playback ring's fill level at its target:

- :class:`DriftController` turns the measured fill level into a ratio (``step``: input
  samples consumed per output sample; ``step > 1`` empties the ring faster).
- :class:`RateAdjuster` applies it to the 4x stream: a variable-ratio resampler, a
  Kaiser-windowed sinc of 16 taps read from a table of 512 phases (linear interpolation
  between phases), a new ratio per block. At ``step == 1`` and integer phase it passes
  samples through bit-exactly; otherwise its error for a full-scale tone up to 20 kHz at
  176.4 kHz is below -120 dB (``tests/audio/test_drift.py``). The ratio moves by a few ppm
  per block, so there is no step in the output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rtupscale.dsp import kernels


@dataclass
class DriftState:
    """The controller's state, also shown by ``status``."""

    level_ema: float = 0.0  # playback ring fill, frames, low-passed
    integral: float = 0.0  # the clock ratio estimate (ppm / 1e6)
    correction: float = 0.0  # applied step - 1
    initialised: bool = False
    min_ema: float = math.inf  # since the last reset of the band statistics
    max_ema: float = -math.inf
    catching_up: bool = False  # the level is outside the catch-up band (a jump being removed)


class DriftController:
    """PI control of the playback ring level through the resampling ratio.

    Closed loop: ``level' = drift - correction``, ``correction = Kp*e + Ki*integral(e)``, a
    second-order loop with natural frequency ``sqrt(Ki)`` and damping ``Kp / (2 sqrt(Ki))``.
    With ``settle_s = 40`` the loop settles in about 40 s, tracks a constant drift with zero
    steady-state error, and moves the ratio by well under 1 ppm per block.

    Args:
        rate: playback rate in Hz (frames of the ring per second).
        target_frames: the fill level to hold (the pre-fill), frames.
        max_ppm: the largest correction, parts per million (clock drift of real devices is
            well under 1000 ppm).
        settle_s: loop time constant, seconds.
        smoothing_s: time constant of the level low-pass, seconds; the raw level is a sawtooth
            of the callback and block sizes.
        catchup_band_frames: a level further than this from the target is not drift but a
            jump (a sound server that re-rendered ahead, a burst of capture, a re-arm): the
            excess beyond the band is removed (or made up) with time constant ``catchup_s``,
            at up to ``max_catchup_ppm``, and the integral (the clock estimate) holds still
            meanwhile. ``None``: no catch-up (the PI loop alone, at ``max_ppm``).
    """

    def __init__(
        self,
        rate: float,
        target_frames: float,
        max_ppm: float = 2000.0,
        settle_s: float = 40.0,
        smoothing_s: float = 1.0,
        catchup_band_frames: float | None = None,
        catchup_s: float = 1.5,
        max_catchup_ppm: float = 8000.0,
    ):
        if rate <= 0 or target_frames < 0 or max_ppm <= 0 or settle_s <= 0 or smoothing_s <= 0:
            raise ValueError(
                f"DriftController: rate {rate}, target {target_frames}, max_ppm {max_ppm}, "
                f"settle_s {settle_s}, smoothing_s {smoothing_s}: all must be > 0 (target >= 0)"
            )
        self.rate = float(rate)
        self.target = float(target_frames)
        self.max_correction = max_ppm * 1e-6
        wn = 2.0 * math.pi / settle_s
        self.ki = wn * wn
        self.kp = 2.0 * 1.0 * wn  # damping 1: no overshoot
        self.smoothing_s = smoothing_s
        self.catchup_band = None if catchup_band_frames is None else float(catchup_band_frames)
        self.catchup_s = float(catchup_s)
        self.max_catchup = max(max_ppm, max_catchup_ppm) * 1e-6
        self.state = DriftState()

    def reset_band(self) -> None:
        self.state.min_ema = math.inf
        self.state.max_ema = -math.inf

    def update(self, level_frames: float, dt_s: float) -> float:
        """Feed one level measurement taken ``dt_s`` after the previous one; returns the step."""
        st = self.state
        if not st.initialised:
            st.level_ema = float(level_frames)
            st.initialised = True
        else:
            a = min(1.0, dt_s / self.smoothing_s)
            st.level_ema += a * (level_frames - st.level_ema)
        st.min_ema = min(st.min_ema, st.level_ema)
        st.max_ema = max(st.max_ema, st.level_ema)
        excess = st.level_ema - self.target
        err_s = excess / self.rate
        band = self.catchup_band
        if band is not None and abs(excess) > band:
            # a jump, not drift: take the part beyond the band out quickly (by rate, so no
            # step in the signal), and keep the clock estimate out of it
            fast = math.copysign((abs(excess) - band) / self.rate / self.catchup_s, excess)
            corr = self.kp * err_s + st.integral + fast
            st.correction = max(-self.max_catchup, min(self.max_catchup, corr))
            st.catching_up = True
            return 1.0 + st.correction
        st.catching_up = False
        st.integral += self.ki * err_s * dt_s
        st.integral = max(-self.max_correction, min(self.max_correction, st.integral))
        corr = self.kp * err_s + st.integral
        st.correction = max(-self.max_correction, min(self.max_correction, corr))
        return 1.0 + st.correction


def sinc_table(half: int, phases: int, beta: float) -> np.ndarray:
    """The resampling kernel: ``table[p, k]`` weighs input sample ``floor + k - half + 1``
    for a read position ``floor + p / phases``.

    Kaiser-windowed sinc (cut-off at the Nyquist frequency, window ``beta``) over
    ``2 * half`` taps, each row normalised to a DC gain of 1; phase 0 (and ``phases``) is
    exactly the sample itself.

    Shape:
        ``[phases + 1, 2 * half]`` float64.
    """
    taps = 2 * half
    frac = np.arange(phases + 1) / phases
    d = (np.arange(taps) - half + 1)[None, :] - frac[:, None]  # tap offset from the read position
    x = np.clip(1.0 - (d / half) ** 2, 0.0, None)
    h = np.sinc(d) * np.i0(beta * np.sqrt(x)) / np.i0(beta)
    h /= h.sum(axis=1, keepdims=True)
    h[0] = 0.0
    h[0, half - 1] = 1.0
    h[phases] = 0.0
    h[phases, half] = 1.0
    return h


class RateAdjuster:
    """Streaming resampler of the output by a ratio near 1 (windowed sinc, polyphase).

    Args:
        channels: number of channels.
        max_block: the largest input block (output-rate frames) it will be given.
        max_deviation: the largest ``|step - 1|`` it will be given; sizes the output buffer.

    ``process(block, step)`` returns interleaved ``[frames, channels]`` float32, a view into
    an internal buffer (overwritten by the next call); frames is about ``block / step``.
    The delay is ``HISTORY_DELAY`` samples (at the rate of the block). Every buffer is
    allocated here: ``process`` allocates nothing.
    """

    HALF = 8
    """Taps on each side of the read position (16 in all)."""
    PHASES = 512
    """Rows of the kernel table; weights between two rows are interpolated linearly."""
    BETA = 14.0
    """The Kaiser window's beta: -125 dB error at 10 to 20 kHz with 16 taps and 512 phases."""
    HISTORY = 2 * HALF - 1  # samples kept from the previous block
    HISTORY_DELAY = HALF  # output lags input by this many samples

    def __init__(self, channels: int, max_block: int, max_deviation: float = 0.01, native: bool | None = None):
        if channels < 1 or max_block < self.HISTORY or not (0 < max_deviation < 0.5):
            raise ValueError(
                f"RateAdjuster: channels {channels} must be >= 1, max_block {max_block} >= {self.HISTORY}, "
                f"max_deviation {max_deviation} in (0, 0.5)"
            )
        self.channels = channels
        self.max_block = max_block
        self.max_deviation = max_deviation
        h, taps = self.HISTORY, 2 * self.HALF
        self._buf = np.zeros((channels, h + max_block), np.float32)
        self._max_out = int(math.ceil(max_block / (1.0 - max_deviation))) + 4
        n = self._max_out
        table = sinc_table(self.HALF, self.PHASES, self.BETA)
        self._table = np.ascontiguousarray(table[:-1], np.float32)  # [PHASES, taps]
        self._slope = np.ascontiguousarray(table[1:] - table[:-1], np.float32)  # to the next row
        self._k = np.arange(n, dtype=np.float64)
        self._pos = np.zeros(n, np.float64)
        self._floor = np.zeros(n, np.float64)
        self._ipos = np.zeros(n, np.intp)
        self._phase = np.zeros(n, np.intp)
        self._a = np.zeros(n, np.float32)
        # [n, taps] work arrays; the row and tap index arrays spread a per-frame value over
        # its taps without broadcasting (a broadcast makes numpy allocate an iteration buffer)
        self._rows = np.repeat(np.arange(n, dtype=np.intp), taps).reshape(n, taps)
        self._tap_offsets = np.tile(np.arange(taps, dtype=np.intp) - self.HALF + 1, (n, 1))
        self._w = np.zeros((n, taps), np.float32)
        self._dw = np.zeros((n, taps), np.float32)
        self._aw = np.zeros((n, taps), np.float32)
        self._idx = np.zeros((n, taps), np.intp)
        self._x = np.zeros((n, taps), np.float32)
        self._out = np.zeros((n, channels), np.float32)
        # the C loop (kernels.sinc_read) where it is built; this numpy code is its reference
        self.native = kernels.resolve(native)
        if self.native:
            self._buf_p = kernels.float_ptr(self._buf)
            self._out_p = kernels.float_ptr(self._out)
            self._table_p = kernels.float_ptr(self._table)
            self._slope_p = kernels.float_ptr(self._slope)
        self.reset()

    def reset(self) -> None:
        self._buf[:] = 0.0
        self._t = float(self.HISTORY - self.HISTORY_DELAY)  # read position in _buf coordinates

    @property
    def max_out(self) -> int:
        return self._max_out

    def take_state(self, other: "RateAdjuster") -> None:
        """Continue another adjuster's stream (its history and read phase)."""
        h = self.HISTORY
        self._buf[:, :h] = other._buf[:, :h]
        self._t = other._t

    @property
    def out_buffer(self) -> np.ndarray:
        """The whole output buffer ``[max_out, channels]``; ``process`` returns a prefix of it."""
        return self._out

    def process(self, block: np.ndarray, step: float) -> np.ndarray:
        c, m = block.shape
        if c != self.channels or not self.HISTORY <= m <= self.max_block:
            raise ValueError(f"block shape {block.shape}: expected [{self.channels}, {self.HISTORY}..{self.max_block}]")
        if abs(step - 1.0) > self.max_deviation:
            raise ValueError(f"step {step}: must be within 1 +- {self.max_deviation}")
        h = self.HISTORY
        buf = self._buf
        np.copyto(buf[:, h:h + m], block)
        end = h + m - self.HALF  # read positions stay < end: the last tap must exist
        n = max(0, int(math.ceil((end - self._t) / step)))
        n = min(n, self._max_out)
        if self.native:
            kernels.sinc_read(self._buf_p, buf.shape[1], c, self._t, step, n, self._table_p, self._slope_p,
                              self.PHASES, 2 * self.HALF, self._out_p)
        else:
            self._read(n, step)
        self._t += n * step - m
        np.copyto(buf[:, :h], buf[:, m:m + h])  # m >= h: the two do not overlap
        return self._out[:n]

    def _read(self, n: int, step: float) -> None:
        """The numpy reference of ``kernels.sinc_read``: ``n`` output frames from ``_t``."""
        pos, fl = self._pos[:n], self._floor[:n]
        np.multiply(self._k[:n], step, out=pos)
        pos += self._t
        np.floor(pos, out=fl)
        ipos = self._ipos[:n]
        np.copyto(ipos, fl, casting="unsafe")
        pos -= fl  # the fraction, [0, 1)
        pos *= self.PHASES
        np.floor(pos, out=fl)
        phase = self._phase[:n]
        np.copyto(phase, fl, casting="unsafe")
        pos -= fl  # the position between two table rows, [0, 1)
        a = self._a[:n]
        np.copyto(a, pos, casting="same_kind")
        w, dw, aw = self._w[:n], self._dw[:n], self._aw[:n]
        rows = self._rows[:n]
        np.take(self._table, phase, axis=0, out=w, mode="clip")
        np.take(self._slope, phase, axis=0, out=dw, mode="clip")
        np.take(a, rows, out=aw, mode="clip")
        dw *= aw
        w += dw  # the weights at this fraction
        idx = self._idx[:n]
        np.take(ipos, rows, out=idx, mode="clip")
        idx += self._tap_offsets[:n]
        x = self._x[:n]
        out = self._out[:n]
        for ch in range(self.channels):
            np.take(self._buf[ch], idx, out=x, mode="clip")
            np.einsum("ij,ij->i", x, w, out=out[:, ch])
