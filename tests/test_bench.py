"""`rtupscale bench --json` produces the documented records (a benchmark, not a timing test)."""

import json
import subprocess
import sys


def test_bench_json_records(fir_model):
    r = subprocess.run(
        [sys.executable, "-m", "rtupscale.cli", "bench", "--model", str(fir_model), "--provider", "cpu",
         "--block", "64", "--block", "256", "--seconds", "0.2", "--json"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert [rec["block"] for rec in records] == [64, 256]
    for rec in records:
        assert rec["provider"] == "cpu" and rec["model"] == "test-fir"
        assert 0 < rec["median_ms"] <= rec["p99_ms"] <= rec["max_ms"]
        assert abs(rec["rtf"] - rec["median_ms"] / rec["block_ms"]) < 1e-3
        assert rec["blocks_timed"] >= 200 and rec["rss_mib"] > 0


def test_bench_skips_blocks_the_model_refuses(fir_model):
    r = subprocess.run(
        [sys.executable, "-m", "rtupscale.cli", "bench", "--model", str(fir_model), "--provider", "cpu",
         "--block", "100", "--seconds", "0.1", "--json"],
        capture_output=True, text=True,
    )
    assert r.returncode == 1 and "skipping block 100" in r.stderr


def test_bench_file_reports_file_mode_next_to_soxr(fir_model, tmp_path):
    import soundfile as sf

    from tests.signals import tone

    sf.write(tmp_path / "a.wav", tone(440, 44100, 44100).T, 44100)
    r = subprocess.run(
        [sys.executable, "-m", "rtupscale.cli", "bench", "--file", str(tmp_path / "a.wav"), "--model", str(fir_model),
         "--repeat", "1", "--json"],
        capture_output=True, text=True,
    )
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert [rec["case"].split(",")[0].strip() for rec in records] == [
        "rtupscale file mode", "of which the model alone (block 16384)", "soxr VHQ x4", "soxr VHQ x4"]
    for rec in records:
        assert rec["audio_s"] == 1.0 and rec["wall_s"] > 0 and rec["cpu_s"] > 0
        assert abs(rec["x_per_core"] - rec["audio_s"] / rec["cpu_s"]) <= 0.05 * rec["x_per_core"] + 0.1


def test_bench_file_refuses_a_missing_file(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rtupscale.cli", "bench", "--file", str(tmp_path / "nope.mp3")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "nope.mp3: no such file" in r.stderr
