"""Test signals and a block-feeding helper."""

from __future__ import annotations

import numpy as np


def tone(freq: float, rate: int, frames: int, amp: float = 0.5, channels: int = 2, phase: float = 0.3) -> np.ndarray:
    """``[channels, frames]`` float32 sine; channel k is phase-shifted by k * 0.7 rad."""
    t = np.arange(frames) / rate
    return np.stack([amp * np.sin(2 * np.pi * freq * t + phase + 0.7 * k) for k in range(channels)]).astype(np.float32)


def run_blocks(process, x: np.ndarray, block: int, factor: int = 4) -> np.ndarray:
    """Feed ``x [C, N]`` in blocks (zero-padding the last), return ``[C, 4N]``."""
    c, n = x.shape
    pad = (-n) % block
    xp = np.concatenate([x, np.zeros((c, pad), np.float32)], axis=1)
    outs = [process(xp[:, i:i + block]).copy() for i in range(0, xp.shape[1], block)]
    return np.concatenate(outs, axis=1)[:, : factor * n]
