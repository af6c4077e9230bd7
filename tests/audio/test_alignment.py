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
