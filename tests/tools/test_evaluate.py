"""tools.evaluate's command line: the condition subset and the targets it implies."""

import pytest

from tools import evaluate


def test_unknown_condition_is_refused_with_the_allowed_list(capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--model", "m.onnx", "--conditions", "mp3_128,mp3_999"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "mp3_999" in err and "mp3_320" in err and "lossless" in err


def test_targets_need_128_320_and_lossless():
    row = {"all": 1.0, "hf": 1.0, "lf": 1.0}
    table = {c: {s: dict(row) for s in evaluate.SYSTEMS} for c in ("mp3_128", "mp3_320", "lossless")}
    assert evaluate.targets({"mp3_128": table["mp3_128"]}) == {}
    checks = evaluate.targets(table)
    assert not checks["mp3_128 HF <= 0.78 x exciter"]["met"]  # 1.0 / 1.0 > 0.78
    assert checks["lossless all <= resampler + 0.02"]["met"]
    table["mp3_128"]["model"]["hf"] = 0.7
    assert evaluate.targets(table)["mp3_128 HF <= 0.78 x exciter"]["met"]
