"""LSD (rtupscale.dsp.metrics) against hand-computed cases."""

import numpy as np
import pytest

from rtupscale.dsp import metrics


def test_stft_params_follow_ssr_eval():
    assert metrics.stft_params(44100) == (2048, 441)
    assert metrics.stft_params(48000) == (2229, 480)


def test_identical_signals_give_zero():
    x = np.random.default_rng(0).standard_normal(44100) * 0.1
    assert metrics.lsd(x, x, 44100) == pytest.approx({"all": 0.0, "hf": 0.0, "lf": 0.0}, abs=1e-9)


def test_a_20_db_gain_gives_exactly_2():
    # log10(T^2 / (10 T)^2) = -2 in every bin, so every frame scores sqrt(4) = 2.
    x = np.random.default_rng(1).standard_normal(48000) * 0.01
    out = metrics.lsd(x, 10 * x, 48000)
    for band in metrics.BANDS:
        assert out[band] == pytest.approx(2.0, abs=1e-6)


def test_from_magnitudes_hand_computed():
    target = np.ones((3, 4))
    estimate = np.array([[1, 1, 10, 10], [1, 1, 10, 10], [1, 1, 1, 1]], float)
    # frames: sqrt(mean(0, 0, 4, 4)) = sqrt 2, twice, and 0 -> mean (2 sqrt 2) / 3
    mask = np.ones(4, bool)
    assert metrics.lsd_from_magnitudes(target, estimate, mask) == pytest.approx(2 * np.sqrt(2) / 3, rel=1e-9)
    only_first_two = np.array([True, True, False, False])
    assert metrics.lsd_from_magnitudes(target, estimate, only_first_two) == pytest.approx(0.0, abs=1e-9)


def test_silent_estimate_uses_the_epsilons():
    # T = 1e-3, E = 0: log10(1e-6 / 1e-24 + 1e-12) = 18 per bin.
    t = np.full((2, 5), 1e-3)
    assert metrics.lsd_from_magnitudes(t, np.zeros((2, 5)), np.ones(5, bool)) == pytest.approx(18.0, rel=1e-9)


def test_bands_select_the_right_bins():
    sr = 44100
    n_fft, _ = metrics.stft_params(sr)
    f = np.fft.rfftfreq(n_fft, 1 / sr)
    hf, lf, all_ = (metrics.band_mask(sr, b) for b in ("hf", "lf", "all"))
    assert f[hf].min() >= 16000 and f[hf].max() < 0.95 * sr / 2
    assert f[lf].max() < 15000 and f[lf].min() == 0
    assert f[all_].max() < 0.95 * sr / 2 and all_.sum() > hf.sum() + lf.sum() - 1
    with pytest.raises(ValueError, match="band"):
        metrics.band_mask(sr, "mid")


def test_high_band_error_shows_only_in_hf():
    sr = 48000
    rng = np.random.default_rng(2)
    n_fft, _ = metrics.stft_params(sr)
    ref = rng.standard_normal(sr) * 0.1
    spec = np.fft.rfft(ref)
    f = np.fft.rfftfreq(len(ref), 1 / sr)
    spec[f > 17000] *= 0.01  # remove 40 dB above 17 kHz, like a codec lowpass
    est = np.fft.irfft(spec, len(ref))
    out = metrics.lsd(ref, est, sr)
    assert out["lf"] < 0.01
    assert out["hf"] > 1.0
    assert out["lf"] < out["all"] < out["hf"]


def test_tone_magnitude_is_the_hann_coherent_gain():
    sr = 44100
    n_fft, _ = metrics.stft_params(sr)
    k = 100
    t = np.arange(sr)
    mag = metrics.magnitude(0.5 * np.sin(2 * np.pi * k * t / n_fft), sr)
    mid = mag[len(mag) // 2]
    assert np.argmax(mid) == k
    assert mid[k] == pytest.approx(0.5 * n_fft / 4, rel=1e-3)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="same shape"):
        metrics.lsd(np.zeros(100), np.zeros(101), 44100)
    with pytest.raises(ValueError, match="positive"):
        metrics.stft_params(0)


def test_frame_centres_count_the_frames_magnitude_makes():
    for sr, n in ((44100, 44100), (48000, 12345), (44100, 100)):
        assert len(metrics.frame_centres(n, sr)) == metrics.magnitude(np.zeros(n), sr).shape[0]


def test_per_frame_mask_hand_computed():
    target = np.ones((3, 4))
    estimate = np.array([[1, 1, 10, 10], [10, 1, 1, 1], [1, 10, 10, 10]], float)
    mask = np.array([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    # frame 0: sqrt(mean(0, 0, 4, 4)) = sqrt 2; frame 1: sqrt(mean(4, 0)) = sqrt 2;
    # frame 2 has 1 bin < MIN_BINS: left out
    assert metrics.lsd_from_magnitudes(target, estimate, mask) == pytest.approx(np.sqrt(2), rel=1e-9)
    assert np.isnan(metrics.lsd_from_magnitudes(target, estimate, np.zeros((3, 4), bool)))
    with pytest.raises(ValueError, match="per-frame mask"):
        metrics.lsd_from_magnitudes(target, estimate, np.ones((2, 4), bool))


def test_top_hz_leaves_out_what_the_reference_never_had():
    """A reference cut at 16.5 kHz in its second half (as a lossy source's quiet frames):
    an estimate that carries the full band there is penalised without ``top_hz`` and scored
    only where the reference has content with it; a top at Nyquist changes nothing."""
    sr = 44100
    rng = np.random.default_rng(3)
    full = rng.standard_normal(2 * sr) * 0.1
    spec = np.fft.rfft(full[sr:])
    spec[np.fft.rfftfreq(sr, 1 / sr) > 16500] = 0.0
    ref = np.concatenate([full[:sr], np.fft.irfft(spec, sr)])
    centres = metrics.frame_centres(len(ref), sr)
    top = np.where(centres + metrics.stft_params(sr)[0] // 2 <= sr, sr / 2, 16500.0)
    plain = metrics.lsd(ref, full, sr)
    own = metrics.lsd(ref, full, sr, top_hz=top)
    assert plain["hf"] > 3.0  # the empty reference bins against full ones
    assert own["hf"] < 0.1 and own["lf"] == pytest.approx(plain["lf"], abs=1e-9)
    assert metrics.lsd(ref, full, sr, top_hz=np.full(len(centres), sr / 2)) == pytest.approx(plain, rel=1e-12)
    assert np.isnan(metrics.lsd(ref, full, sr, top_hz=np.full(len(centres), 15000.0))["hf"])
    with pytest.raises(ValueError, match="one edge per frame"):
        metrics.lsd(ref, full, sr, top_hz=top[:-1])
