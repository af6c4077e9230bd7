"""The streaming engine: streaming equals offline, seamless switches, guard, limiter."""

import numpy as np
import pytest

from rtupscale.dsp.interp import LATENCY as INTERP_LATENCY, interpolate
from rtupscale.dsp.limiter import db_to_gain
from rtupscale.engine import Engine
from rtupscale.model.runner import ModelRunner
from tests.signals import run_blocks, tone

RATE = 44100
N = 10000  # not a multiple of the block sizes


def _engine(model, block, **kw):
    runner = ModelRunner(model) if model is not None else None
    return Engine(2, RATE, block, runner, **kw)


def _offline(model, x, **kw):
    """One engine call over the whole signal (padded to the model's block multiple, 16)."""
    pad = (-x.shape[1]) % 16
    xp = np.concatenate([x, np.zeros((2, pad), np.float32)], axis=1)
    return _engine(model, xp.shape[1], **kw).process(xp)[:, : 4 * x.shape[1]].copy()


def _max_step(y):
    return float(np.abs(np.diff(y, axis=1)).max())


# A crossfade's own slope adds g'(n) * (new - old) to the step: about 1e-4 of it here,
# while a click (a hard switch between these paths) is over 20x the signal's step.
STEP_MARGIN = 1.01


@pytest.mark.parametrize("block", [64, 256, 1024])
def test_streaming_equals_offline(fir_model, rng, block):
    x = (0.2 * rng.standard_normal((2, N))).astype(np.float32)
    once = _offline(fir_model, x)
    streamed = run_blocks(_engine(fir_model, block).process, x, block)
    diff = np.abs(streamed - once).max()
    assert diff <= 1e-5, diff


def test_streaming_equals_offline_bypass_only(rng):
    x = (0.2 * rng.standard_normal((2, N))).astype(np.float32)
    once = _offline(None, x)
    streamed = run_blocks(_engine(None, 100).process, x, 100)
    assert np.abs(streamed - once).max() <= 1e-5


def test_output_is_aligned_at_engine_latency(fir_model):
    x = tone(1000, RATE, N)
    eng = _engine(None, 256)
    y = run_blocks(eng.process, x, 256)
    lat = 4 * eng.latency
    ref = interpolate(x)
    assert eng.latency == INTERP_LATENCY
    assert np.abs(y[:, lat:] - ref[:, : ref.shape[1] - lat]).max() <= 1e-5


