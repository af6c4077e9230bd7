"""Issue 16's trials against the running daemon (private PulseAudio): a second daemon never
takes over a live one, and hostile reloads and clients never stop it serving."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.request

import yaml

from tests.audio.pulse_harness import Daemon


def _sink_module(server, name: str = "rtupscale") -> int | None:
    for line in server.pactl("list", "modules", "short").stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] == "module-null-sink" and f"sink_name={name}" in parts[2]:
            return int(parts[0])
    return None


def _exit_code(d: Daemon, timeout: float = 30.0) -> int:
    d.proc.wait(timeout)
    return d.proc.returncode


def test_3_a_second_daemon_never_takes_over_a_live_one(pulse_server, make_config, daemon_factory, tmp_path):
    config = make_config("a.yaml", model={"path": "none"})
    first = daemon_factory(config)
    module = _sink_module(pulse_server)
    assert module is not None
    with socket.socket(socket.AF_UNIX) as silent:
        # a client that holds a connection and says nothing: the first daemon is "busy"
        silent.connect(str(first.socket))
        same_socket = daemon_factory(config, wait=False)
        assert _exit_code(same_socket) == 2, same_socket.log_text()
        assert "another rtupscale daemon is running" in same_socket.log_text()
        other = make_config("b.yaml", model={"path": "none"}, control={"socket": str(pulse_server.runtime / "other.sock")})
        same_sink = daemon_factory(other, wait=False)
        assert _exit_code(same_sink) == 2, same_sink.log_text()
        assert "the sink 'rtupscale' belongs to another running rtupscale daemon" in same_sink.log_text()
    assert "Traceback" not in same_socket.log_text() + same_sink.log_text()
    st = first.status()
    assert st["state"] == "running" and st["pid"] == first.proc.pid
    assert _sink_module(pulse_server) == module  # the first daemon's sink is still the one loaded


def _raw(path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        return json.loads(s.recv(65536))


def _status(sock) -> dict:
    from rtupscale.control import request

    ans = request(sock, {"cmd": "status"})
    assert ans["ok"], ans
    return ans["status"]


def _failed_reload(d: Daemon, sock, before: int) -> dict:
    """SIGHUP, then the status once the daemon counted a failed reload (the config file may
    be unreadable: the socket's path is passed in)."""
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = _status(sock)
        if st["reload_errors"] > before:
            return st
        time.sleep(0.1)
    raise AssertionError(f"no failed reload within 10 s:\n{d.log_text()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_1_2_8_9_15_the_daemon_keeps_serving_through_hostile_clients_and_reloads(pulse_server, make_config, daemon_factory):
    port = _free_port()
    config = make_config(model={"path": "none"}, control={"metrics_port": port})
    good = config.read_bytes()
    d = daemon_factory(config)
    sock = d.socket
    # 1: a JSON value that is not an object is answered, the socket keeps serving
    for payload in (b"[]\n", b"1\n", b'"x"\n'):
        assert _raw(sock, payload)["ok"] is False
    assert _status(sock)["state"] == "running"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    cfg = yaml.safe_load(good)
    cfg["control"]["metrics_port"] = taken.getsockname()[1]
    hostile = [
        ("not UTF-8", b"audio:\n  playback: K\xfcche\n"),  # 2
        ("aliases", b"a: &a [1, 1, 1]\nb: &b [*a, *a, *a]\naudio:\n  rate: *b\n"),  # 8
        ("the file has no keys", b"# truncated\n"),  # 15
        (f"cannot listen on 127.0.0.1:{taken.getsockname()[1]}", yaml.safe_dump(cfg).encode()),  # 9
    ]
    try:
        for i, (why, content) in enumerate(hostile):
            config.write_bytes(content)
            st = _failed_reload(d, sock, i)
            assert st["state"] == "running" and st["reload_errors"] == i + 1 and st["reloads"] == i + 1, (why, st)
            assert why in d.log_text(), why
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert "rtupscale_up 1" in body, why
    finally:
        taken.close()
    assert d.proc.poll() is None
    assert d.log_text().count("keeping the running config") >= len(hostile)
    config.write_bytes(good)
    assert d.stop() == 0
