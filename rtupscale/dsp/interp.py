"""Streaming x4 interpolation: the bypass path, and the residual base a model may embed.

A linear-phase Kaiser-windowed sinc, split into 4 polyphase branches. Why not soxr's
streaming API: measured here, ``soxr.ResampleStream`` (VHQ) returns its output in bursts
(0, 0, 0, 3032 frames for four 256-frame blocks), so a fixed-size block engine would need
several blocks of extra buffering. This filter gives exactly ``4 * N`` output frames for
every ``N`` input frames with a fixed, integer latency. soxr is still used where bursts do
not matter (resampling a file's input rate in file mode).

Design (checked by ``tests/dsp/test_interp.py`` on pure tones):
- passband ripple <= 0.01 dB up to 0.45 x base rate,
- images (everything above the base Nyquist) <= -100 dB,
- latency ``LATENCY`` input samples: output sample ``4 * (n + LATENCY)`` is input sample n.
"""

from __future__ import annotations

import numpy as np

from rtupscale import FACTOR
from rtupscale.dsp import kernels

# Filter length is 8 * HALF_TAPS + 1 output-rate taps, so that the group delay,
# 4 * HALF_TAPS output samples, is a whole number of input samples (HALF_TAPS).
HALF_TAPS = 72
LATENCY = HALF_TAPS
"""Latency of the interpolator in input samples."""
_PASS_EDGE = 0.45  # x base rate
_STOP_EDGE = 0.50  # x base rate
_KAISER_BETA = 11.0  # about 110 dB stopband attenuation


def design_interpolator() -> np.ndarray:
    """The x4 interpolation filter as polyphase taps.

    Returns:
        ``[taps_per_phase, 4]`` float64: column ``p`` holds the taps that make output phase
        ``p``; row ``k`` multiplies input sample ``n - k``. Each column sums to 1 (DC gain 1).
    """
    n_taps = 8 * HALF_TAPS + 1
    cutoff = (_PASS_EDGE + _STOP_EDGE) / 2 / FACTOR  # cycles per output sample
    t = np.arange(n_taps) - (n_taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n_taps, _KAISER_BETA)
    pad = (-n_taps) % FACTOR
    h = np.concatenate([h, np.zeros(pad)])
    poly = h.reshape(-1, FACTOR)  # poly[k, p] = h[4k + p]
    poly = poly / poly.sum(axis=0, keepdims=True)
    return poly


class Interpolator:
    """Streaming x4 interpolator with carried history.

    Output frame ``4 * (n + LATENCY) + p`` depends only on input frames up to ``n + LATENCY``,
    so feeding a signal in blocks of any size gives the same output as one call.

    Args:
        channels: number of channels (>= 1).
        max_frames: the largest block this instance will be given; buffers are sized once.
        native: use the C loop (``kernels.interp4``); None: where it is built. The numpy
            code is the reference; the two agree to float32 rounding (their sums run in a
            different order), and either gives the same output for any block split.
    """

    def __init__(self, channels: int, max_frames: int, native: bool | None = None):
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.channels = channels
        self.max_frames = max_frames
        self._poly = design_interpolator().astype(np.float32)
        self._taps = self._poly.shape[0]
        # _buf[:, :taps-1] is the carried history; the block is written behind it.
        self._buf = np.zeros((channels, self._taps - 1 + max_frames), np.float32)
        self._out = np.zeros((channels, FACTOR * max_frames), np.float32)
        # Reversed so that a sliding window times _rev gives sum_k h[4k+p] x[n-k].
        self._rev = np.ascontiguousarray(self._poly[::-1])
        self.native = kernels.resolve(native)
        if self.native:
            self._buf_p = kernels.float_ptr(self._buf)
            self._rev_p = kernels.float_ptr(self._rev)
            self._out_p = kernels.float_ptr(self._out)

    def reset(self) -> None:
        """Forget the history (as after silence)."""
        self._buf[:] = 0.0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Interpolate one block.

        Shape:
            block ``[channels, N]`` float32 -> ``[channels, 4 * N]`` float32, a view into an
            internal buffer that the next call overwrites.
        """
        c, n = block.shape
        if c != self.channels or n > self.max_frames:
            raise ValueError(
                f"block shape {block.shape}: expected [{self.channels}, <= {self.max_frames}]"
            )
        h = self._taps - 1
        self._buf[:, h:h + n] = block
        out = self._out[:, : FACTOR * n]
        if self.native:
            kernels.interp4(self._buf_p, self._buf.shape[1], c, n, self._rev_p, self._taps, self._out_p, self._out.shape[1])
        else:
            windows = np.lib.stride_tricks.sliding_window_view(self._buf[:, : h + n], self._taps, axis=1)
            np.matmul(windows, self._rev, out=out.reshape(c, n, FACTOR))
        self._buf[:, :h] = self._buf[:, n:n + h]
        return out

    def push(self, block: np.ndarray) -> None:
        """Take one block into the history without interpolating it: for a block whose
        output nobody hears. The next :meth:`process` gives exactly what it would have
        given had this block been processed (the history is all the state there is).

        Shape:
            block ``[channels, N]`` float32, ``N <= max_frames``.
        """
        c, n = block.shape
        if c != self.channels or n > self.max_frames:
            raise ValueError(
                f"block shape {block.shape}: expected [{self.channels}, <= {self.max_frames}]"
            )
        h = self._taps - 1
        if n >= h:
            self._buf[:, :h] = block[:, n - h:]
        else:
            self._buf[:, :h - n] = self._buf[:, n:h]
            self._buf[:, h - n:h] = block


def interpolate(x: np.ndarray) -> np.ndarray:
    """Offline x4 interpolation of a whole signal, latency removed.

    Shape:
        ``[channels, N]`` -> ``[channels, 4 * N]`` (output ``4n`` is input ``n``).
    """
    x = np.asarray(x, np.float32)
    c, n = x.shape
    interp = Interpolator(c, n + LATENCY)
    padded = np.concatenate([x, np.zeros((c, LATENCY), np.float32)], axis=1)
    return interp.process(padded)[:, FACTOR * LATENCY:].copy()
