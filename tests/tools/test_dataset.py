"""Dataset builder: every degraded clip is aligned with its target (lag 0, no drift)."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tools import codecs, make_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """Two short clips through the real builder: one test clip (the four evaluation MP3
    bitrates) and one train clip (three variants drawn from all codecs)."""
    out = tmp_path_factory.mktemp("dataset")
    metas = [
        make_dataset.build_clip(str(out), 7, "procedural", 0, 2.0, 3),  # index 0: test split
        make_dataset.build_clip(str(out), 7, "gm", 1, 2.0, 3),  # index 1: train split
    ]
    return out, metas


def _pairs(root: Path, metas):
    for meta in metas:
        d = root / "clips" / meta["id"]
        clean, sr = sf.read(d / "clean.flac", dtype="float32", always_2d=True)
        for name, entry in meta["variants"].items():
            if entry["ok"]:
                deg, sr2 = sf.read(d / f"{name}.flac", dtype="float32", always_2d=True)
                assert sr2 == sr
                yield meta["id"], name, clean.T, deg.T


def _assert_aligned(clip_id, name, clean, deg):
    assert deg.shape == clean.shape, f"{clip_id}/{name}: length differs"
    lag = codecs.measure_lag(clean, deg, 2048)
    assert round(lag) == 0, f"{clip_id}/{name}: lag {lag:.3f} samples"
    first, second = codecs.residual_lags(clean, deg)
    # Sub-sample, and the same in both halves: no drifting phase.
    assert abs(first) <= codecs.MAX_RESIDUAL_LAG and abs(second) <= codecs.MAX_RESIDUAL_LAG, (
        f"{clip_id}/{name}: residual lags {first:.3f}, {second:.3f}")


def test_every_pair_of_the_tiny_dataset_has_lag_zero(tiny_dataset):
    root, metas = tiny_dataset
    pairs = list(_pairs(root, metas))
    assert {"mp3_96", "mp3_128", "mp3_192", "mp3_320"} <= {n for i, n, *_ in pairs if i == metas[0]["id"]}
    assert len(pairs) >= 6
    for pair in pairs:
        _assert_aligned(*pair)


def test_sample_of_the_built_dataset_has_lag_zero():
    manifest = REPO / "data" / "dataset" / "manifest.json"
    if not manifest.exists():
        pytest.skip("no built dataset under data/dataset (tools.make_dataset builds it)")
    metas = json.loads(manifest.read_text())["clips"]
    rng = np.random.default_rng(0)
    sample = [metas[i] for i in rng.choice(len(metas), min(12, len(metas)), replace=False)]
    for pair in _pairs(manifest.parent, sample):
        _assert_aligned(*pair)


def test_lag_measurement_sees_integer_and_fractional_shifts():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 20000))
    assert codecs.measure_lag(x, x) == pytest.approx(0.0, abs=1e-6)
    late = np.pad(x, ((0, 0), (5, 0)))[:, :20000]
    assert codecs.measure_lag(x, late) == pytest.approx(5.0, abs=1e-3)
    # Half a sample (via the spectrum): the parabola places it between the two integers.
    spec = np.fft.rfft(x, axis=1) * np.exp(-1j * np.pi * np.fft.rfftfreq(20000) * 2 * 0.5)
    half = np.fft.irfft(spec, 20000, axis=1)
    assert 0.2 < codecs.measure_lag(x, half) < 0.8


def test_align_undoes_a_codec_like_delay_and_reports_drift():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 30000)).astype(np.float32)
    delayed = np.pad(x, ((0, 0), (1105, 0)))  # LAME's encoder + decoder delay without a tag
    aligned, shift = codecs.align(x, delayed)
    assert shift == 1105
    np.testing.assert_array_equal(aligned, x)
    # A 0.1 % rate error: the two halves disagree, so the pair would be rejected.
    t = np.arange(30000)
    drifted = np.stack([np.interp(t * 1.001, t, ch) for ch in x]).astype(np.float32)
    first, second = codecs.residual_lags(x, drifted)
    assert abs(second - first) > codecs.MAX_RESIDUAL_LAG


def test_builder_resumes_without_redoing_a_clip(tiny_dataset):
    root, metas = tiny_dataset
    clean = root / "clips" / metas[0]["id"] / "clean.flac"
    before = clean.stat().st_mtime_ns
    again = make_dataset.build_clip(str(root), 7, "procedural", 0, 2.0, 3)
    assert again == metas[0]
    assert clean.stat().st_mtime_ns == before


def test_clean_targets_are_dithered_16_bit_and_clips_are_split_by_index(tiny_dataset):
    root, metas = tiny_dataset
    info = sf.info(root / "clips" / metas[0]["id"] / "clean.flac")
    assert info.subtype == "PCM_16" and info.channels == 2 and info.samplerate in (44100, 48000)
    assert [m["split"] for m in metas] == ["test", "train"]
    assert make_dataset.split_of(5) == "val" and make_dataset.split_of(20) == "test"
    summary = make_dataset.summarize(metas)
    assert summary["test"]["pairs_per_variant"]["mp3_128"] == 1
    assert summary["hours_clean"] == pytest.approx(4.0 / 3600, abs=1e-4)


def test_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="allowed"):
        codecs.encode_decode(np.zeros((2, 100), np.int16), 44100, "mp3_999")


def test_a_validation_clip_gets_every_evaluation_condition(tmp_path):
    """Validation is scored with the test split's table (``tools.evaluate --split val``), so
    its clips carry every condition, not a draw."""
    meta = make_dataset.build_clip(str(tmp_path), 7, "procedural", 5, 1.0, 3)  # index 5: val split
    assert meta["split"] == "val"
    assert set(meta["variants"]) == set(make_dataset.EVAL_VARIANTS)
