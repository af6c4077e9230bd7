"""Frame rings between the audio callbacks (rtmixer, C) and the worker (Python).

A ring is PortAudio's single-reader single-writer lock-free ring buffer (``rtmixer.RingBuffer``)
over a numpy array allocated once. One element is one interleaved frame ``[channels]``
float32. rtmixer's callback reads or writes one side; the worker the other.
"""

from __future__ import annotations

import numpy as np
import rtmixer

_ffi = rtmixer._ffi


def next_pow2(n: int) -> int:
    if n < 1:
        raise ValueError(f"ring size must be >= 1 frame, got {n}")
    return 1 << (int(n) - 1).bit_length()


class FrameRing:
    """A ring of ``frames`` (rounded up to a power of two) interleaved float32 frames.

    Args:
        channels: frame width.
        min_frames: the smallest capacity wanted; the ring holds the next power of two.
    """

    def __init__(self, channels: int, min_frames: int):
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = channels
        self.capacity = next_pow2(min_frames)
        self._mem = np.zeros((self.capacity, channels), np.float32)
        self.ring = rtmixer.RingBuffer(4 * channels, buffer=self._mem)
        self._lib = self.ring._lib
        self._ptr = self.ring._ptr

    @property
    def fill(self) -> int:
        """Frames readable now."""
        return int(self._lib.PaUtil_GetRingBufferReadAvailable(self._ptr))

    @property
    def space(self) -> int:
        """Frames writable now."""
        return int(self._lib.PaUtil_GetRingBufferWriteAvailable(self._ptr))

    def flush(self) -> None:
        """Empty the ring; only while no callback uses it."""
        self.ring.flush()

    def write(self, frames_c, n: int) -> int:
        """Write ``n`` frames from a cdata pointer made once with :func:`cbuffer`."""
        return int(self._lib.PaUtil_WriteRingBuffer(self._ptr, frames_c, n))

    def read(self, frames_c, n: int) -> int:
        """Read up to ``n`` frames into a cdata pointer made once with :func:`cbuffer`."""
        return int(self._lib.PaUtil_ReadRingBuffer(self._ptr, frames_c, n))

    def skip(self, n: int) -> int:
        """Drop up to ``n`` readable frames (the oldest)."""
        n = min(n, self.fill)
        self._lib.PaUtil_AdvanceRingBufferReadIndex(self._ptr, n)
        return n


def cbuffer(arr: np.ndarray):
    """A C pointer to a C-contiguous numpy array, made once and reused by the worker."""
    if not arr.flags.c_contiguous:
        raise ValueError("ring I/O buffers must be C-contiguous")
    return _ffi.cast("float *", _ffi.from_buffer(arr))
