"""Locating a gap in a recording of the DAC (tests/audio/pulse_harness.recording_breaks): the
place is found on the monotonic clock, so a live test can check that a stall of the machine
came right before it."""

from __future__ import annotations

import numpy as np
import soxr

from tests.audio.pulse_harness import noise_signal, recording_breaks

RATE, FACTOR = 44100, 4
T0_A, T0_B = 1000.0, 1000.04  # monotonic times of the two recordings' first samples


def _stamps(n: int, rate: int, block: int, t0: float, seed: int) -> np.ndarray:
    """A recorder's callback stamps: [index, adc, current, monotonic], each callback run a
    little after its block arrived."""
    idx = np.arange(0, n - block, block, dtype=np.float64)
    late = np.random.default_rng(seed).uniform(0.0005, 0.004, len(idx))
    mono = t0 + (idx + block) / rate + late
    return np.stack([idx, mono, mono, mono], axis=1)


def _recording(gap_at_s: float | None, gap_ms: float = 20.0, seconds: float = 8.0) -> dict:
    sig = noise_signal(seconds, RATE, seed=5)
    a = np.concatenate([np.zeros((RATE // 2, 2), np.float32), sig, np.zeros((RATE, 2), np.float32)])
    b = soxr.resample(a, RATE, FACTOR * RATE, quality="VHQ").astype(np.float32)
    b = np.concatenate([np.zeros((int(0.03 * FACTOR * RATE), 2), np.float32), b])  # 30 ms later
    if gap_at_s is not None:
        at = int(gap_at_s * FACTOR * RATE)
        b = np.concatenate([b[:at], np.zeros((int(gap_ms / 1e3 * FACTOR * RATE), 2), np.float32), b[at:]])
    return {"a": a, "a_rate": RATE, "a_stamps": _stamps(len(a), RATE, 441, T0_A, 1),
            "b": b, "b_rate": FACTOR * RATE, "b_stamps": _stamps(len(b), FACTOR * RATE, 1764, T0_B, 2)}


def test_a_clean_recording_has_no_break():
    assert recording_breaks(_recording(None)) == []


def test_a_gap_is_found_where_the_dac_played_it():
    """A 20 ms gap 4 s into the DAC's recording: one break, within 50 ms of the monotonic
    time that recording reached it (10 ms windows; the callbacks run up to 4 ms late)."""
    breaks = recording_breaks(_recording(4.0))
    assert len(breaks) == 1, breaks
    assert abs(breaks[0] - (T0_B + 4.0)) <= 0.05, breaks[0] - T0_B


def test_two_gaps_are_two_breaks():
    rec = _recording(3.0)
    at = int(6.0 * FACTOR * RATE)
    rec["b"] = np.concatenate([rec["b"][:at], np.zeros((int(0.015 * FACTOR * RATE), 2), np.float32), rec["b"][at:]])
    rec["b_stamps"] = _stamps(len(rec["b"]), FACTOR * RATE, 1764, T0_B, 2)
    breaks = recording_breaks(rec)
    assert len(breaks) == 2, breaks
    assert abs(breaks[0] - (T0_B + 3.0)) <= 0.05 and abs(breaks[1] - (T0_B + 6.0)) <= 0.05, breaks


def test_without_monotonic_stamps_nothing_can_be_located():
    rec = _recording(4.0)
    rec["b_stamps"] = rec["b_stamps"][:, :3]
    assert recording_breaks(rec) is None
