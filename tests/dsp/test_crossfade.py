"""The one crossfade: constant amplitude for correlated signals, no allocation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rtupscale.dsp.crossfade import crossfade, fade_in_curve


def test_correlated_signals_keep_their_amplitude():
    x = np.sin(2 * np.pi * 997 * np.arange(2048) / 44100).astype(np.float32)[None].repeat(2, 0)
    fi = fade_in_curve(2048).astype(np.float32)
    out = np.empty_like(x)
    crossfade(x, x.copy(), fi, out)
    assert np.max(np.abs(out - x)) <= 1e-6


def test_endpoints_and_weights():
    old, new = np.full((2, 8), 2.0, np.float32), np.full((2, 8), -1.0, np.float32)
    fi = fade_in_curve(8).astype(np.float32)
    out = np.empty_like(old)
    crossfade(old, new, fi, out)
    np.testing.assert_allclose(out, old * (1 - fi) + new * fi, atol=1e-6)
    assert np.all(np.diff(out[0]) < 0)  # monotonic from old to new


@pytest.mark.parametrize("into", ["old", "new"])
def test_out_may_be_an_input_given_a_scratch(into):
    rng = np.random.default_rng(0)
    old, new = rng.standard_normal((2, 64)).astype(np.float32), rng.standard_normal((2, 64)).astype(np.float32)
    fi = fade_in_curve(64).astype(np.float32)
    want = old * (1 - fi) + new * fi
    out = old if into == "old" else new
    crossfade(old, new, fi, out, np.empty_like(old))
    np.testing.assert_allclose(out, want, atol=1e-6)


def test_interleaved_buffers_through_transposed_views():
    x = np.ones((16, 2), np.float32)
    g = fade_in_curve(16).astype(np.float32)
    crossfade(np.zeros_like(x).T, x.T, g, x.T, np.empty_like(x).T)  # a fade in from silence
    np.testing.assert_allclose(x[:, 0], g, atol=1e-7)
    np.testing.assert_allclose(x[:, 1], g, atol=1e-7)


def test_allocates_nothing():
    old, new, out = (np.ones((2, 1024), np.float32) for _ in range(3))
    fi = fade_in_curve(1024).astype(np.float32)
    crossfade(old, new, fi, out)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for _ in range(100):
        crossfade(old, new, fi, out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak - before < 1024  # no temporaries of the block size (8 kB each)
