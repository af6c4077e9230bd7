"""The worker's path allocates nothing per block: 1000 steps under tracemalloc.

What numpy still allocates inside a reduction (``max``/``min``: about 1 kB of iterator
state, freed at once) is allowed; a temporary of a block's size (the smallest here,
[2, 1024] float32, is 8 kB) is not, nor any growth.
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from rtupscale import FACTOR
from rtupscale.audio.pipeline import Pipeline
from rtupscale.audio.rings import FrameRing, cbuffer
from rtupscale.engine import Engine
from rtupscale.model.runner import ModelRunner

RATE, CH, BLOCK = 44100, 2, 256
PEAK_LIMIT = 4096
"""Bytes above the baseline any moment of 1000 steps may hold: half the smallest block buffer."""
GROWTH_LIMIT = 1024
"""Bytes the 1000 steps may leave behind (Python's int counters grow; buffers must not)."""


def _worker_steps(pipe: Pipeline, cap: FrameRing, play: FrameRing, n: int, x_c, out, out_c) -> None:
    """What the worker does per block with streams that deliver a block at a time."""
    for _ in range(n):
        cap.write(x_c, BLOCK)  # the capture callback
        pipe.sample_levels(time.monotonic(), True, cap_level=cap.fill, owed=0.0)
        while pipe.step():
            pass
        play.read(out_c, min(play.fill, out.shape[0]))  # the playback callback


@pytest.mark.parametrize("model_fixture", [None, "fir_model"])
@pytest.mark.parametrize("level", [0.1, 1.5])  # below the limiter's knee, and clipped
def test_1000_worker_steps_allocate_nothing(model_fixture, level, request):
    runner = ModelRunner(request.getfixturevalue(model_fixture)) if model_fixture else None
    engine = Engine(CH, RATE, BLOCK, runner)
    cap, play = FrameRing(CH, 1 << 14), FrameRing(CH, 1 << 16)
    pipe = Pipeline(engine, CH, RATE, BLOCK, cap, play, 2048)
    rng = np.random.default_rng(0)
    x = np.ascontiguousarray((level * rng.uniform(-1, 1, (BLOCK, CH))).astype(np.float32))
    out = np.zeros((2 * FACTOR * BLOCK, CH), np.float32)
    x_c, out_c = cbuffer(x), cbuffer(out)
    pipe.prefill(0)
    _worker_steps(pipe, cap, play, 50, x_c, out, out_c)  # first calls allocate their scratch
    pipe.step_ratio = 1.0002  # the drift control at work: the rate adjuster interpolates
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        _worker_steps(pipe, cap, play, 1000, x_c, out, out_c)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert pipe.counters.blocks >= 1000
    if level > 1:
        assert engine.counters.limited_samples > 0  # the clipping path ran too
    assert peak - before < PEAK_LIMIT, f"a step allocated a temporary: peak {peak - before} bytes"
    assert current - before < GROWTH_LIMIT, f"1000 steps left {current - before} bytes behind"
