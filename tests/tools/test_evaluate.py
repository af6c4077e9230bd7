"""tools.evaluate's command line: the condition subset and the targets it implies."""

import pytest

from tools import evaluate


def test_unknown_condition_is_refused_with_the_allowed_list(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--model", "m.onnx", "--conditions", "mp3_128,mp3_999"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "mp3_999" in err and "mp3_320" in err and "lossless" in err


def test_targets_follow_the_ship_criteria():
    row = {"all": 1.0, "hf": 1.0, "lf": 0.5}
    table = {c: {s: dict(row) for s in evaluate.SYSTEMS} for c in ("mp3_128", "opus_96", "lossless")}
    checks = evaluate.targets(table)
    assert not checks["mp3_128 HF <= 0.90 x fold"]["met"]  # 1.0 / 1.0 > 0.90
    assert not checks["opus_96 all <= 0.95 x fold"]["met"]
    assert checks["mp3_128 LF <= resampler + 0.005"]["met"]
    assert checks["lossless all <= resampler + 0.01"]["met"]
    assert not checks["mp3_128 all <= 0.88"]["met"]
    table["mp3_128"]["model"].update(hf=0.85, all=0.8)
    table["lossless"]["model"]["all"] = 1.02
    table["opus_96"]["model"]["lf"] = 0.51
    checks = evaluate.targets(table)
    assert checks["mp3_128 HF <= 0.90 x fold"]["met"] and checks["mp3_128 all <= 0.88"]["met"]
    assert not checks["lossless all <= resampler + 0.01"]["met"]
    assert not checks["opus_96 LF <= resampler + 0.005"]["met"]
    # Only the conditions scored are checked.
    assert not any(k.startswith("mp3_320") for k in checks)


def test_codec_inputs_are_scored_as_16_bit_pcm(tmp_path):
    """A 24-bit decode is read on the 16-bit grid, with libsndfile's conversion as
    ``tools.train.load_split`` reads it: what lies far under one step is gone."""
    import numpy as np
    import soundfile as sf

    from tools.evaluate import read_input

    sr = 44100
    t = np.arange(sr) / sr
    loud = 0.5 * np.sin(2 * np.pi * 1000 * t)
    faint = 2e-6 * np.sin(2 * np.pi * 19000 * t)  # -114 dBFS: a fifteenth of one 16-bit step
    sf.write(tmp_path / "v.flac", np.stack([loud + faint, faint], 1), sr, subtype="PCM_24")
    x = read_input(tmp_path / "v.flac", 1000)
    assert x.shape == (2, 1000) and x.dtype == np.float32
    # The faint channel is less than one step everywhere: libsndfile's 16-bit read leaves 0 or -1 step.
    assert set(np.unique(x[1] * 32768)) <= {0.0, -1.0}
    steps = x[0] * 32768
    assert np.array_equal(steps, np.round(steps))  # every sample on the 16-bit grid
    assert np.max(np.abs(x[0] - (loud + faint)[:1000])) <= 1 / 32768 + 1e-7


def test_the_split_is_chosen_among_the_held_out_ones(tmp_path, capsys):
    import json

    for i, split in enumerate(["train", "val", "test", "val"]):
        d = tmp_path / "clips" / f"c{i}"
        d.mkdir(parents=True)
        (d / "meta.json").write_text(json.dumps({"id": f"c{i}", "split": split}))
    assert [m["id"] for m in evaluate.test_clips(tmp_path, split="val")] == ["c1", "c3"]
    assert [m["id"] for m in evaluate.test_clips(tmp_path)] == ["c2"]
    with pytest.raises(ValueError, match="test"):
        evaluate.test_clips(tmp_path, split="train")  # never score on what was trained on
    # A held-out clip whose own top is cut in too many frames, or below 19.5 kHz, is no reference.
    for i, meta in enumerate([{"full_band_share": 0.5}, {"cutoff_hz": 17000.0},
                              {"full_band_share": 0.95, "cutoff_hz": 20000.0}], start=4):
        d = tmp_path / "clips" / f"c{i}"
        d.mkdir(parents=True)
        (d / "meta.json").write_text(json.dumps({"id": f"c{i}", "split": "test", **meta}))
    capsys.readouterr()
    assert [m["id"] for m in evaluate.test_clips(tmp_path)] == ["c2", "c6"]
    assert "left out (their own top is cut, see tools.realdata): c4, c5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--model", "m.onnx", "--split", "train"])
    assert "invalid choice" in capsys.readouterr().err


def test_reference_edges_find_the_references_own_cut_per_frame():
    """A reference whose codec cut it at 16.5 kHz in its second half (as a Vorbis source does
    in quiet frames): the LSD frames there get that edge, the full-band half keeps Nyquist,
    and a full-band estimate is scored only where the reference has content."""
    import numpy as np

    from rtupscale.dsp import metrics

    sr = 44100
    rng = np.random.default_rng(4)
    full = rng.standard_normal((2, 4 * sr)) * 0.1
    spec = np.fft.rfft(full[:, 2 * sr:], axis=1)
    spec[:, np.fft.rfftfreq(2 * sr, 1 / sr) > 16500] *= 10 ** (-60 / 20)
    ref = np.concatenate([full[:, :2 * sr], np.fft.irfft(spec, 2 * sr, axis=1)], axis=1)
    edges = evaluate.reference_edges(ref, sr)
    centres = metrics.frame_centres(ref.shape[1], sr)
    assert edges.shape == centres.shape
    first, second = centres < 2 * sr - 8192, centres > 2 * sr + 8192
    assert np.all(edges[first] == sr / 2)
    assert np.all(np.abs(edges[second] - 16500) < 700)
    assert np.all(evaluate.reference_edges(full, sr) == sr / 2)  # no cliff in full-band noise
    s = evaluate.score(ref, full, sr, edges)
    assert s["hf"] > 2.0 and s["own_hf"] < 0.3 and s["own_lf"] == s["lf"]


def test_the_lossless_row_takes_only_sources_with_no_codec(monkeypatch):
    """The real table's lossless row is scored on drums and organ only; a mix's Vorbis
    decode fed as it is still shows in its own kind's table."""
    rows = []
    for kind, value in (("mix", 0.5), ("organ", 0.1), ("drums", 0.2)):
        for cond in ("lossless", "mp3_128"):
            for system in evaluate.SYSTEMS:
                rows.append({"clip": kind, "source": f"real_{kind}", "kind": kind, "real": True, "sr": 44100,
                             "condition": cond, "system": system, "own_cut_share": 0.0,
                             **{b: value for b in ("all", "hf", "lf")},
                             **{f"own_{b}": value for b in ("all", "hf", "lf")}})

    def fake(args):
        return [r for r in rows if r["clip"] == args[0]["id"]], {}, {}

    monkeypatch.setattr(evaluate, "test_clips", lambda *a, **k: [{"id": k_} for k_ in ("mix", "organ", "drums")])
    monkeypatch.setattr(evaluate, "_clip_rows", fake)
    result = evaluate.evaluate("m.onnx", "data", None, None, conditions=("mp3_128", "lossless"))
    for table in ("table", "own_table"):
        assert result[table]["lossless"]["model"]["all"] == pytest.approx(0.15)  # organ and drums
        assert result[table]["lossless"]["model"]["clips"] == 2
        assert result[table]["mp3_128"]["model"]["all"] == pytest.approx(0.8 / 3)  # every kind
    assert result["by_kind"]["mix"]["lossless"]["model"]["all"] == 0.5
