"""The tool that judges the live recordings: ``align_to_reference`` finds a recording equal to
its reference, and a gap at the DAC (the rest of the stream played later) as a gap, without
losing the rest of the recording."""

from __future__ import annotations

import numpy as np

from tests.audio.pulse_harness import align_to_reference

RATE = 176400


def _pair(seconds: float, lag: int, gap_at: float | None = None, gap: int = 0, seed: int = 1):
    rng = np.random.default_rng(seed)
    ref = 0.3 * rng.standard_normal(int(seconds * RATE))
    rec = np.concatenate([np.zeros(lag), ref, np.zeros(RATE // 2)])
    if gap_at is not None:
        k = lag + int(gap_at * RATE)
        rec = np.concatenate([rec[:k], np.zeros(gap), rec[k:]])
    return rec, ref


def test_an_equal_recording_is_compared_whole_and_matches():
    rec, ref = _pair(4.0, lag=3000)
    r = align_to_reference(rec, ref, RATE)
    assert r["lag_jumps"] == 0 and r["seconds_compared"] > 3.8, r
    assert r["snr_db"] > 60 and r["worst_50ms_snr_db"] > 60 and r["min_window_corr"] > 0.99, r
    assert abs(r["lag_start"] - 3000) < 0.5, r


def test_a_gap_is_found_and_the_rest_is_still_compared():
    rec, ref = _pair(4.0, lag=3000, gap_at=1.5, gap=512)
    r = align_to_reference(rec, ref, RATE)
    assert r["lag_jumps"] == 1, r
    assert abs(r["lag_end"] - 3512) < 0.5, r
    assert r["seconds_compared"] > 3.8, r  # the 2.5 s after the gap are not lost
    assert r["worst_50ms_snr_db"] < 20 and r["min_window_corr"] < 0.5, r


def test_a_drifting_lag_in_high_band_content_is_not_a_fault():
    """Content mostly in 16-22 kHz (the band the daemon writes), played 300 ppm fast (the
    drift control): the lag moves by a sample every 20 ms window, so at any one whole-sample
    lag such a window correlates well below 1 with no fault (0.92 here). At the tracked lag,
    interpolated through the window, it matches."""
    rng = np.random.default_rng(5)
    n, ppm = 3 * RATE, 300.0
    f = np.concatenate([rng.uniform(16000, 22000, 120), rng.uniform(200, 2000, 8)])
    a = np.concatenate([np.full(120, 1.0), np.full(8, 0.4)])
    ph = rng.uniform(0, 2 * np.pi, f.size)
    t_ref = np.arange(n) / RATE
    t_rec = (np.arange(n + 3000) - 3000) * (1 - ppm * 1e-6) / RATE  # rec index = ref index x (1 + ppm) + 3000

    def x(t):
        out = np.zeros_like(t)
        for fk, ak, pk in zip(f, a, ph):
            out += ak * np.sin(2 * np.pi * fk * t + pk)
        return out

    ref = 0.02 * x(t_ref)
    rec = np.concatenate([0.02 * x(t_rec) * (t_rec >= 0), np.zeros(RATE // 2)])
    r = align_to_reference(rec, ref, RATE)
    assert r["lag_jumps"] == 0 and abs(r["lag_end"] - r["lag_start"] - ppm * 1e-6 * n) < 50, r
    assert r["min_window_corr"] > 0.99 and r["worst_50ms_snr_db"] > 30, r
