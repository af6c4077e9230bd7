"""The control socket and the metrics, against a real ControlServer (no sound needed)."""

from __future__ import annotations

import json
import socket
import urllib.request
from dataclasses import dataclass

import pytest

from rtupscale import control


@dataclass
class _Ctl:
    socket: str
    metrics_port: int = 0


class _Daemon:
    """The two calls the control server makes on the daemon."""

    def __init__(self):
        self.bypass = False

    def status(self):
        return {"state": "running", "uptime_s": 1.5, "bypass": self.bypass, "recoveries": 0,
                "latency_ms": {"total_ms": 30.0}, "xruns": {"total": 3}, "engine": {"blocks": 7},
                "output_underflow_causes": {"server_late": 2, "ring_short": 1},
                "rings": {"playback_fill": 100}, "processing_ms": {"p99_ms": 0.5}}

    def set_bypass(self, on):
        self.bypass = on


def test_socket_is_private_and_answers(tmp_path):
    d = _Daemon()
    srv = control.ControlServer(d, _Ctl(str(tmp_path / "c.sock")))
    srv.start()
    try:
        assert oct((tmp_path / "c.sock").stat().st_mode & 0o777) == "0o600"
        assert control.request(srv.path, {"cmd": "status"})["status"]["state"] == "running"
        assert control.request(srv.path, {"cmd": "bypass", "on": True}) == {"ok": True, "bypass": True}
        assert d.bypass is True
        bad = control.request(srv.path, {"cmd": "bypass", "on": "yes"})
        assert not bad["ok"] and "true or false" in bad["error"]
        unknown = control.request(srv.path, {"cmd": "reboot"})
        assert not unknown["ok"] and "allowed: ping, status, bypass" in unknown["error"]
        # a second daemon on the same socket is refused
        with pytest.raises(control.ControlError, match="another rtupscale daemon"):
            control.ControlServer(_Daemon(), _Ctl(str(tmp_path / "c.sock"))).start()
    finally:
        srv.stop()
    assert not (tmp_path / "c.sock").exists()
    with pytest.raises(control.ControlError, match="no daemon running"):
        control.request(srv.path, {"cmd": "status"})


def test_stale_socket_is_replaced(tmp_path):
    p = tmp_path / "c.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(p))
    s.close()  # bound, never listening: a dead daemon's socket
    srv = control.ControlServer(_Daemon(), _Ctl(str(p)))
    srv.start()
    try:
        assert control.request(p, {"cmd": "ping"}) == {"ok": True}
    finally:
        srv.stop()


def test_auto_socket_needs_xdg_runtime_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert control.socket_path("auto") == tmp_path / "rtupscale.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    with pytest.raises(control.ControlError, match="XDG_RUNTIME_DIR"):
        control.socket_path("auto")


def test_prometheus_metrics_on_localhost(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = control.ControlServer(_Daemon(), _Ctl(str(tmp_path / "c.sock"), port))
    srv.start()
    try:
        assert srv._http.server_address[0] == "127.0.0.1"
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        srv.stop()
    assert "rtupscale_up 1" in body
    assert "rtupscale_latency_total_seconds 0.03" in body
    assert "# TYPE rtupscale_xruns_total counter" in body
    assert "rtupscale_output_underflows_server_late_total 2" in body
    assert "rtupscale_output_underflows_ring_short_total 1" in body
