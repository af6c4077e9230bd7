"""Hostile input and faults (issue 16): each numbered trial as a test of the behaviour chosen.

The convention under test: a user error is one line on stderr naming the thing and what is
allowed, exit 2; the running daemon never exits because of anything it reads and logs why
it kept its state; the control socket and the metrics endpoint survive any bytes and any
client timing; nothing non-finite reaches a file.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from rtupscale import control
from rtupscale.config import Config, ConfigError, load_config
from rtupscale.engine import Engine
from rtupscale.fileio import FileModeError, upscale_file
from rtupscale.model.contract import ModelError
from rtupscale.model.runner import ModelRunner
from tests import onnx_models
from tests.signals import tone

REPO = Path(__file__).resolve().parents[1]
RATE = 44100


# ----------------------------------------------------------------------------- helpers
def _cli(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rtupscale.cli", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, timeout=120, **kw)


def _one_line_exit_2(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The single stderr line of a user error, checked: exit 2, no traceback, the needles."""
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    # the notice that --model none runs the bypass path is information, printed before work starts
    lines = [line for line in r.stderr.strip().splitlines() if "running the bypass path only" not in line]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@dataclass
class _Ctl:
    socket: str
    metrics_port: int = 0


class _FakeDaemon:
    """What the control server calls on the daemon."""

    def __init__(self):
        self.bypass = False

    def status(self):
        return {"state": "running", "uptime_s": 1.5, "pid": os.getpid(), "recoveries": 0, "reloads": 0,
                "reload_errors": 0, "bypass": self.bypass, "xruns": {"total": 0}}

    def set_bypass(self, on):
        self.bypass = on


