"""Config: every documented error, one line naming the key; check-config exit codes."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rtupscale.config import Config, ConfigError, diff_configs, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def _errors(data):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.errors


def test_shipped_config_is_valid_and_every_key_documented():
    cfg = load_config(REPO / "config.yaml")
    text = (REPO / "config.yaml").read_text()
    data = yaml.safe_load(text)
    # every key of every section appears in the shipped file, with a comment above it
    for section, sub in Config.__dataclass_fields__.items():
        if section == "source":
            continue
        assert section in data, section
        for key in getattr(cfg, section).__dataclass_fields__:
            assert key in data[section], f"{section}.{key} missing from config.yaml"
            lines = text.splitlines()
            idx = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{key}:"))
            assert lines[idx - 1].strip().startswith("#"), f"{section}.{key} has no comment"


@pytest.mark.parametrize("text", ["", "# only a comment\n\n", "{}\n"])
def test_file_without_keys_is_refused(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match="the file has no keys"):
        load_config(p)


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"latency": {"blok_size": 256}}, "latency.blok_size: unknown key"),
        ({"latncy": {}}, "latncy: unknown key"),
        ({"latency": {"block_size": "big"}}, "latency.block_size: expected an integer, got 'big'"),
        ({"latency": {"block_size": 2.5}}, "latency.block_size: expected an integer"),
        ({"latency": {"block_size": True}}, "latency.block_size: expected an integer"),
        ({"latency": {"block_size": 8}}, "latency.block_size: 8 is not allowed; expected an integer from 16 to 16384"),
        ({"latency": {"prefill_ms": -1}}, "latency.prefill_ms: -1.0 is not allowed"),
        ({"latency": {"crossfade_ms": 0}}, "latency.crossfade_ms: 0.0 is not allowed"),
        ({"latency": {"crossfade_ms": "x"}}, "latency.crossfade_ms: expected a number"),
        ({"model": {"provider": "gpu"}}, "model.provider: 'gpu' is not allowed; expected one of auto, cuda, cpu"),
        ({"model": {"threads": 0}}, "model.threads: 0 is not allowed"),
        ({"model": {"path": ""}}, "model.path: '' is not allowed"),
        ({"output": {"ceiling_dbfs": 3}}, "output.ceiling_dbfs: 3.0 is not allowed; expected a number from -40 to 0"),
        ({"output": {"dither": "yes"}}, "output.dither: expected true or false"),
        ({"audio": {"rate": 44000}}, "audio.rate: 44000 is not allowed; expected one of 44100, 48000, auto"),
        ({"audio": {"rate": "fast"}}, "audio.rate: 'fast' is not allowed; expected one of 44100, 48000, auto"),
        ({"audio": {"rate": True}}, "audio.rate: expected an integer or a keyword, got True"),
        ({"audio": {"channels": 0}}, "audio.channels: 0 is not allowed"),
        ({"audio": {"virtual_sink": "my sink"}}, "audio.virtual_sink: 'my sink' is not allowed"),
        ({"audio": "loud"}, "audio: expected a mapping of keys, got str"),
        ({"control": {"metrics_port": 80}}, "control.metrics_port: 80 is not allowed"),
        (["a", "list"], ": expected a mapping of keys, got list"),
    ],
)
def test_each_error_names_the_key(data, expected):
    errors = _errors(data)
    assert any(expected in e for e in errors), errors
    assert all("\n" not in e for e in errors)


def test_all_errors_reported_at_once():
    errors = _errors({"latency": {"blok_size": 1, "crossfade_ms": -5}, "model": {"provider": "x"}})
    assert len(errors) == 3


def test_rate_auto_follows_the_apps_and_opens_at_44100():
    cfg = parse_config({"audio": {"rate": "auto"}})
    assert cfg.audio.follows_rate and cfg.audio.base_rate == 44100
    cfg = parse_config({"audio": {"rate": 48000}})
    assert not cfg.audio.follows_rate and cfg.audio.base_rate == 48000


def test_device_index_allowed_as_int():
    cfg = parse_config({"audio": {"playback": 3}})
    assert cfg.audio.playback == "3"


def test_yaml_syntax_error_names_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("latency:\n  block_size: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")


def test_model_path_relative_to_config(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  path: m/x.onnx\n")
    assert load_config(p).model_path() == tmp_path / "m" / "x.onnx"
    p.write_text("model:\n  path: none\n")
    assert load_config(p).model_path() is None


def test_diff_names_changed_keys():
    a = parse_config({})
    b = parse_config({"latency": {"block_size": 128}, "model": {"provider": "cpu"}})
    assert diff_configs(a, b) == ["latency.block_size", "model.provider"]
    assert diff_configs(a, a) == []


def _check(path):
    return subprocess.run([sys.executable, "-m", "rtupscale.cli", "check-config", str(path)], capture_output=True, text=True)


def test_check_config_command(tmp_path):
    r = _check(REPO / "config.yaml")
    assert r.returncode == 0 and "config is valid" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("latency:\n  blok_size: 256\nmodel:\n  provider: gpu\n")
    r = _check(bad)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("latency.blok_size: unknown key (allowed: block_size, capture_buffer_ms, crossfade_ms, keep_cpus_awake, playback_buffer_ms, prefill_ms)")
    assert "model.provider" in lines[1]


def test_check_config_reports_missing_model(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  path: nowhere.onnx\n")
    r = _check(p)
    assert r.returncode == 2 and "no such model file" in r.stderr


def test_example_broken_config_is_rejected():
    r = _check(REPO / "docs" / "examples" / "broken.yaml")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) >= 3
