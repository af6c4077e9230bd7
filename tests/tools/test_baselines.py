"""The folding exciter copies 8-16 kHz up by 8 kHz at -12 dB and leaves the rest alone."""

import numpy as np
import pytest

from tools.baselines import folding_exciter


def _tone(f, sr, n, amp=0.5):
    return (amp * np.sin(2 * np.pi * f * np.arange(n) / sr)).astype(np.float32)


def _amplitude_at(x, f, sr):
    """Least-squares amplitude of a sinusoid at exactly ``f`` Hz."""
    t = np.arange(len(x)) / sr
    basis = np.stack([np.cos(2 * np.pi * f * t), np.sin(2 * np.pi * f * t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    return float(np.hypot(*coef))


@pytest.mark.parametrize("sr", [44100, 48000])
def test_tone_in_the_source_band_is_copied_8_khz_up_at_minus_12_db(sr):
    n = sr
    x = _tone(10000, sr, n)
    y = folding_exciter(x, sr)
    shift = 4 * round(8000 * 2048 / sr / 4) * sr / 2048  # the exciter shifts by 4k bins
    copied = _amplitude_at(y[4096:-4096], 10000 + shift, sr)
    assert 20 * np.log10(copied / 0.5) == pytest.approx(-12.0, abs=0.3)
    # Below 16 kHz nothing changed.
    spec = np.fft.rfft((y - x)[4096:-4096])
    f = np.fft.rfftfreq(n - 8192, 1 / sr)
    assert np.abs(spec[f < 15500]).max() < 1e-3 * np.abs(spec).max()


@pytest.mark.parametrize("f", [3000, 17000])
def test_tones_outside_the_source_band_are_untouched(f):
    sr = 44100
    x = np.stack([_tone(f, sr, sr), _tone(f, sr, sr, 0.2)])
    # Away from the abrupt start and end (whose broadband splatter is copied, as it should be).
    np.testing.assert_allclose(folding_exciter(x, sr)[:, 3000:-3000], x[:, 3000:-3000], atol=1e-5)


def test_copies_stop_at_nyquist_and_bad_input_is_refused():
    sr = 44100
    y = folding_exciter(_tone(15000, sr, sr), sr)  # would land at ~23 kHz: above Nyquist
    np.testing.assert_allclose(y[3000:-3000], _tone(15000, sr, sr)[3000:-3000], atol=1e-5)
    with pytest.raises(ValueError, match="too low"):
        folding_exciter(np.zeros(1000), 22050)
    with pytest.raises(ValueError, match="expected"):
        folding_exciter(np.zeros((1, 2, 3)), 44100)


def test_adaptive_exciter_leaves_full_band_input_alone_and_fills_above_a_cutoff():
    import scipy.signal

    from tools.baselines import adaptive_exciter

    sr = 44100
    x = (0.1 * np.random.default_rng(0).standard_normal((2, sr))).astype(np.float32)
    assert np.array_equal(adaptive_exciter(x, sr), x)
    cut = scipy.signal.sosfiltfilt(scipy.signal.ellip(12, 0.1, 90, 16000 / (sr / 2), output="sos"), x, axis=1)
    y = adaptive_exciter(cut, sr)
    f = np.fft.rfftfreq(sr, 1 / sr)
    added = np.abs(np.fft.rfft(y - cut, axis=1)) ** 2
    assert added[:, f < 15000].sum() < 1e-4 * added[:, f > 17000].sum()  # window leakage only: -51 dB here
    assert added[:, f > 17000].sum() > 1e-3 * (np.abs(np.fft.rfft(cut, axis=1)) ** 2).sum()
