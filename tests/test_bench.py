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
