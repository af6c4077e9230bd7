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

    def process(self, x: np.ndarray) -> int:
        """Clip ``x`` in place. Returns how many samples were above the knee (touched)."""
        peak = float(np.max(np.abs(x))) if x.size else 0.0
        if peak <= self.knee:  # the common case: nothing to do, no allocation
            return 0
        over = np.abs(x) > self.knee
        v = x[over]
        mag = self.knee + self._span * np.tanh((np.abs(v) - self.knee) / self._span)
        # float32 rounding could land exactly on the ceiling; stay strictly below it.
        mag = np.minimum(mag, np.nextafter(self.ceiling, np.float32(0)))
        x[over] = np.sign(v) * mag
        return int(over.sum())