@pytest.fixture
def server(tmp_path):
    srv = control.ControlServer(_FakeDaemon(), _Ctl(str(tmp_path / "c.sock")))
    srv.start()
    yield srv
    srv.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _raw(path: Path, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes to the control socket, half-close, read the whole answer."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def _write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def wav(tmp_path):
    p = tmp_path / "in.wav"
    sf.write(p, tone(440, RATE, 20000, amp=0.5).T, RATE, subtype="FLOAT")
    return p


def _daemon_for(config_path: Path):
    """A Daemon object with no audio path open: enough to call ``reload``."""
    from rtupscale.live.daemon import Daemon

    return Daemon(load_config(config_path), str(config_path))


# ------------------------------------------------------------- 1: one message kills the socket
@pytest.mark.parametrize(
    "payload",
    [b"[]\n", b"1\n", b'"x"\n', b"null\n", b"\xff\xfe\x00garbage\n", b"{not json\n", b"[" * 50000 + b"\n",
     b'{"cmd": ["status"]}\n', b"x" * 200000],
)
def test_1_control_socket_answers_any_bytes_and_keeps_serving(server, payload):
    ans = _raw(server.path, payload)
    import json

    reply = json.loads(ans)
    assert reply["ok"] is False and reply["error"]
    # the socket still serves
    assert control.request(server.path, {"cmd": "status"}, timeout=2)["ok"] is True


# ------------------------------------------------------------- 2: non-UTF-8 config
def _latin1_config(tmp_path: Path) -> Path:
    p = tmp_path / "latin1.yaml"
    p.write_bytes(b"audio:\n  playback: K\xfcche\n")
    return p


def test_2_non_utf8_config_is_one_line_exit_2(tmp_path):
    p = _latin1_config(tmp_path)
    _one_line_exit_2(_cli("check-config", str(p)), "not UTF-8", "byte 0xfc at line 2, column 14")
    _one_line_exit_2(_cli("run", "--config", str(p)), "not UTF-8")


def test_2_reload_of_non_utf8_config_keeps_the_running_one(tmp_path, caplog):
    p = _write_config(tmp_path / "c.yaml", {"latency": {"block_size": 512}})
    d = _daemon_for(p)
    running = d.config
    p.write_bytes(b"audio:\n  playback: K\xfcche\n")
    with caplog.at_level(logging.ERROR, logger="rtupscale.daemon"):
        d.reload()  # must not raise: the daemon would exit
    assert d.config is running and d.reload_errors == 1
    assert "not UTF-8" in caplog.text and "keeping the running config" in caplog.text


# ------------------------------------------------------------- 3: a second daemon takes over
def test_3_second_daemon_cannot_take_over_a_busy_one(server):
    inode = os.stat(server.path).st_ino
    with socket.socket(socket.AF_UNIX) as silent:  # holds a connection open, sends nothing
        silent.connect(str(server.path))
        with pytest.raises(control.ControlError, match=r"another rtupscale daemon is running \(pid \d+"):
            control.ControlServer(_FakeDaemon(), _Ctl(str(server.path))).start()
        assert os.stat(server.path).st_ino == inode  # the live socket was not unlinked
        assert control.request(server.path, {"cmd": "ping"}, timeout=2) == {"ok": True}


def test_3_second_daemon_cannot_take_over_one_whose_control_thread_stopped(server):
    server._listener.stopping = True  # the accept thread ends; the daemon (and its lock) lives on
    server._listener.thread.join(3)
    with pytest.raises(control.ControlError, match="another rtupscale daemon"):
        control.ControlServer(_FakeDaemon(), _Ctl(str(server.path))).start()
    assert server.path.exists()


def test_3_virtual_sink_of_a_live_daemon_is_never_claimed(tmp_path, monkeypatch):
    from rtupscale.audio.devices import DeviceError

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    first, second = _daemon_for(_write_config(tmp_path / "c.yaml", {"model": {"path": "none"}})), None
    first.claim_sink("rtupscale")
    second = _daemon_for(tmp_path / "c.yaml")
    with pytest.raises(DeviceError, match="belongs to another running rtupscale daemon"):
        second.claim_sink("rtupscale")
    second.claim_sink("other")  # another name is free
    first.release_sink_claim()
    second.claim_sink("rtupscale")  # free once its owner let go (or died)


# ------------------------------------------------------------- 4: NaN/Inf input
def _hostile_block(channels: int, n: int) -> np.ndarray:
    x = (0.3 * np.random.default_rng(4).standard_normal((channels, n))).astype(np.float32)
    x[0, 5] = np.nan
    x[1, 9] = np.inf
    x[0, 17] = -np.inf
    return x


@pytest.mark.parametrize("model_fixture", [None, "fir_model"])
def test_4_engine_replaces_nonfinite_input(model_fixture, request):
    runner = ModelRunner(request.getfixturevalue(model_fixture)) if model_fixture else None
    eng = Engine(2, RATE, 256, runner)
    for i in range(20):
        x = _hostile_block(2, 256) if i == 3 else (0.3 * np.ones((2, 256), np.float32))
        y = eng.process(x)
        assert np.isfinite(y).all(), i
    assert eng.counters.nonfinite_inputs == 3
    assert eng.counters.guard_events == 0  # the model never saw the NaN


@pytest.mark.parametrize("out_name, bits", [("o.flac", "24"), ("o.wav", "float")])
@pytest.mark.parametrize("model_fixture", [None, "fir_model"])
def test_4_nonfinite_input_file_gives_a_finite_output(tmp_path, out_name, bits, model_fixture, request, caplog):
    runner = ModelRunner(request.getfixturevalue(model_fixture)) if model_fixture else None
    x = tone(440, RATE, 20000, amp=0.5)
    x[:, 1000:1293] = np.nan
    x[1, 5000] = np.inf
    src = tmp_path / "nan.wav"
    sf.write(src, x.T, RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="rtupscale.file"):
        upscale_file(src, tmp_path / out_name, Config(), runner=runner, bits=bits, progress=False)
    y, _ = sf.read(tmp_path / out_name, always_2d=True)
    assert np.isfinite(y).all()
    assert f"{src}: 587 samples are NaN or infinite; they were replaced by 0" in caplog.text


# ------------------------------------------------------------- 5: environment errors, one line
@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 kB tmpfs (needs root and a mount namespace that allows it; else skipped)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_5_disk_full_is_one_line_and_leaves_nothing(tmp_path, small_tmpfs):
    noise = tmp_path / "noise.wav"  # 2 s of noise: about 2 MB of FLAC at 4x the rate
    sf.write(noise, (0.3 * np.random.default_rng(0).standard_normal((2 * RATE, 2))).astype(np.float32), RATE)
    out = small_tmpfs / "o.flac"
    with pytest.raises(FileModeError, match=r"o\.flac: the disk is full"):
        upscale_file(noise, out, Config(), bits="24", progress=False)
    assert list(small_tmpfs.iterdir()) == []


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"root, and cannot mount a read-only tmpfs here: {r.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=True)


def test_5_read_only_folder_is_one_line(wav, read_only_folder):
    with pytest.raises(FileModeError, match=r"o\.flac: cannot create a file in .*\((Read-only file system|Permission denied)\)"):
        upscale_file(wav, read_only_folder / "o.flac", Config(), progress=False)


def test_5_output_that_is_a_folder_is_one_line(wav, tmp_path):
    (tmp_path / "d.flac").mkdir()
    _one_line_exit_2(_cli("upscale", str(wav), str(tmp_path / "d.flac"), "--model", "none", "--force"), "is a folder")
    assert (tmp_path / "d.flac").is_dir()


def test_5_truncated_flac_is_one_line_and_leaves_nothing(tmp_path):
    full = tmp_path / "full.flac"
    sf.write(full, (0.3 * np.random.default_rng(0).standard_normal((4 * RATE, 2))).astype(np.float32), RATE)
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    r = _cli("upscale", str(cut), str(tmp_path / "o.flac"), "--model", "none")
    _one_line_exit_2(r, "cut.flac: cannot decode past frame", "damaged or truncated")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.flac", "full.flac"]


def test_5_metrics_port_taken_at_start_is_one_line_and_leaves_no_socket(tmp_path):
    sock = tmp_path / "c.sock"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = _write_config(tmp_path / "c.yaml", {"control": {"socket": str(sock), "metrics_port": port}})
        _one_line_exit_2(_cli("run", "--config", str(cfg)), f"control.metrics_port: cannot listen on 127.0.0.1:{port}")
    assert not sock.exists()


@pytest.mark.parametrize("where", ["folder", "under a file", "too long"])
def test_5_unusable_control_socket_path_is_a_control_error(tmp_path, where):
    if where == "folder":
        path = tmp_path / "dir.sock"
        path.mkdir()
        match = "exists and is a folder, not a socket"
    elif where == "under a file":
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "c.sock"
        match = "cannot create the folder"
    else:
        path = tmp_path / ("x" * 120) / "c.sock"
        match = "longer than 107 bytes"
    with pytest.raises(control.ControlError, match=match):
        control.ControlServer(_FakeDaemon(), _Ctl(str(path))).start()
    if where == "folder":
        assert path.is_dir()


@pytest.mark.parametrize("key, value", [("latency", "1000000000000"), ("block_multiple", "1000000000")])
def test_5_absurd_model_metadata_is_a_model_error(tmp_path, key, value):
    path = onnx_models.stateful_fir(tmp_path / "absurd.onnx", extra_meta={key: value})
    with pytest.raises(ModelError, match=f"metadata rtupscale.{key}: {value} is above the maximum"):
        ModelRunner(path)
    r = _cli("upscale", str(tmp_path / "missing.wav"), str(tmp_path / "o.flac"), "--model", str(path))
    _one_line_exit_2(r, "above the maximum")


@pytest.mark.parametrize("value", ["-1", "1e8", "100000000", "0", "15", "16385"])
def test_5_and_11_block_size_flag_out_of_range_is_one_line(wav, tmp_path, value):
    r = _cli("upscale", str(wav), str(tmp_path / "o.flac"), "--model", "none", f"--block-size={value}")
    _one_line_exit_2(r, "--block-size", "expected an integer from 16 to 16384", repr(value))
    assert not (tmp_path / "o.flac").exists()


# ------------------------------------------------------------- 6: control.socket is a user's file
def test_6_control_socket_on_a_regular_file_keeps_the_file(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes")
    with pytest.raises(control.ControlError, match="exists and is a file, not a socket"):
        control.ControlServer(_FakeDaemon(), _Ctl(str(precious))).start()
    assert precious.read_text() == "my notes"


# ------------------------------------------------------------- 7: slow and idle clients, floods
def test_7_idle_metrics_connection_does_not_block_metrics(tmp_path):
    port = _free_port()
    srv = control.ControlServer(_FakeDaemon(), _Ctl(str(tmp_path / "c.sock"), port))
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", port)):  # connects, says nothing
            t0 = time.monotonic()
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert time.monotonic() - t0 < 1.0
        assert "rtupscale_up 1" in body
    finally:
        srv.stop()


def test_7_trickling_metrics_client_is_cut_and_does_not_block_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "METRICS_DEADLINE_S", 1.5)
    port = _free_port()
    srv = control.ControlServer(_FakeDaemon(), _Ctl(str(tmp_path / "c.sock"), port))
    srv.start()
    try:
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.settimeout(0.2)
            t0 = time.monotonic()
            request = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 1000
            closed_after = None
            others_served = False
            for byte in request:  # one byte every 0.2 s: the request never completes
                try:
                    slow.sendall(bytes([byte]))
                    if slow.recv(4096) == b"":
                        closed_after = time.monotonic() - t0
                        break
                except socket.timeout:
                    pass
                except OSError:
                    closed_after = time.monotonic() - t0
                    break
                if time.monotonic() - t0 > 0.5 and not others_served:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
                    others_served = "rtupscale_up 1" in body
        assert others_served
        assert closed_after is not None and 1.5 <= closed_after < 3.0, closed_after
    finally:
        srv.stop()


def test_7_trickling_control_client_is_cut_and_does_not_block_others(server):
    cut_after = {}

    def trickle():
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(server.path))
            t0 = time.monotonic()
            s.settimeout(0.3)
            try:
                for _ in range(40):  # one byte every 0.2 s: a request that never ends
                    s.sendall(b" ")
                    try:
                        if s.recv(4096):
                            break  # answered (an error) and closed
                    except socket.timeout:
                        pass
            except OSError:
                pass
            cut_after["s"] = time.monotonic() - t0

    t = threading.Thread(target=trickle)
    t.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    assert control.request(server.path, {"cmd": "status"}, timeout=2)["ok"]
    assert time.monotonic() - t0 < 0.5
    t.join(15)
    assert control.CONNECTION_DEADLINE_S <= cut_after["s"] < control.CONNECTION_DEADLINE_S + 1.5


