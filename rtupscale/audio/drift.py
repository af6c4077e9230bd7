"""Clock drift between the capture and the playback device.

The capture clock decides how many frames arrive; the playback clock how many leave. Two
devices never agree exactly (two PulseAudio null sinks differ by hundreds of ppm), so without
correction the playback ring slowly fills up (latency grows) or runs dry (a click). As
CamillaDSP's rate adjust does, we resample the output by a ratio a few hundred ppm away from 1,
chosen by a PI controller that keeps the playback ring's fill level at its target:

- :class:`DriftController` turns the measured fill level into a ratio (``step``: input
  samples consumed per output sample; ``step > 1`` empties the ring faster).
- :class:`RateAdjuster` applies it to the 4x stream with a 4-point cubic (Catmull-Rom)
  interpolator. At ``step == 1`` and integer phase it passes samples through bit-exactly;
  otherwise, at 4x oversampling (content below 0.125 of the output rate), its error is about
  -60 dB at 10 kHz; the ratio moves by a few ppm per block, so there is no step in the output.
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


class RateAdjuster:
    """Streaming resampler of the output by a ratio near 1 (Catmull-Rom cubic).

    Args:
        channels: number of channels.
        max_block: the largest input block (output-rate frames) it will be given.
        max_deviation: the largest ``|step - 1|`` it will be given; sizes the output buffer.

    ``process(block, step)`` returns interleaved ``[frames, channels]`` float32, a view into
    an internal buffer (overwritten by the next call); frames is about ``block / step``.
    The delay is 2 samples (at the rate of the block).
    """

    HISTORY = 3  # samples kept from the previous block: x[i-1] .. x[i+2] around a position
    HISTORY_DELAY = 2  # output lags input by this many samples

    def __init__(self, channels: int, max_block: int, max_deviation: float = 0.01, native: bool | None = None):
        if channels < 1 or max_block < 1 or not (0 < max_deviation < 0.5):
            raise ValueError(
                f"RateAdjuster: channels {channels}, max_block {max_block} must be >= 1, "
                f"max_deviation {max_deviation} in (0, 0.5)"
            )
        self.channels = channels
        self.max_block = max_block
        self.max_deviation = max_deviation
        h = self.HISTORY
        self._buf = np.zeros((channels, h + max_block), np.float32)
        self._max_out = int(math.ceil(max_block / (1.0 - max_deviation))) + 4
        self._k = np.arange(self._max_out, dtype=np.float64)
        self._pos = np.zeros(self._max_out, np.float64)
        self._ipos = np.zeros(self._max_out, np.intp)
        self._frac = np.zeros(self._max_out, np.float32)
        self._w = np.zeros((4, self._max_out), np.float32)
        self._tmp = np.zeros(self._max_out, np.float32)
        self._g = np.zeros(self._max_out, np.float32)
        self._out = np.zeros((self._max_out, channels), np.float32)
        # the C loop (kernels.cubic_read) where it is built; this numpy code is its
        # reference, and they agree bit for bit (same float32 operations in the same order)
        self.native = kernels.resolve(native)
        if self.native:
            self._buf_p = kernels.float_ptr(self._buf)
            self._out_p = kernels.float_ptr(self._out)
        self.reset()

    def reset(self) -> None:
        self._buf[:] = 0.0
        self._t = float(self.HISTORY - 2)  # read position in _buf coordinates

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
        if c != self.channels or m > self.max_block:
            raise ValueError(f"block shape {block.shape}: expected [{self.channels}, <= {self.max_block}]")
        if abs(step - 1.0) > self.max_deviation:
            raise ValueError(f"step {step}: must be within 1 +- {self.max_deviation}")
        h = self.HISTORY
        buf = self._buf
        buf[:, h:h + m] = block
        end = h + m - 2  # positions must stay < end: x[i+2] must exist
        n = max(0, int(math.ceil((end - self._t) / step)))
        n = min(n, self._max_out)
        if self.native:
            kernels.cubic_read(self._buf_p, buf.shape[1], c, self._t, step, n, self._out_p)
            self._t += n * step - m
            buf[:, :h] = buf[:, m:m + h]
            return self._out[:n]
        pos = self._pos[:n]
        np.multiply(self._k[:n], step, out=pos)
        pos += self._t
        ipos = self._ipos[:n]
        np.floor(pos, out=pos)  # pos now holds floor(position)
        np.copyto(ipos, pos, casting="unsafe")
        # fraction, recomputed from k (pos was floored in place)
        frac = self._frac[:n]
        np.multiply(self._k[:n], step, out=self._pos[:n])
        self._pos[:n] += self._t
        self._pos[:n] -= ipos
        np.copyto(frac, self._pos[:n], casting="same_kind")
        # Catmull-Rom weights for x[i-1], x[i], x[i+1], x[i+2]
        f, t = frac, self._tmp[:n]
        wm1, w0, w1, w2 = (self._w[j, :n] for j in range(4))
        # wm1 = (-f^3 + 2f^2 - f)/2 ; w0 = (3f^3 - 5f^2 + 2)/2 ; w1 = (-3f^3 + 4f^2 + f)/2 ; w2 = (f^3 - f^2)/2
        np.multiply(f, f, out=t)  # f^2
        np.multiply(t, f, out=w2)  # f^3
        np.subtract(w2, t, out=w2)
        w2 *= 0.5  # (f^3 - f^2)/2
        # wm1 = -f^3/2 + f^2 - f/2 = -(w2) + f^2/2 - f/2
        np.subtract(t, f, out=wm1)
        wm1 *= 0.5
        wm1 -= w2
        # w0 = 1 - 2.5 f^2 + 1.5 f^3 = 1 - f^2 + 3*w2
        np.multiply(w2, 3.0, out=w0)
        w0 -= t
        w0 += 1.0
        # w1 = 1 - wm1 - w0 - w2 (the weights sum to one)
        np.add(wm1, w0, out=w1)
        w1 += w2
        np.subtract(1.0, w1, out=w1)
        out = self._out[:n]
        g = self._g[:n]
        for ch in range(c):
            row = buf[ch]
            col = out[:, ch]
            np.take(row, ipos, out=g)
            np.multiply(g, w0, out=col)
            ipos -= 1
            np.take(row, ipos, out=g)
            g *= wm1
            col += g
            ipos += 2
            np.take(row, ipos, out=g)
            g *= w1
            col += g
            ipos += 1
            np.take(row, ipos, out=g)
            g *= w2
            col += g
            ipos -= 2
        self._t += n * step - m
        buf[:, :h] = buf[:, m:m + h]
        return out
