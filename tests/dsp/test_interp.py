"""The bypass interpolator on pure tones: images, passband ripple, alignment, streaming."""

import numpy as np
import pytest

from rtupscale.dsp.interp import LATENCY, Interpolator, interpolate
from tests.signals import run_blocks

RATE = 44100
NFFT = 1 << 16  # output-rate FFT length; the base rate spans NFFT / 4 bins


def _coherent_tone(bin_out: int, amp: float) -> np.ndarray:
    """A tone that completes a whole number of cycles in the analysis frame (no leakage)."""
    n_in = NFFT // 4 + 2 * LATENCY + 512
    k = np.arange(n_in)
    return (amp * np.sin(2 * np.pi * bin_out * 4 * k / NFFT + 0.1)).astype(np.float32)[None]


def _spectrum_dbfs(x: np.ndarray, amp_ref: float = 1.0) -> np.ndarray:
    y = interpolate(x)[0]
    seg = y[4 * 256: 4 * 256 + NFFT]  # steady state, exactly NFFT samples
    mag = np.abs(np.fft.rfft(seg)) * 2 / NFFT
    return 20 * np.log10(mag / amp_ref + 1e-30)


@pytest.mark.parametrize("freq_frac", [0.01, 0.1, 0.25, 0.4, 0.45])
def test_images_above_base_nyquist_below_minus_100_dbfs(freq_frac):
    bin_out = int(round(freq_frac * NFFT / 4))
    spec = _spectrum_dbfs(_coherent_tone(bin_out, 0.99))
    nyquist_bin = NFFT // 8  # base Nyquist in output bins
    assert spec[bin_out] > -0.2  # the tone itself (0.99 FS) is there
    worst = spec[nyquist_bin + 1:].max()
    assert worst <= -100.0, f"image at {np.argmax(spec[nyquist_bin + 1:]) + nyquist_bin + 1}: {worst:.1f} dBFS"


def test_passband_ripple_within_0_01_db_up_to_0_45_fs():
    gains = []
    for frac in np.linspace(20 / RATE, 0.45, 40):
        bin_out = max(1, int(round(frac * NFFT / 4)))
        spec = _spectrum_dbfs(_coherent_tone(bin_out, 0.5), amp_ref=0.5)
        gains.append(spec[bin_out])
    gains = np.array(gains)
    assert np.abs(gains).max() <= 0.01, gains
    assert gains.max() - gains.min() <= 0.01


def test_alignment_is_latency_exact():
    """Output sample 4n is input sample n (latency removed), to float precision."""
    n = np.arange(8000)
    x = np.sin(2 * np.pi * 0.05 * n + 0.2).astype(np.float32)[None]
    y = interpolate(x)
    err = np.abs(y[0, ::4][300:-300] - x[0, 300:-300]).max()
    assert err < 1e-5
    # and one sample off would be far worse: the check can fail
    assert np.abs(y[0, ::4][301:-299] - x[0, 300:-300]).max() > 100 * err


@pytest.mark.parametrize("block", [1, 7, 64, 256, 1000])
def test_streaming_equals_one_call(block, rng):
    x = rng.standard_normal((2, 5000)).astype(np.float32)
    once = Interpolator(2, 5000).process(x).copy()
    streamed = run_blocks(Interpolator(2, block).process, x, block)
    assert np.abs(streamed - once).max() <= 1e-5  # BLAS summation order only


def test_rejects_wrong_shape():
    it = Interpolator(2, 64)
    with pytest.raises(ValueError, match="expected"):
        it.process(np.zeros((1, 64), np.float32))
    with pytest.raises(ValueError, match="expected"):
        it.process(np.zeros((2, 65), np.float32))