def _switch_run(model, action, block=256, frames=RATE):
    """A low tone through the engine; ``action(engine)`` is applied at the middle block."""
    x = tone(200, RATE, frames, amp=0.5)
    eng = _engine(model, block, crossfade_ms=20)
    outs = []
    for i in range(0, frames - block + 1, block):
        if i == (frames // 2 // block) * block:
            action(eng)
        outs.append(eng.process(x[:, i:i + block]).copy())
    return eng, np.concatenate(outs, axis=1)


def _own_step(model):
    """The largest sample-to-sample step of the signal on either path alone."""
    steady_model = _switch_run(model, lambda e: None)[1]
    steady_bypass = _switch_run(None, lambda e: None)[1]
    lat = 4 * 2 * INTERP_LATENCY  # skip the start
    return max(_max_step(steady_model[:, lat:]), _max_step(steady_bypass[:, lat:])), steady_model, steady_bypass


def test_bypass_toggle_has_no_step(quiet_model):
    own, steady_model, steady_bypass = _own_step(quiet_model)
    # A hard switch would jump by the paths' difference: far more than the signal's own step.
    assert np.abs(steady_model - steady_bypass)[:, 4000:].max() > 20 * own
    eng, y = _switch_run(quiet_model, lambda e: e.set_bypass(True))
    assert eng.model_gain == 0.0
    assert _max_step(y[:, 4000:]) <= STEP_MARGIN * own
    eng, y = _switch_run(quiet_model, lambda e: (e.set_bypass(True), e.set_bypass(False)))
    assert _max_step(y[:, 4000:]) <= STEP_MARGIN * own


def test_bypass_off_returns_to_model_seamlessly(quiet_model):
    own, _, _ = _own_step(quiet_model)
    x = tone(200, RATE, RATE, amp=0.5)
    eng = _engine(quiet_model, 256, crossfade_ms=20)
    outs = []
    for k, i in enumerate(range(0, RATE - 256 + 1, 256)):
        if k == 40:
            eng.set_bypass(True)
        if k == 80:
            eng.set_bypass(False)
        outs.append(eng.process(x[:, i:i + 256]).copy())
    y = np.concatenate(outs, axis=1)
    assert eng.model_gain == 1.0
    assert _max_step(y[:, 4000:]) <= STEP_MARGIN * own


def test_bypass_after_model_only_blocks_is_the_plain_path_exactly(quiet_model, rng):
    # While the model alone is heard the interpolator only keeps its history; bypassed,
    # the output must be what it is when the interpolator runs on every block (through
    # the fade too), and after the fade the bypass-only engine's, sample for sample.
    block = 256
    x = (0.2 * rng.standard_normal((2, 120 * block))).astype(np.float32)
    eng, always, plain = _engine(quiet_model, block), _engine(quiet_model, block), _engine(None, block)
    always._interp.push = always._interp.process  # the interpolator runs on every block
    fade_blocks = -(-round(0.020 * 4 * RATE) // (4 * block))
    for k in range(120):
        if k == 60:
            eng.set_bypass(True)
            always.set_bypass(True)
        chunk = x[:, k * block:(k + 1) * block]
        y = eng.process(chunk.copy()).copy()
        np.testing.assert_array_equal(y, always.process(chunk.copy()))
        ref = plain.process(chunk.copy())
        if k < 60:
            assert not np.array_equal(y, ref)  # the model is heard
        elif k > 60 + fade_blocks:
            np.testing.assert_array_equal(y, ref)


def test_state_reset_is_crossfaded(quiet_model):
    own, _, _ = _own_step(quiet_model)
    eng, y = _switch_run(quiet_model, lambda e: e.request_reset())
    assert eng.counters.resets == 1
    assert eng.model_gain == 1.0  # faded back in after the reset
    assert _max_step(y[:, 4000:]) <= STEP_MARGIN * own


def test_model_swap_is_crossfaded(quiet_model, fir_model):
    own, _, _ = _own_step(quiet_model)
    own_fir = _max_step(_switch_run(fir_model, lambda e: None)[1][:, 4000:])
    new = ModelRunner(fir_model)
    eng, y = _switch_run(quiet_model, lambda e: e.swap_runner(new))
    assert eng.counters.swaps == 1 and eng.runner is new
    assert _max_step(y[:, 4000:]) <= STEP_MARGIN * max(own, own_fir)


def test_swap_refuses_model_with_more_latency(fir_model, windowed_model, model_dir):
    eng = _engine(None, 64)  # latency = interpolator's 72
    from tests.onnx_models import stateful_fir

    slow = stateful_fir(model_dir / "slow.onnx", extra_meta={"latency": "500"})
    with pytest.raises(ValueError, match="latency 500 exceeds the engine's 72"):
        eng.swap_runner(ModelRunner(slow))


@pytest.mark.parametrize("fixture", ["nan_model", "loud_model"])
def test_guard_replaces_bad_blocks_with_bypass(fixture, request):
    model = request.getfixturevalue(fixture)
    x = tone(1000, RATE, 8192, amp=0.5)
    eng = _engine(model, 256)
    y = run_blocks(eng.process, x, 256)
    ref = run_blocks(_engine(None, 256).process, x, 256)
    assert np.isfinite(y).all()
    assert eng.counters.guard_events == eng.counters.blocks == 32
    assert np.abs(y - ref).max() <= 1e-6  # every block came from the bypass path


def test_guard_after_swap_to_bad_model_keeps_output_finite(fir_model, nan_model):
    x = tone(1000, RATE, 16384, amp=0.5)
    eng = _engine(fir_model, 256)
    outs = []
    for k, i in enumerate(range(0, 16384, 256)):
        if k == 10:
            eng.swap_runner(ModelRunner(nan_model))
        outs.append(eng.process(x[:, i:i + 256]).copy())
    y = np.concatenate(outs, axis=1)
    assert np.isfinite(y).all() and eng.counters.guard_events > 0


def test_limiter_keeps_hot_model_under_ceiling(hot_model):
    x = tone(1000, RATE, 8192, amp=0.95)
    eng = _engine(hot_model, 256, ceiling_dbfs=-1.0)
    y = run_blocks(eng.process, x, 256)
    ceiling = db_to_gain(-1.0)
    assert np.abs(y).max() < ceiling
    assert eng.counters.limited_samples > 0 and eng.counters.guard_events == 0
    # Without the clipper the model's output would have gone over the ceiling.
    raw = _engine(hot_model, 256, ceiling_dbfs=0.0)
    assert np.abs(run_blocks(raw.process, x, 256)).max() > ceiling


def test_quiet_signal_passes_the_limiter_untouched(fir_model, rng):
    x = (0.05 * rng.standard_normal((2, 4096))).astype(np.float32)
    eng = _engine(fir_model, 256)
    run_blocks(eng.process, x, 256)
    assert eng.counters.limited_samples == 0


def test_rejects_bad_arguments(fir_model):
    with pytest.raises(ValueError, match="not a multiple"):
        _engine(fir_model, 100)
    with pytest.raises(ValueError, match="does not accept 22050 Hz"):
        Engine(2, 22050, 256, ModelRunner(fir_model))
    with pytest.raises(ValueError, match="crossfade_ms"):
        _engine(None, 256, crossfade_ms=0)
