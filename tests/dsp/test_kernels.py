"""The C loops (rtupscale/dsp/native) against their numpy references.

The interpolator's sums run in another order in C, so the two agree to float32 rounding;
the rate adjuster's C loop does the reference's float32 operations in the same order and
must agree bit for bit. Both must give the same output for any block split (streaming
equals offline), and both are what the live worker and the file mode run.
"""

import numpy as np
import pytest

from rtupscale.audio.drift import RateAdjuster
from rtupscale.dsp import interp, kernels

needs_native = pytest.mark.skipif(not kernels.available(), reason=kernels.why_not())


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.5 * rng.standard_normal((2, n))).astype(np.float32)


def _run_interp(x: np.ndarray, blocks: list[int], native: bool) -> np.ndarray:
    it = interp.Interpolator(2, max(blocks), native=native)
    out, pos, i = [], 0, 0
    while pos < x.shape[1]:
        b = min(blocks[i % len(blocks)], x.shape[1] - pos)
        out.append(it.process(x[:, pos:pos + b]).copy())
        pos += b
        i += 1
    return np.concatenate(out, axis=1)


@needs_native
def test_the_c_interpolator_matches_numpy():
    x = _signal(5000)
    ref = _run_interp(x, [256], native=False)
    got = _run_interp(x, [256], native=True)
    assert got.shape == ref.shape
    # float32 sums of 145 taps in another order: a few ulps of the output's scale
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)


@needs_native
def test_the_c_interpolator_is_the_same_for_any_block_split():
    x = _signal(3000, seed=1)
    one = _run_interp(x, [3000], native=True)
    for blocks in ([64], [128], [1, 7, 200, 33]):
        np.testing.assert_array_equal(_run_interp(x, blocks, native=True), one)


@pytest.mark.parametrize("native", [False, pytest.param(True, marks=needs_native)])
def test_pushed_blocks_leave_the_same_history_as_processed_ones(native):
    x = _signal(3000, seed=2)
    one = _run_interp(x, [3000], native=native)
    it = interp.Interpolator(2, 400, native=native)
    pos, out = 0, []
    for i, b in enumerate([100, 7, 400, 50, 300, 143, 144, 145, 1, 400]):
        if i % 2 == 0:
            it.push(x[:, pos:pos + b])  # unheard: history only
        else:
            out.append((pos, it.process(x[:, pos:pos + b]).copy()))
        pos += b
    for start, y in out:
        ref = one[:, 4 * start:4 * start + y.shape[1]]
        if native:  # the C loop is split-invariant to the bit
            np.testing.assert_array_equal(y, ref)
        else:  # numpy's matmul may round differently per block length
            np.testing.assert_allclose(y, ref, rtol=0, atol=2e-6)


def _run_adjuster(x: np.ndarray, steps: list[float], native: bool, block: int = 512) -> np.ndarray:
    adj = RateAdjuster(2, block, max_deviation=0.01, native=native)
    out = []
    for i, pos in enumerate(range(0, x.shape[1] - block + 1, block)):
        out.append(adj.process(x[:, pos:pos + block], steps[i % len(steps)]).copy())
    return np.concatenate(out, axis=0)


@needs_native
def test_the_c_rate_adjuster_matches_numpy():
    x = _signal(512 * 200, seed=2)
    # ratios the drift control uses (ppm) and the extremes it may reach
    for steps in ([1.0], [1.0 + 500e-6], [1.0 - 500e-6], [0.991, 1.009, 1.0 + 3e-7, 1.0 - 0.004]):
        ref = _run_adjuster(x, steps, native=False)
        got = _run_adjuster(x, steps, native=True)
        assert got.shape == ref.shape, steps
        # float32 sums of 16 taps in another order: a few ulps of the output's scale
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6)
        if steps == [1.0]:
            np.testing.assert_array_equal(got, ref)  # integer phase: the samples themselves


def test_native_false_needs_nothing_built():
    # the numpy path is always there: the fallback where no C compiler was at install
    assert interp.Interpolator(2, 64, native=False).native is False
    assert RateAdjuster(2, 256, native=False).native is False
