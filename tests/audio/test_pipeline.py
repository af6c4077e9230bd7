"""The worker's pipeline without a sound server: rings driven by the test."""

from __future__ import annotations

import numpy as np

from rtupscale import FACTOR
from rtupscale.audio.drift import RateAdjuster
from rtupscale.audio.pipeline import Pipeline
from rtupscale.audio.rings import FrameRing, cbuffer
from rtupscale.dsp.interp import interpolate
from rtupscale.engine import Engine

RATE = 44100
CH = 2


def _sine(n: int, f: float = 997.0) -> np.ndarray:
    t = np.arange(n) / RATE
    x = 0.5 * np.sin(2 * np.pi * f * t)
    return np.stack([x, 0.8 * x]).astype(np.float32)  # [CH, n]


def _rings(prefill: int):
    cap = FrameRing(CH, 1 << 15)
    play = FrameRing(CH, 1 << 20)
    return cap, play


def _feed(cap: FrameRing, x: np.ndarray) -> None:
    buf = np.ascontiguousarray(x.T)
    assert cap.write(cbuffer(buf), buf.shape[0]) == buf.shape[0]


def _run(p: Pipeline, cap: FrameRing, x: np.ndarray, consume=None) -> None:
    """Feed ``x`` one block at a time (a capture device would), processing as it comes."""
    b = p.block_size
    for i in range(0, x.shape[1] - b + 1, b):
        _feed(cap, x[:, i:i + b])
        while p.step():
            if consume is not None:
                consume()


class _Device:
    """Takes everything written to the playback ring, as a device would over time."""

    def __init__(self, play: FrameRing):
        self.play, self.chunks = play, []

    def __call__(self):
        self.chunks.append(_drain(self.play))

    def output(self) -> np.ndarray:
        self()
        return np.concatenate(self.chunks)


def _drain(play: FrameRing) -> np.ndarray:
    n = play.fill
    out = np.zeros((n, CH), np.float32)
    assert play.read(cbuffer(out), n) == n
    return out


def test_switching_block_size_continues_the_stream_exactly():
    """A reload with a new block size: the new pipeline adopts the old one's state and is
    primed with recent input, so the output is the same stream as one offline call."""
    x = _sine(256 * 40)
    cap, play = _rings(0)
    a = Pipeline(Engine(CH, RATE, 256), CH, RATE, 256, cap, play, prefill_frames=0)
    dev = _Device(play)
    _run(a, cap, x[:, : 256 * 20], dev)
    b = Pipeline(Engine(CH, RATE, 128), CH, RATE, 128, cap, play, prefill_frames=0)
    b.adopt(a)
    _run(b, cap, x[:, 256 * 20:], dev)
    y = dev.output().T  # [CH, 4 * n]
    ref = interpolate(x)
    lat = FACTOR * Engine(CH, RATE, 256).latency + RateAdjuster.HISTORY_DELAY
    got = y[:, lat:]
    n = min(got.shape[1], ref.shape[1])
    assert n > FACTOR * 256 * 35
    err = np.abs(got[:, :n] - ref[:, :n]).max()
    assert err < 1e-5, err
    assert b.counters is a.counters and b.counters.blocks == 20 + 2 * 20 and b.counters.late_skips == 0


def test_fade_out_is_smooth_and_ends_in_silence():
    x = _sine(256 * 30)
    cap, play = _rings(0)
    p = Pipeline(Engine(CH, RATE, 256), CH, RATE, 256, cap, play, prefill_frames=0)
    dev = _Device(play)
    _run(p, cap, x[:, : 256 * 10], dev)
    p.begin_fade_out(int(0.02 * FACTOR * RATE))
    _run(p, cap, x[:, 256 * 10:], dev)
    assert p.faded
    y = dev.output()[FACTOR * 512:]  # after the filter's start-up from silence
    own = np.abs(np.diff(y[: FACTOR * 1024], axis=0)).max()
    assert np.abs(np.diff(y, axis=0)).max() <= 1.01 * own
    assert np.all(y[-FACTOR * 256 * 10:] == 0.0)


def test_a_level_jump_is_cut_with_fades():
    """A playback ring far over its target (a server that rendered ahead in silence): output
    is dropped until the level is back, faded out before and in after, and counted."""
    x = _sine(256 * 60)
    cap, play = _rings(0)
    prefill = int(0.02 * FACTOR * RATE)
    p = Pipeline(Engine(CH, RATE, 256), CH, RATE, 256, cap, play, prefill_frames=prefill)
    backlog = np.zeros((p.drop_above + 10, CH), np.float32)
    play.write(cbuffer(backlog), backlog.shape[0])
    consumed = []

    def consume():  # the device takes one block's worth per block
        out = np.zeros((FACTOR * 256, CH), np.float32)
        consumed.append(out[: play.read(cbuffer(out), FACTOR * 256)].copy())

    _run(p, cap, x, consume)
    assert p.counters.drops == 1 and p.counters.dropped_blocks > 0
    y = np.concatenate(consumed + [_drain(play)])
    live = y[np.flatnonzero(np.abs(y[:, 0]) > 0)[0]:]
    own = 2 * 0.5 * np.sin(np.pi * 997.0 / (FACTOR * RATE))
    assert np.abs(np.diff(live, axis=0)).max() <= 1.05 * own


