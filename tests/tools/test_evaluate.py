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
