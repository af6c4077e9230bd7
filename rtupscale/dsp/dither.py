"""TPDF dither for writing integer samples."""

from __future__ import annotations

import numpy as np


def tpdf_dither(x: np.ndarray, bits: int, rng: np.random.Generator) -> np.ndarray:
    """Add triangular-PDF dither of +-1 LSB peak for a ``bits``-bit integer target.

    The sum of two independent uniform variables in [-0.5, 0.5) LSB has a triangular PDF
    that makes the quantisation error independent of the signal (no distortion, no noise
    modulation). Returns a new float32 array; clipping to full scale is the writer's job.
    """
    if bits not in (16, 24, 32):
        raise ValueError(f"bits {bits}: expected 16, 24 or 32")
    lsb = 2.0 ** (1 - bits)
    noise = rng.random(x.shape, dtype=np.float32) - rng.random(x.shape, dtype=np.float32)
    return (x + noise * np.float32(lsb)).astype(np.float32)
