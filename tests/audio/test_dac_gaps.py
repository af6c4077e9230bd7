"""The DAC gap check (PipeWire): a graph cycle that played silence in our place shows as a
read index left a quantum behind the clock; sampled timing updates find it."""

from __future__ import annotations

import numpy as np

from rtupscale.audio.dac_gaps import DacGapDetector

RATE, Q = 176400, 512


def run(seconds: float, gaps: dict[float, int], ppm: float = 0.0, seed: int = 0, every: float = 0.25):
    """A graph of quantum Q at RATE (its clock ``ppm`` off the server's), sampled every
    ``every`` s at a random phase; ``gaps``: {time s: cycles skipped}. Returns the gaps found."""
    rng = np.random.default_rng(seed)
    det = DacGapDetector(RATE)
    found, skipped, t = [], 0, 0.0
    pending = sorted(gaps.items())
    while t < seconds:
        t += every + rng.uniform(-0.003, 0.003)
        while pending and pending[0][0] <= t:
            skipped += pending.pop(0)[1]
        cycles = int(t * RATE * (1 + ppm * 1e-6) / Q) - skipped
        read = cycles * Q
        found += det.add(read, read + 4762, t)
    return det, found


def test_no_gap_is_found_where_there_is_none_even_with_drift():
    for ppm in (0.0, 150.0, -150.0):
        det, found = run(1800.0, {}, ppm=ppm, seed=1)  # half an hour of updates
        assert found == [], (ppm, found)
        assert det.quantum == Q


def test_one_skipped_cycle_is_one_gap_of_one_quantum():
    det, found = run(30.0, {10.0: 1}, seed=2)
    assert [g.frames for g in found] == [Q]
    assert 10.0 < found[0].at_s < 12.5  # within a couple of seconds
    assert found[0].queued_frames == 4762  # the audio was in the server's queue


def test_an_80_ms_stall_is_one_gap_of_its_size_at_once():
    cycles = round(0.080 * RATE / Q)
    det, found = run(30.0, {10.0: cycles}, seed=3)
    assert len(found) == 1 and abs(found[0].frames - cycles * Q) <= Q, found
    assert found[0].at_s < 10.8


def test_gaps_a_few_seconds_apart_are_each_counted():
    det, found = run(60.0, {10.0: 1, 14.0: 1, 18.0: 4, 30.0: 1}, seed=4)
    assert [g.frames for g in found] == [Q, Q, 4 * Q, Q], found


def test_a_read_index_that_goes_back_restarts_it():
    det = DacGapDetector(RATE)
    assert det.add(10 * Q, 11 * Q, 1.0) == [] and det.add(5 * Q, 6 * Q, 1.25) == []