def test_block_size_reload_with_a_model_has_no_step(quiet_model):
    """The daemon's reload with a new block size: the old engine fades its model out, the
    new pipeline takes over at model gain 0 and must fade its model in (not start on it:
    a model that differs from the plain path would step). quiet_model is at 0.6x gain."""
    from rtupscale.model.runner import ModelRunner

    x = _sine(256 * 120)
    cap, play = _rings(0)
    a = Pipeline(Engine(CH, RATE, 256, ModelRunner(quiet_model)), CH, RATE, 256, cap, play, prefill_frames=0)
    dev = _Device(play)
    _run(a, cap, x[:, : 256 * 30], dev)
    a.engine.set_bypass(True)  # what Daemon._apply does, then the worker waits for gain 0
    i = 256 * 30
    while a.engine.model_gain > 0.0:
        _run(a, cap, x[:, i:i + 256], dev)
        i += 256
    b = Pipeline(Engine(CH, RATE, 128, ModelRunner(quiet_model)), CH, RATE, 128, cap, play, prefill_frames=0)
    b.adopt(a)
    assert b.engine.model_gain == 0.0  # takes over where the old one is: on the plain path
    _run(b, cap, x[:, i:], dev)
    assert b.engine.model_gain == 1.0  # and fades its model in
    y = dev.output()[FACTOR * 2048:]
    own = 2 * 0.5 * np.sin(np.pi * 997.0 / (FACTOR * RATE))  # the sine's largest step
    steps = np.abs(np.diff(y, axis=0)).max()
    assert steps <= 1.02 * own, (steps, own)


def _cosine(n: int, f: float = 997.0) -> np.ndarray:
    """A tone that starts at its peak: a step from silence."""
    t = np.arange(n) / RATE
    x = 0.5 * np.cos(2 * np.pi * f * t)
    return np.stack([x, 0.8 * x]).astype(np.float32)


def _through(x: np.ndarray, fade_in_frames: int) -> np.ndarray:
    cap, play = _rings(0)
    p = Pipeline(Engine(CH, RATE, 256), CH, RATE, 256, cap, play, prefill_frames=0, fade_in_frames=fade_in_frames)
    dev = _Device(play)
    _run(p, cap, x, dev)
    return dev.output()


def test_a_session_that_starts_into_sound_fades_it_in():
    """Apps playing as the session opens: the first sound comes in over the fade, not as a
    step from silence; after START_SETTLE_S of silence a sound's onset is left as it is."""
    from rtupscale.audio.pipeline import START_SETTLE_S

    fade = int(0.02 * FACTOR * RATE)
    own = 2 * 0.5 * np.sin(np.pi * 997.0 / (FACTOR * RATE))  # the tone's largest step per output sample
    x = _cosine(256 * 40)
    stepped = _through(x, 0)
    faded = _through(x, fade)
    assert np.abs(np.diff(stepped, axis=0)).max() > 3 * own  # without the fade: a click (the test can fail)
    assert np.abs(np.diff(faded, axis=0)).max() <= 1.05 * own
    assert np.array_equal(faded[2 * fade:], stepped[2 * fade:])  # after the fade, the same output
    # the same onset after silence longer than START_SETTLE_S: untouched
    quiet = np.zeros((CH, 256 * int(np.ceil(START_SETTLE_S * RATE / 256) + 4)), np.float32)
    late = np.concatenate([quiet, x], axis=1)
    assert np.array_equal(_through(late, fade), _through(late, 0))


def test_a_fade_out_during_the_fade_in_starts_where_the_gain_is():
    x = _cosine(256 * 40)
    cap, play = _rings(0)
    fade = int(0.02 * FACTOR * RATE)
    p = Pipeline(Engine(CH, RATE, 256), CH, RATE, 256, cap, play, prefill_frames=0, fade_in_frames=fade)
    dev = _Device(play)
    _run(p, cap, x[:, :512], dev)  # 2048 of the 3528 output frames of the fade in
    p.begin_fade_out(fade)
    _run(p, cap, x[:, 512:], dev)
    y = dev.output()
    own = 2 * 0.5 * np.sin(np.pi * 997.0 / (FACTOR * RATE))
    assert p.faded and np.abs(np.diff(y, axis=0)).max() <= 1.05 * own
