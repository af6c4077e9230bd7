"""Drift control: a simulated hour with a playback clock 500 ppm fast, and one 500 ppm slow.

The real Pipeline (rings, engine, drift controller, rate adjuster) is driven by simulated
callbacks: the capture device delivers 384-frame chunks at exactly 44100 Hz, the playback
device takes 1536-frame chunks at 176400 Hz * (1 +- 500e-6), and the worker wakes every
5 ms of simulated time. The signal is a sine, so its own largest sample-to-sample step is
known; the output may never step further than that.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import pytest

from rtupscale import FACTOR
from rtupscale.audio.drift import DriftController, RateAdjuster
from rtupscale.dsp import kernels
from rtupscale.audio.pipeline import Pipeline
from rtupscale.audio.rings import FrameRing, cbuffer
from rtupscale.dsp.interp import LATENCY

RATE = 44100
OUT_RATE = FACTOR * RATE
BLOCK = 1024
CAP_CHUNK = 384
PLAY_CHUNK = 1536
WAKE_S = 0.005
PREFILL = int(0.030 * OUT_RATE)
PERIOD = 64  # the sine: 44100 / 64 = 689 Hz, an integer period at the capture rate
AMP = 0.5
SETTLE_S = 120.0
BAND_FRAMES = int(0.0015 * OUT_RATE)  # the smoothed level must stay within +-1.5 ms of target


class ToneEngine:
    """A perfect x4 upsampler for the test sine (it continues the sine at 4x the rate),
    with the engine contract the Pipeline needs. The real engine is not under test here,
    and its cost would make a simulated hour take minutes."""

    def __init__(self, channels: int, block: int):
        self.latency = LATENCY
        self.resets = 0
        n = FACTOR * PERIOD
        self._table = (AMP * np.sin(2 * np.pi * np.arange(n) / n)).astype(np.float32)
        self._idx = np.zeros(FACTOR * block, np.intp)
        self._base = np.arange(FACTOR * block)
        self._phase = 0
        self._out = np.zeros((channels, FACTOR * block), np.float32)

    def process(self, block):
        n = FACTOR * PERIOD
        np.add(self._base, self._phase, out=self._idx)
        np.remainder(self._idx, n, out=self._idx)
        np.take(self._table, self._idx, out=self._out[0])
        self._out[1:] = self._out[0]
        self._phase = (self._phase + self._out.shape[1]) % n
        return self._out

    def request_reset(self):
        self.resets += 1


def simulate(ppm: float, seconds: float, control: bool = True, pause: tuple[float, float] | None = None) -> dict:
    """``pause``: (at, seconds): the playback device takes nothing for that long, once (a
    sound server that stalled and resumed): the level jumps by that much."""
    channels = 1
    cap_ring = FrameRing(channels, 8 * BLOCK)
    play_ring = FrameRing(channels, 4 * PREFILL + 8 * FACTOR * BLOCK)
    engine = ToneEngine(channels, BLOCK)
    pipe = Pipeline(engine, channels, RATE, BLOCK, cap_ring, play_ring, PREFILL)
    pipe.prefill()
    if not control:
        pipe.drift.update = lambda level, dt: 1.0

    table = (AMP * np.sin(2 * np.pi * np.arange(PERIOD) / PERIOD)).astype(np.float32)
    chunk_idx = np.zeros(CAP_CHUNK, np.intp)
    base_idx = np.arange(CAP_CHUNK)
    cap_buf = np.zeros((CAP_CHUNK, channels), np.float32)
    cap_c = cbuffer(cap_buf)
    play_buf = np.zeros((PLAY_CHUNK, channels), np.float32)
    play_c = cbuffer(play_buf)
    own_step = 2 * AMP * math.sin(math.pi / (PERIOD * FACTOR))  # the sine's largest step at 4x

    cap_period = CAP_CHUNK / RATE
    play_period = PLAY_CHUNK / (OUT_RATE * (1 + ppm * 1e-6))
    events = [(cap_period, 0), (play_period, 1), (WAKE_S, 2)]
    cap_phase = 0
    last = 0.0
    max_step = 0.0
    underflows = overflows = 0
    underflow_times = []
    corr_sum = 0.0
    corr_n = 0
    min_ema, max_ema = math.inf, -math.inf
    ratios = []
    levels = []  # (t, smoothed level) at each wake-up
    paused = False
    started = False  # the first samples out are the prefill's silence, then the fade-in of the filter
    while True:
        t, kind = heapq.heappop(events)
        if t > seconds:
            break
        if kind == 0:
            np.add(base_idx, cap_phase, out=chunk_idx)
            np.remainder(chunk_idx, PERIOD, out=chunk_idx)
            np.take(table, chunk_idx, out=cap_buf[:, 0])
            cap_phase = (cap_phase + CAP_CHUNK) % PERIOD
            if cap_ring.write(cap_c, CAP_CHUNK) < CAP_CHUNK:
                overflows += 1
            heapq.heappush(events, (t + cap_period, 0))
        elif kind == 1:
            if pipe.counters.blocks == 0:  # the daemon arms playback with the first block
                heapq.heappush(events, (t + play_period, 1))
                continue
            if pause is not None and not paused and t >= pause[0]:
                paused = True
                heapq.heappush(events, (t + pause[1], 1))
                continue
            got = play_ring.read(play_c, PLAY_CHUNK)
            if got < PLAY_CHUNK:
                underflows += 1
                underflow_times.append(round(t, 3))
            x = play_buf[:got, 0]
            if started and got:
                max_step = max(max_step, abs(float(x[0]) - last), float(np.abs(np.diff(x)).max()))
            if got:
                last = float(x[-1])
            started = True
            heapq.heappush(events, (t + play_period, 1))
        else:
            pipe.sample_levels(t)
            while pipe.step():
                if t > SETTLE_S:  # the ratio each block was resampled with
                    corr_sum += pipe.step_ratio - 1.0
                    corr_n += 1
            if t > SETTLE_S:
                ema = pipe.drift.state.level_ema
                min_ema, max_ema = min(min_ema, ema), max(max_ema, ema)
            if int(t / 60) != int((t - WAKE_S) / 60):
                ratios.append(pipe.step_ratio)
            levels.append((t, pipe.drift.state.level_ema))
            heapq.heappush(events, (t + WAKE_S, 2))
    return dict(
        underflows=underflows,
        overflows=overflows,
        min_ema=min_ema,
        max_ema=max_ema,
        max_step=max_step,
        own_step=own_step,
        resets=engine.resets,
        late_skips=pipe.counters.late_skips,
        playback_full=pipe.counters.playback_full,
        mean_correction_ppm=1e6 * corr_sum / max(corr_n, 1),
        underflow_times=underflow_times,
        ratios=ratios,
        levels=np.asarray(levels),
        max_correction_ppm=1e6 * max(abs(r - 1.0) for r in ratios) if ratios else 0.0,
    )


@pytest.mark.slow
@pytest.mark.parametrize("ppm", [500.0, -500.0])
def test_simulated_hour_holds_the_level_without_steps(ppm):
    r = simulate(ppm, 3600.0)
    assert r["underflows"] == 0 and r["overflows"] == 0, r
    assert r["late_skips"] == 0 and r["playback_full"] == 0 and r["resets"] == 0, r
    assert PREFILL - BAND_FRAMES <= r["min_ema"] and r["max_ema"] <= PREFILL + BAND_FRAMES, (
        f"level left target {PREFILL} +- {BAND_FRAMES}: {r['min_ema']:.0f} .. {r['max_ema']:.0f}"
    )
    # The controller found the clock ratio: a fast playback clock takes more frames, so we
    # make more output per input (step < 1), a correction of about -ppm on average.
    assert r["mean_correction_ppm"] == pytest.approx(-ppm, abs=10), r["mean_correction_ppm"]
    assert r["max_step"] <= 1.01 * r["own_step"], (r["max_step"], r["own_step"])


def test_a_level_jump_is_removed_within_seconds_without_steps():
    """A 15 ms stall of the playback side (the level jumps up by 15 ms, as when a sound
    server paused our stream) is not drift: the controller takes it out by rate in a few
    seconds (the PI loop alone, at its 2000 ppm limit, would need 8 s and more), with no
    step in the signal, and its clock estimate is not thrown off."""
    at, stall = 150.0, 0.015
    r = simulate(500.0, 175.0, pause=(at, stall))
    assert r["underflows"] == 0 and r["overflows"] == 0 and r["resets"] == 0, r
    t, lev = r["levels"][:, 0], r["levels"][:, 1]
    before = lev[(t > at - 10) & (t < at)]
    assert np.all(np.abs(before - PREFILL) <= BAND_FRAMES)
    window = (t >= at) & (t < at + 3)
    peak = lev[window].max()
    assert peak > PREFILL + 0.5 * stall * OUT_RATE, "the stall did not raise the level: the test tests nothing"
    t_peak = t[window][np.argmax(lev[window])]
    back = t[(t > t_peak) & (np.abs(lev - PREFILL) <= BAND_FRAMES)]
    assert back.size and back[0] - at < 5.0, f"level back within {BAND_FRAMES} frames only after {back[0] - at if back.size else None} s"
    after = lev[t > at + 6]
    assert np.all(np.abs(after - PREFILL) <= BAND_FRAMES), (after.min(), after.max())
    assert r["max_step"] <= 1.01 * r["own_step"], (r["max_step"], r["own_step"])


def test_without_drift_control_the_same_clocks_run_dry():
    """The check above can fail: with the ratio pinned at 1, 500 ppm drains the cushion."""
    r = simulate(500.0, 120.0, control=False)
    assert r["underflows"] > 0


def test_rate_adjuster_is_exact_at_unity():
    ra = RateAdjuster(2, 512)
    x = np.random.default_rng(0).standard_normal((2, 512 * 8)).astype(np.float32)
    y = np.concatenate([ra.process(x[:, i * 512:(i + 1) * 512], 1.0).copy() for i in range(8)])
    assert y.shape == (512 * 8, 2)
    np.testing.assert_array_equal(y[RateAdjuster.HISTORY_DELAY:].T, x[:, : -RateAdjuster.HISTORY_DELAY])


def _resample_tone(f: float, step: float, native: bool, fs: float = OUT_RATE, block: int = 1024, blocks: int = 64):
    """A full-scale tone through the adjuster at a fixed ``step``; returns (output, the ideal)."""
    x = np.sin(2 * np.pi * f * np.arange(block * blocks) / fs).astype(np.float32)[None]
    ra = RateAdjuster(1, block, native=native)
    y = np.concatenate([ra.process(x[:, i * block:(i + 1) * block], step)[:, 0].copy() for i in range(blocks)])
    ref = np.sin(2 * np.pi * f * (np.arange(len(y)) * step - RateAdjuster.HISTORY_DELAY) / fs)
    skip = 2 * RateAdjuster.HALF  # the start, read from the zeroed history
    return y[skip:].astype(np.float64), ref[skip:]


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=pytest.mark.skipif(
    not kernels.available(), reason=kernels.why_not() or "C loops built"))])
@pytest.mark.parametrize("f", [10000.0, 15000.0, 20000.0])
def test_rate_adjuster_error_and_images_below_100_db(f, native):
    """A full-scale tone at 176.4 kHz, resampled by 1.0001 (100 ppm, a drift the control
    corrects routinely): the output is the ideal tone within -100 dB sample by sample, and
    its spectrum has nothing above -100 dB outside the tone (images, aliases, noise)."""
    step = 1.0001
    y, ref = _resample_tone(f, step, native)
    assert abs(len(y) + 2 * RateAdjuster.HALF - 1024 * 64 / step) <= 2
    err_db = 20 * np.log10(np.abs(y - ref).max())
    assert err_db <= -100.0, f"error {err_db:.1f} dB"
    n = 1 << 15
    w = np.kaiser(n, 20.0)  # sidelobes far below -100 dB
    spec = np.abs(np.fft.rfft(y[:n] * w))
    spec_db = 20 * np.log10(spec / spec.max() + 1e-300)
    tone_bin = int(round(f * step * n / OUT_RATE))
    assert abs(int(np.argmax(spec)) - tone_bin) <= 1
    spur = np.delete(spec_db, np.arange(tone_bin - 24, tone_bin + 25))
    assert spur.max() <= -100.0, f"a spurious component at {spur.max():.1f} dB"


def test_rate_adjuster_tone_check_can_fail():
    """The check above sees a worse resampler: linear interpolation fails it."""
    f, step, fs = 15000.0, 1.0001, OUT_RATE
    t = np.arange(20000) * step
    x = np.sin(2 * np.pi * f * np.arange(20100) / fs)
    i = np.floor(t).astype(int)
    a = t - i
    y = x[i] * (1 - a) + x[i + 1] * a
    assert 20 * np.log10(np.abs(y - np.sin(2 * np.pi * f * t / fs)).max()) > -100.0


def test_controller_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        DriftController(0, 100)
    with pytest.raises(ValueError, match="step"):
        RateAdjuster(1, 16).process(np.zeros((1, 16), np.float32), 1.5)


def test_what_the_server_is_owed_counts_against_the_ring_level():
    """On the native streams the ring cannot go below empty: what the sound server asked
    for and has not got yet is the rest of the deficit, and its queue is short by that
    much. The drift control sees the ring's level less what is owed. With the ring at its
    target and 2 ms owed, it makes more output per input (step < 1). With nothing owed the
    same ring holds still. (Seen without this: at a 1 ms pre-fill the ring sat at its
    target while the server's queue drained within a minute.)"""
    block, prefill = 128, int(0.001 * OUT_RATE)

    def run(owed: int) -> Pipeline:
        pipe = Pipeline(ToneEngine(1, block), 1, RATE, block, FrameRing(1, 4096), FrameRing(1, 1 << 14), prefill)
        pipe.prefill()
        assert pipe.playback.fill == prefill
        for k in range(1, 401):  # 2 s of wake-ups, no block processed: the ring stays at its target
            pipe.sample_levels(0.005 * k, owed=owed)
        return pipe

    held, short = run(0), run(int(0.002 * OUT_RATE))
    assert held.step_ratio == 1.0 and held.drift.state.level_ema == pytest.approx(prefill)
    assert short.drift.state.level_ema < prefill - 0.8 * 0.002 * OUT_RATE, short.drift.state
    assert short.step_ratio < 1.0 - 200e-6, short.step_ratio
    assert short.min_fill == held.min_fill == prefill  # status shows the ring's own level
