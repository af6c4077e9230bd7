"""Output safety: a memoryless soft clipper that keeps every sample under the ceiling.

Memoryless on purpose: it adds no latency, needs no per-sample recursion (so it is cheap
in numpy on any block), and gives the same result whatever the block size. Below the knee
(1 dB under the ceiling) it is the identity, so ordinary programme material passes
bit-for-bit; above it the curve bends smoothly (continuous slope) towards the ceiling,
which it never reaches.
"""

from __future__ import annotations

import numpy as np

KNEE_DB = 1.0
"""The soft region spans the last KNEE_DB below the ceiling."""


def db_to_gain(db: float) -> float:
    return float(10.0 ** (db / 20.0))


class SoftClipper:
    """``y = x`` for ``|x| <= knee``; ``sign(x) * (knee + (c - knee) * tanh((|x| - knee) / (c - knee)))`` above.

    Args:
        ceiling_dbfs: the level no output sample reaches, dBFS (<= 0).
    """

    def __init__(self, ceiling_dbfs: float):
        if not (-40.0 <= ceiling_dbfs <= 0.0):
            raise ValueError(f"ceiling_dbfs {ceiling_dbfs}: expected a number from -40 to 0")
        self.ceiling = np.float32(db_to_gain(ceiling_dbfs))
        self.knee = np.float32(db_to_gain(ceiling_dbfs - KNEE_DB))
        self._span = self.ceiling - self.knee
        self._below_ceiling = np.nextafter(self.ceiling, np.float32(0))
        self._mag: np.ndarray | None = None  # scratch, allocated on the first clipped block
        self._over: np.ndarray | None = None

    def process(self, x: np.ndarray) -> int:
        """Clip ``x`` in place. Returns how many samples were above the knee (touched)."""
        if not x.size:
            return 0
        peak = max(float(x.max()), -float(x.min()))  # no |x| temporary
        if peak <= self.knee:  # the common case: nothing to do, no allocation
            return 0
        if self._mag is None or self._mag.shape != x.shape:  # once per block shape
            self._mag = np.empty(x.shape, np.float32)
            self._over = np.empty(x.shape, bool)
        mag, over = self._mag, self._over
        np.abs(x, out=mag)
        np.greater(mag, self.knee, out=over)
        mag -= self.knee
        mag *= 1.0 / self._span
        np.tanh(mag, out=mag)
        mag *= self._span
        mag += self.knee
        # float32 rounding could land exactly on the ceiling; stay strictly below it.
        np.minimum(mag, self._below_ceiling, out=mag)
        np.copysign(mag, x, out=mag)
        np.copyto(x, mag, where=over)
        return int(np.count_nonzero(over))
