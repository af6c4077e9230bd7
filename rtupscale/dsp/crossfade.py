"""Crossfade windows and the one crossfade function every path switch uses."""

from __future__ import annotations

import numpy as np


def fade_in_curve(length: int, power: bool = False) -> np.ndarray:
    """A fade-in ramp of ``length`` samples, rising from just above 0 to 1.

    ``power=False`` (raised cosine, sin^2): fade_in + fade_out = 1 at every sample, so two
    *correlated* signals (the model path and the bypass path, two model states, two
    overlapping windows: all the same music, aligned sample for sample) mix without a
    level bump. ``power=True`` (sin): fade_in^2 + fade_out^2 = 1, constant power for
    *uncorrelated* signals. rtupscale only ever crossfades correlated paths, so it uses
    the amplitude-complementary curve everywhere.

    Shape:
        ``[length]`` float64; sample k sits at the middle of its interval, (k + 0.5) / length,
        so the ramp is symmetric and never exactly 0 or 1 inside the fade.
    """
    if length < 1:
        raise ValueError(f"crossfade length must be >= 1 sample, got {length}")
    t = (np.arange(length) + 0.5) / length
    s = np.sin(0.5 * np.pi * t)
    return s if power else s * s


def crossfade(old: np.ndarray, new: np.ndarray, fade_in: np.ndarray, out: np.ndarray,
              scratch: np.ndarray | None = None) -> None:
    """``out = old * (1 - fade_in) + new * fade_in``, without allocating: the one crossfade
    of the engine (model and bypass paths), the windowed runner (overlap-add) and the
    pipeline (fades to and from silence: ``old`` or ``new`` a zero buffer).

    The weights ``1 - fade_in`` and ``fade_in`` sum to 1 at every sample, which keeps the
    amplitude of two correlated signals constant (see :func:`fade_in_curve`).

    Shape:
        old, new, out, scratch ``[channels, K]`` (views such as ``x.T`` of interleaved
        ``[K, channels]`` buffers too); fade_in ``[K]`` (a slice of a precomputed curve).
        ``out`` may be ``old`` or ``new``; ``scratch`` must be neither, and defaults to
        ``out`` (then ``out`` must be neither ``old`` nor ``new``).

    One channel at a time: a ``[K]`` gain broadcast over ``[channels, K]`` makes numpy
    allocate an iteration buffer the size of the block on every call.
    """
    if scratch is None:
        scratch = out
    for c in range(out.shape[0]):
        s = scratch[c]
        np.subtract(new[c], old[c], out=s)
        np.multiply(s, fade_in, out=s)
        np.add(old[c], s, out=out[c])
