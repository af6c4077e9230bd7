"""Library mode on a Ray cluster: a local head on 127.0.0.1, the same files as local mode.

The head is started with the ``ray`` command of this environment (the ``ray`` extra, which
``scripts/setup --test`` installs), so its workers import this rtupscale.
"""

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.test_library import _tree

REPO = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    """A free TCP port above Ray's default worker ports (10002-19999)."""
    for _ in range(100):
        port = random.randint(20000, 29999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


@pytest.fixture(scope="module")
def ray_head():
    port = _free_port()
    # one GPU, as Ray counts them (a logical resource: no device is needed for the scheduling
    # under test; an actor holding it finds no CUDA here and runs its model on the CPU)
    r = subprocess.run([str(RAY), "start", "--head", "--port", str(port), "--num-cpus", "2", "--num-gpus", "1",
                        "--node-ip-address", "127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, env=ENV, timeout=120)


def _upscale(src, dest, *extra):
    return subprocess.run([sys.executable, "-m", "rtupscale.cli", "upscale", str(src), str(dest), "--config",
                           str(REPO / "config.yaml"), "--provider", "cpu", "--json", *extra],
                          capture_output=True, text=True, env=ENV, timeout=600)


def test_ray_gives_the_files_of_local_mode(tmp_path, ray_head):
    from mutagen.flac import FLAC

    src = tmp_path / "src"
    _tree(src)
    local = _upscale(src, tmp_path / "local", "--jobs", "1")
    assert local.returncode == 1, local.stderr  # bad.flac
    on_ray = _upscale(src, tmp_path / "ray", "--ray", ray_head)
    assert on_ray.returncode == 1, on_ray.stderr
    a, b = json.loads(local.stdout), json.loads(on_ray.stdout)
    assert a["done"] == b["done"] == 8 and [Path(f["file"]).name for f in b["failed"]] == ["bad.flac"]
    outs = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.flac"))
    assert outs == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.flac"))
    assert len(outs) == 8
    for rel in outs:
        x, rx = sf.read(tmp_path / "local" / rel, dtype="int32")
        y, ry = sf.read(tmp_path / "ray" / rel, dtype="int32")
        assert rx == ry and x.shape == y.shape and np.array_equal(x, y), rel
        assert np.abs(x).max() > 0
        assert dict(FLAC(tmp_path / "local" / rel).tags) == dict(FLAC(tmp_path / "ray" / rel).tags)
    again = _upscale(src, tmp_path / "ray", "--ray", ray_head)
    assert json.loads(again.stdout)["skipped"] == 8


def test_where_the_cluster_has_a_gpu_one_actor_holds_it(tmp_path, ray_head):
    """``provider: auto``: one actor per GPU of the cluster holds that GPU (here a GPU only
    Ray counts: its model finds no CUDA and runs on the CPU, so the files are still those of
    local mode, sample for sample); ``--provider cpu`` asks for none."""
    src = tmp_path / "src"
    _tree(src)
    auto = subprocess.run([sys.executable, "-m", "rtupscale.cli", "upscale", str(src), str(tmp_path / "ray"),
                           "--config", str(REPO / "config.yaml"), "--provider", "auto", "--json", "--ray", ray_head],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert auto.returncode == 1, auto.stderr[-2000:]  # bad.flac
    actors = json.loads(auto.stdout)["ray"]["actors"]
    assert sorted(a["gpu"] for a in actors) == [False, True], actors
    assert all(a["provider"] == "cpu" for a in actors), actors
    local = _upscale(src, tmp_path / "local", "--jobs", "1")
    for rel in sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.flac")):
        x, _ = sf.read(tmp_path / "local" / rel, dtype="int32")
        y, _ = sf.read(tmp_path / "ray" / rel, dtype="int32")
        assert np.array_equal(x, y), rel
    cpu = _upscale(src, tmp_path / "ray-cpu", "--ray", ray_head)
    assert not any(a["gpu"] for a in json.loads(cpu.stdout)["ray"]["actors"])


def test_a_model_the_workers_cannot_load_is_one_line(tmp_path, ray_head):
    (tmp_path / "src").mkdir()
    sf.write(tmp_path / "src" / "a.wav", np.zeros((4410, 2), np.float32), 44100)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = subprocess.run([sys.executable, "-m", "rtupscale.cli", "upscale", str(tmp_path / "src"), str(tmp_path / "out"),
                        "--model", str(bad), "--provider", "cpu", "--ray", ray_head], capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "the workers could not start" in r.stderr and "bad.onnx" in r.stderr


def test_ray_address_errors_are_one_line(tmp_path):
    (tmp_path / "src").mkdir()
    sf.write(tmp_path / "src" / "a.wav", np.zeros((4410, 2), np.float32), 44100)
    r = _upscale(tmp_path / "src", tmp_path / "out", "--ray", "nonsense")
    assert r.returncode == 2 and "expected HOST:PORT of a running Ray head" in r.stderr
    r = _upscale(tmp_path / "src", tmp_path / "out", "--ray", f"127.0.0.1:{_free_port()}")
    assert r.returncode == 2 and "no Ray head answers there" in r.stderr
    assert not (tmp_path / "out" / "a.flac").exists()


def test_make_dataset_on_ray_builds_the_same_clips(tmp_path, ray_head):
    from tools.make_dataset import DEFAULT_CLIPS

    args = ["--seconds", "1", "--variants-per-clip", "1", "--n-procedural", "3"]
    args += [a for s in DEFAULT_CLIPS if s != "procedural" for a in (f"--n-{s}", "0")]
    for where, extra in (("local", []), ("ray", ["--ray", ray_head])):
        r = subprocess.run([sys.executable, "-m", "tools.make_dataset", "--out", str(tmp_path / where), *args, *extra],
                           capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
    local = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.flac"))
    assert len(local) == 8 + 2 + 2  # test clip 0: clean + the 7 conditions; train clips 1, 2: clean + 1
    assert local == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*.flac"))
    for rel in local:
        assert np.array_equal(sf.read(tmp_path / "local" / rel, dtype="int32")[0],
                              sf.read(tmp_path / "ray" / rel, dtype="int32")[0]), rel
    manifest = [json.loads((tmp_path / w / "manifest.json").read_text()) for w in ("local", "ray")]
    assert manifest[0]["clips"] == manifest[1]["clips"]