def test_7_two_hundred_concurrent_status_calls_are_all_answered(server):
    results: list = []

    def ask():
        try:
            results.append(control.request(server.path, {"cmd": "status"}, timeout=10)["ok"])
        except control.ControlError as e:
            results.append(str(e))

    threads = [threading.Thread(target=ask) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count(True) == 200, [r for r in results if r is not True][:3]


# ------------------------------------------------------------- 8: YAML alias bomb, huge values
def _alias_bomb(levels: int = 6) -> str:
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"audio:\n  rate: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def test_8_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text(_alias_bomb())
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert time.monotonic() - t0 < 1.0
    assert any("YAML aliases (*a0) are not allowed" in e for e in info.value.errors), info.value.errors
    assert all(len(e) < 300 for e in info.value.errors)
    line = _one_line_exit_2(_cli("check-config", str(p)), "aliases")
    assert len(line) < 300


@pytest.mark.parametrize(
    "text, expected",
    [
        ("latency:\n  block_size: " + "x" * 100000 + "\n", "latency.block_size: expected an integer, got 'xxxx"),
        ("audio:\n  rate: [" + ", ".join(["0"] * 20000) + "]\n", "more than 10000 YAML nodes"),
        ("# padding\n" * 120000, "larger than 1 MiB"),
        ("[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
)
def test_8_config_size_nodes_and_echoed_values_are_bounded(tmp_path, text, expected):
    p = tmp_path / "big.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert any(expected in e for e in info.value.errors), info.value.errors
    assert all(len(e) < 300 for e in info.value.errors)


def test_8_reload_of_an_alias_bomb_keeps_the_running_config(tmp_path, caplog):
    p = _write_config(tmp_path / "c.yaml", {"latency": {"block_size": 512}})
    d = _daemon_for(p)
    running = d.config
    p.write_text(_alias_bomb())
    with caplog.at_level(logging.ERROR, logger="rtupscale.daemon"):
        d.reload()
    assert d.config is running and d.reload_errors == 1
    assert "aliases" in caplog.text and max(len(m) for m in caplog.messages) < 300


# ------------------------------------------------------------- 9: SIGHUP with the port taken
def test_9_restart_onto_a_taken_port_keeps_the_old_metrics_and_socket(tmp_path):
    old_port = _free_port()
    sock = str(tmp_path / "c.sock")
    srv = control.ControlServer(_FakeDaemon(), _Ctl(sock, old_port))
    srv.start()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            new_port = taken.getsockname()[1]
            with pytest.raises(control.ControlError, match=f"cannot listen on 127.0.0.1:{new_port}"):
                srv.restart(_Ctl(str(tmp_path / "new.sock"), new_port))
        body = urllib.request.urlopen(f"http://127.0.0.1:{old_port}/metrics", timeout=5).read().decode()
        assert "rtupscale_up 1" in body
        assert control.request(Path(sock), {"cmd": "ping"}, timeout=2) == {"ok": True}
        assert not (tmp_path / "new.sock").exists()
        # a port that is free is taken over: the old one closes, the new one serves
        free = _free_port()
        srv.restart(_Ctl(sock, free))
        assert "rtupscale_up 1" in urllib.request.urlopen(f"http://127.0.0.1:{free}/metrics", timeout=5).read().decode()
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{old_port}/metrics", timeout=2)
    finally:
        srv.stop()


# ------------------------------------------------------------- 10: check-config checks the model
@pytest.fixture(scope="module")
def model_128(tmp_path_factory):
    return onnx_models.stateful_fir(tmp_path_factory.mktemp("m128") / "m128.onnx", block_multiple=128)


def test_10_check_config_checks_block_size_against_the_model(tmp_path, model_128):
    bad = _write_config(tmp_path / "bad.yaml", {"model": {"path": str(model_128)}, "latency": {"block_size": 100}})
    _one_line_exit_2(_cli("check-config", str(bad)), "latency.block_size: block size 100 is not a multiple of the model's block multiple 128")
    good = _write_config(tmp_path / "good.yaml", {"model": {"path": str(model_128)}, "latency": {"block_size": 256}})
    r = _cli("check-config", str(good))
    assert r.returncode == 0 and "config is valid" in r.stdout, r.stderr


@pytest.mark.parametrize("kind", ["wav", "text", "onnx without metadata"])
def test_10_check_config_refuses_a_model_that_is_not_an_rtupscale_onnx(tmp_path, kind):
    if kind == "wav":
        model = tmp_path / "song.wav"
        sf.write(model, tone(440, RATE, 1000).T, RATE)
        needle = "not a loadable ONNX model"
    elif kind == "text":
        model = tmp_path / "notes.onnx"
        model.write_text("hello\n")
        needle = "not a loadable ONNX model"
    else:
        model = onnx_models.stateful_fir(tmp_path / "bare.onnx", metadata={})
        needle = "metadata rtupscale.contract is missing"
    cfg = _write_config(tmp_path / "c.yaml", {"model": {"path": str(model)}})
    _one_line_exit_2(_cli("check-config", str(cfg)), "model.path:", needle)


# ------------------------------------------------------------- 12: overwrite, umask
def test_12_existing_output_needs_force(wav, tmp_path):
    out = tmp_path / "o.flac"
    out.write_bytes(b"previous")
    with pytest.raises(FileModeError, match=r"o\.flac: already exists; add --force to replace it"):
        upscale_file(wav, out, Config(), progress=False)
    assert out.read_bytes() == b"previous"
    _one_line_exit_2(_cli("upscale", str(wav), str(out), "--model", "none"), "already exists; add --force")
    r = _cli("upscale", str(wav), str(out), "--model", "none", "--force")
    assert r.returncode == 0, r.stderr
    assert sf.info(out).samplerate == 4 * RATE


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_12_output_mode_follows_the_umask(wav, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        upscale_file(wav, tmp_path / "o.flac", Config(), progress=False)
    finally:
        os.umask(old)
    assert (tmp_path / "o.flac").stat().st_mode & 0o777 == mode


# ------------------------------------------------------------- 13: signals during upscale
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_13_terminating_signal_during_upscale_leaves_nothing(tmp_path, sig):
    src = tmp_path / "long.wav"
    sf.write(src, (0.3 * np.random.default_rng(0).standard_normal((120 * RATE, 2))).astype(np.float32), RATE)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # A shell starts a background job with SIGINT ignored, and Python keeps an inherited
    # SIG_IGN (then Ctrl-C is not asked of it): the upscale gets the default, as from a terminal.
    p = subprocess.Popen([sys.executable, "-m", "rtupscale.cli", "upscale", str(src), str(out_dir / "o.flac"),
                          "--model", "none", "--no-progress"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not any(out_dir.iterdir()) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.02)
    assert p.poll() is None, "the upscale ended before the signal"
    time.sleep(0.2)
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    assert list(out_dir.iterdir()) == [], err
    assert "Traceback" not in err
    assert p.returncode == (130 if sig == signal.SIGINT else 128 + sig), err


# ------------------------------------------------------------- 14: truncated MP3
def test_14_truncated_mp3_warns_with_the_missing_duration(tmp_path, caplog):
    full = tmp_path / "full.mp3"
    x = (0.3 * np.random.default_rng(0).standard_normal((4 * RATE, 2))).astype(np.float32)
    try:
        sf.write(full, x, RATE, format="MP3")
    except (sf.LibsndfileError, TypeError, ValueError) as e:  # pragma: no cover - old libsndfile
        pytest.skip(f"this libsndfile cannot write MP3: {e}")
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    header = sf.info(cut).frames
    with caplog.at_level(logging.WARNING, logger="rtupscale.file"):
        res = upscale_file(cut, tmp_path / "o.flac", Config(), progress=False)
    assert res.output_frames == 4 * header  # the header's length, completed with silence
    msgs = [m for m in caplog.messages if "truncated" in m]
    assert len(msgs) == 1 and str(cut) in msgs[0]
    seconds = float(msgs[0].split("ends ")[1].split(" s")[0])
    assert 1.5 < seconds < 2.5  # half of 4 s is missing


# ------------------------------------------------------------- 15: empty config
@pytest.mark.parametrize("text", ["", "# all commented out\n# model:\n#   path: x.onnx\n"])
def test_15_config_without_keys_is_an_error(tmp_path, text):
    p = tmp_path / "empty.yaml"
    p.write_text(text)
    _one_line_exit_2(_cli("check-config", str(p)), "the file has no keys")


def test_15_reload_of_an_emptied_config_keeps_the_running_one(tmp_path, caplog):
    p = _write_config(tmp_path / "c.yaml", {"latency": {"block_size": 512}})
    d = _daemon_for(p)
    running = d.config
    p.write_text("# truncated\n")
    with caplog.at_level(logging.ERROR, logger="rtupscale.daemon"):
        d.reload()
    assert d.config is running and d.reload_errors == 1
    assert "the file has no keys" in caplog.text and "keeping the running config" in caplog.text


# ------------------------------------------------------------- 16: status | head -1
def test_16_status_into_a_closed_pipe_is_quiet(tmp_path):
    srv = control.ControlServer(_FakeDaemon(), _Ctl(str(tmp_path / "c.sock")))
    srv.start()
    try:
        cfg = _write_config(tmp_path / "c.yaml", {"control": {"socket": str(tmp_path / "c.sock")}})
        p = subprocess.Popen([sys.executable, "-m", "rtupscale.cli", "status", "--json", "--config", str(cfg)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.close()  # the reader is gone before anything is written (as `| head -1` after one line)
        err = p.stderr.read().decode()
        p.wait(30)
    finally:
        srv.stop()
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert p.returncode == 0
