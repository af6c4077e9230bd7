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
                "latency_ms": {"total_ms": 30.0}, "xruns": {"total": 3, "output_underflows": 3}, "engine": {"blocks": 7},
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
    assert "rtupscale_up 1.0" in body
    assert 'rtupscale_latency_seconds{component="total"} 0.03' in body
    assert "# TYPE rtupscale_xruns_total counter" in body
    assert 'rtupscale_xruns_total{kind="output_underflow"} 3.0' in body
    assert "# TYPE rtupscale_output_underflow_causes_total counter" in body
    assert 'rtupscale_output_underflow_causes_total{cause="server_late"} 2.0' in body
    assert 'rtupscale_output_underflow_causes_total{cause="ring_short"} 1.0' in body
    assert 'rtupscale_block_processing_seconds{clock="wall",stat="p99"} 0.0005' in body
    assert 'rtupscale_ring_fill_frames{ring="playback"} 100.0' in body


def test_metrics_from_a_full_status_parse_with_units_in_the_names():
    from prometheus_client.parser import text_string_to_metric_families

    from rtupscale.metrics import prometheus_text

    st = {"state": "running", "uptime_s": 10.0, "bypass": False, "recoveries": 1, "reloads": 2, "reload_errors": 0,
          "model": {"name": "m", "provider": "cpu"}, "blocks": 100,
          "latency_ms": {"total_ms": 39.0, "engine_ms": 4.5}, "xruns": {"total": 1, "input_overflows": 0, "output_underflows": 1},
          "processing_ms": {"median_ms": 1.0, "cpu_median_ms": 0.9, "budget_ms": 5.8},
          "engine": {"resets": 1}, "rings": {"capture_fill": 10, "capture_capacity": 32768, "drift_correction_ppm": 12.5}}
    families = {f.name: f for f in text_string_to_metric_families(prometheus_text(st))}
    assert families["rtupscale_xruns"].type == "counter"
    assert {s.labels["kind"]: s.value for s in families["rtupscale_xruns"].samples if s.name.endswith("_total")} == {
        "input_overflow": 0.0, "output_underflow": 1.0}  # no 'total' kind: sum() does that
    assert families["rtupscale_drift_correction_ratio"].samples[0].value == pytest.approx(12.5e-6)
    assert families["rtupscale_block_budget_seconds"].samples[0].value == pytest.approx(5.8e-3)
    assert {s.labels["clock"] for s in families["rtupscale_block_processing_seconds"].samples} == {"wall", "cpu"}
