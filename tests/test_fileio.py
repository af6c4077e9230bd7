"""File mode: rate, length, alignment, atomic write, refusals, errors."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtupscale.config import Config
from rtupscale.fileio import FileModeError, upscale_file
from rtupscale.model.runner import ModelRunner
from tests.signals import tone

RATE = 44100


@pytest.fixture
def wav(tmp_path):
    x = tone(440, RATE, 30000, amp=0.5) + tone(3000, RATE, 30000, amp=0.2, phase=1.0)
    p = tmp_path / "in.wav"
    sf.write(p, x.T, RATE, subtype="FLOAT")
    return p, x


def _lag(ref: np.ndarray, y: np.ndarray, max_lag: int = 64) -> int:
    """The lag (in samples) that best aligns ``y`` with ``ref`` (0 = aligned)."""
    core = slice(1000, len(ref) - 1000)
    errs = {k: np.mean((ref[core] - np.roll(y, -k)[core]) ** 2) for k in range(-max_lag, max_lag + 1)}
    return min(errs, key=errs.get)


@pytest.mark.parametrize("model_fixture", [None, "fir_model"])
@pytest.mark.parametrize("block", [64, 1024])
def test_rate_length_and_alignment(wav, tmp_path, model_fixture, block, request):
    src, x = wav
    runner = ModelRunner(request.getfixturevalue(model_fixture)) if model_fixture else None
    out = tmp_path / "out.flac"
    res = upscale_file(src, out, Config(), runner=runner, block_size=block, progress=False)
    y, rate = sf.read(out, always_2d=True)
    assert rate == 4 * RATE and res.output_rate == 4 * RATE
    assert y.shape == (4 * x.shape[1], 2)
    info = sf.info(out)
    assert info.subtype == "PCM_24" and info.format == "FLAC"
    # Brought back to the base rate, the output lines up with the input at lag 0.
    back = y[::4, 0]
    assert _lag(x[0], back) == 0
    if runner is None:  # the bypass path reproduces the input (band-limited, 24-bit)
        assert np.abs(back[500:-500] - x[0, 500:-500]).max() < 1e-4


def test_lag_detector_can_see_a_misalignment(wav):
    _, x = wav
    assert _lag(x[0], np.roll(x[0], 3)) == 3


def test_wav_float_output_and_16_bit(wav, tmp_path):
    src, x = wav
    upscale_file(src, tmp_path / "f.wav", Config(), bits="float", progress=False)
    assert sf.info(tmp_path / "f.wav").subtype == "FLOAT"
    upscale_file(src, tmp_path / "s.wav", Config(), bits="16", progress=False)
    y, _ = sf.read(tmp_path / "s.wav", always_2d=True)
    # TPDF dither: the error against the float output is noise of about 1 LSB rms, not zero.
    f, _ = sf.read(tmp_path / "f.wav", always_2d=True)
    err = (y - f)[1000:-1000]
    lsb = 2.0 ** -15
    assert 0.3 * lsb < err.std() < 1.5 * lsb


def test_refuses_to_overwrite_input(wav):
    src, _ = wav
    with pytest.raises(FileModeError, match="refusing to overwrite the input"):
        upscale_file(src, src, Config(), progress=False)


def test_atomic_write_leaves_nothing_on_failure(wav, tmp_path, monkeypatch):
    src, _ = wav
    out = tmp_path / "out.flac"
    out.write_bytes(b"previous")
    from rtupscale import engine as engine_mod

    calls = {"n": 0}
    real = engine_mod.Engine.process

    def failing(self, block):
        calls["n"] += 1
        if calls["n"] == 20:
            raise KeyboardInterrupt
        return real(self, block)

    monkeypatch.setattr(engine_mod.Engine, "process", failing)
    with pytest.raises(KeyboardInterrupt):
        upscale_file(src, out, Config(), block_size=256, progress=False, force=True)
    assert out.read_bytes() == b"previous"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav", "out.flac"]  # no temp left


def test_unsupported_rate_lists_accepted(tmp_path, fir_model):
    p = tmp_path / "r.wav"
    sf.write(p, tone(440, 32000, 8000).T, 32000)
    with pytest.raises(FileModeError, match="32000 Hz is not accepted by the model; it accepts 44100, 48000 Hz"):
        upscale_file(p, tmp_path / "o.flac", Config(), runner=ModelRunner(fir_model), progress=False)


def test_resample_option_converts_input(tmp_path, fir_model):
    p = tmp_path / "r.wav"
    sf.write(p, tone(440, 32000, 8000).T, 32000)
    res = upscale_file(p, tmp_path / "o.flac", Config(), runner=ModelRunner(fir_model), resample=True, progress=False)
    assert res.resampled_from == 32000 and res.input_rate == 48000
    y, rate = sf.read(tmp_path / "o.flac")
    assert rate == 192000 and len(y) == 4 * 12000


@pytest.mark.parametrize("content, message", [(b"not audio at all" * 100, "cannot read it as audio"), (None, "no such file")])
def test_bad_input_files(tmp_path, content, message):
    p = tmp_path / "bad.wav"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(FileModeError, match=message):
        upscale_file(p, tmp_path / "o.flac", Config(), progress=False)


def test_bad_output_extension(wav, tmp_path):
    src, _ = wav
    with pytest.raises(FileModeError, match="use .flac or .wav"):
        upscale_file(src, tmp_path / "o.mp3", Config(), progress=False)
    with pytest.raises(FileModeError, match="FLAC holds integer samples only"):
        upscale_file(src, tmp_path / "o.flac", Config(), bits="float", progress=False)


def test_mp3_input(tmp_path):
    x = tone(440, RATE, 44100, amp=0.3)
    p = tmp_path / "in.mp3"
    try:
        sf.write(p, x.T, RATE, format="MP3")
    except (sf.LibsndfileError, TypeError, ValueError) as e:  # pragma: no cover - old libsndfile
        pytest.skip(f"this libsndfile cannot write MP3: {e}")
    upscale_file(p, tmp_path / "o.flac", Config(), progress=False)
    y, rate = sf.read(tmp_path / "o.flac")
    assert rate == 4 * RATE and len(y) == 4 * sf.info(p).frames


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rtupscale.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_upscale_bypass_says_so(wav, tmp_path):
    src, _ = wav
    r = _cli("upscale", str(src), str(tmp_path / "o.flac"), "--model", "none", "--config", str(Path(__file__).parents[1] / "config.yaml"))
    assert r.returncode == 0, r.stderr
    assert "bypass path only" in r.stderr


def test_cli_errors_are_one_line_exit_2(tmp_path, fir_model):
    p = tmp_path / "r.wav"
    sf.write(p, tone(440, 32000, 8000).T, 32000)
    r = _cli("upscale", str(p), str(tmp_path / "o.flac"), "--model", str(fir_model))
    assert r.returncode == 2
    err = [line for line in r.stderr.splitlines() if line.startswith("rtupscale upscale:")]
    assert len(err) == 1 and "accepts 44100, 48000 Hz" in err[0]
    r = _cli("upscale", str(p), str(tmp_path / "o.flac"), "--model", str(tmp_path / "missing.onnx"))
    assert r.returncode == 2 and "no such model file" in r.stderr


def test_default_file_block_matches_the_live_block_size(tmp_path):
    """File mode runs long blocks (FILE_BLOCK); the model contract says any block size
    gives the same output to float rounding: so must the file, against block 256."""
    from rtupscale.fileio import FILE_BLOCK

    model = Path(__file__).resolve().parents[1] / "models" / "rtupscale-restore-v2.onnx"
    rng = np.random.default_rng(5)
    x = (0.1 * rng.standard_normal((2, FILE_BLOCK + 5000))).astype(np.float32) + tone(3000, RATE, FILE_BLOCK + 5000, amp=0.2)
    sf.write(tmp_path / "in.wav", x.T, RATE, subtype="FLOAT")
    runner = ModelRunner(model)
    res = upscale_file(tmp_path / "in.wav", tmp_path / "long.wav", Config(), runner=runner, bits="float", progress=False)
    upscale_file(tmp_path / "in.wav", tmp_path / "live.wav", Config(), runner=runner, bits="float", block_size=256,
                 progress=False)
    long, live = sf.read(tmp_path / "long.wav")[0], sf.read(tmp_path / "live.wav")[0]
    assert long.shape == live.shape == (4 * x.shape[1], 2) and res.output_frames == 4 * x.shape[1]
    assert np.abs(long - live).max() <= 1e-4
    assert np.abs(long).max() > 0.1
