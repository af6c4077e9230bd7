"""Talking to the running daemon: a unix socket (mode 0600) and optional Prometheus metrics.

Protocol: one JSON object per connection, one JSON answer, e.g. ``{"cmd": "status"}`` ->
``{"ok": true, "status": {...}}``; ``{"cmd": "bypass", "on": true}`` -> ``{"ok": true}``.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import stat
import sys
import threading
from pathlib import Path

from rtupscale.errors import UserError

log = logging.getLogger("rtupscale.control")

SOCKET_NAME = "rtupscale.sock"
CLIENT_TIMEOUT_S = 3.0


class ControlError(UserError):
    """No daemon answers, or the socket cannot be used."""


def socket_path(setting: str) -> Path:
    """``control.socket``: ``auto`` = ``$XDG_RUNTIME_DIR/rtupscale.sock``."""
    if setting != "auto":
        return Path(os.path.expanduser(setting))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime:
        raise ControlError(
            "control.socket: auto needs $XDG_RUNTIME_DIR (set by a login session); set control.socket to a path"
        )
    return Path(runtime) / SOCKET_NAME


def request(path: Path, message: dict, timeout: float = CLIENT_TIMEOUT_S) -> dict:
    """Send one request to the daemon at ``path``; raises ControlError if none answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(json.dumps(message).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"no daemon running (nothing answers on {path}); start one with `rtupscale run`") from None
    except socket.timeout:
        raise ControlError(f"the daemon on {path} did not answer within {timeout:g} s") from None
    except OSError as e:
        raise ControlError(f"cannot talk to the daemon on {path}: {e.strerror or e}") from None
    finally:
        s.close()
    try:
        return json.loads(b"".join(chunks))
    except json.JSONDecodeError:
        raise ControlError(f"the daemon on {path} sent an unreadable answer") from None


class ControlServer:
    """The daemon's side: a thread serving the socket (and one serving metrics)."""

    def __init__(self, daemon, control_config):
        self.daemon = daemon
        self.config = control_config
        self.path = socket_path(control_config.socket)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._http: http.server.HTTPServer | None = None
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        p = self.path
        if p.exists() or p.is_symlink():
            try:
                request(p, {"cmd": "ping"}, timeout=1.0)
            except ControlError:
                p.unlink()  # stale socket of a daemon that died
            else:
                raise ControlError(f"another rtupscale daemon is running (it answers on {p}); stop it first")
        p.parent.mkdir(parents=True, exist_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is created 0600: only this user may control us
        try:
            s.bind(str(p))
        finally:
            os.umask(old)
        os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)
        s.listen(8)
        s.settimeout(0.5)
        self._sock = s
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="rtupscale-control", daemon=True)
        self._thread.start()
        if self.config.metrics_port:
            self._start_metrics(self.config.metrics_port)

    def stop(self) -> None:
        self._stopping = True
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def restart(self, control_config) -> None:
        self.stop()
        self.config = control_config
        self.path = socket_path(control_config.socket)
        self.start()
        log.info("control socket %s%s", self.path, f", metrics on 127.0.0.1:{control_config.metrics_port}" if control_config.metrics_port else "")

    # -- serving ------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with conn:
                conn.settimeout(2.0)
                try:
                    data = b""
                    while not data.endswith(b"\n") and len(data) < 65536:
                        b = conn.recv(4096)
                        if not b:
                            break
                        data += b
                    answer = self.handle(json.loads(data or b"{}"))
                except (json.JSONDecodeError, OSError, ValueError) as e:
                    answer = {"ok": False, "error": f"bad request: {e}"}
                try:
                    conn.sendall(json.dumps(answer, default=str).encode())
                except OSError:
                    pass

    def handle(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "ping":
            return {"ok": True}
        if cmd == "status":
            return {"ok": True, "status": self.daemon.status()}
        if cmd == "bypass":
            on = req.get("on")
            if not isinstance(on, bool):
                return {"ok": False, "error": "bypass: 'on' must be true or false"}
            self.daemon.set_bypass(on)
            return {"ok": True, "bypass": on}
        return {"ok": False, "error": f"unknown command {cmd!r}; allowed: ping, status, bypass"}

    # -- Prometheus -----------------------------------------------------------------------
    def _start_metrics(self, port: int) -> None:
        daemon = self.daemon

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.rstrip("/") not in ("/metrics", ""):
                    self.send_error(404)
                    return
                body = prometheus_text(daemon.status()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self._http = http.server.HTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self._http.serve_forever, name="rtupscale-metrics", daemon=True).start()
        log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", port)


def prometheus_text(st: dict) -> str:
    """The status as Prometheus text exposition (gauges and counters)."""
    lines = []

    def metric(name, value, help_, kind="gauge", labels=""):
        if value is None:
            return
        lines.append(f"# HELP rtupscale_{name} {help_}")
        lines.append(f"# TYPE rtupscale_{name} {kind}")
        lines.append(f"rtupscale_{name}{labels} {float(value):g}")

    metric("up", 1 if st.get("state") == "running" else 0, "1 while the audio path runs")
    metric("uptime_seconds", st.get("uptime_s"), "seconds since start")
    metric("bypass", 1 if st.get("bypass") else 0, "1 when the plain upsampler is selected")
    metric("recoveries_total", st.get("recoveries"), "audio path reopenings", "counter")
    for k, v in (st.get("latency_ms") or {}).items():
        metric(f"latency_{k.removesuffix('_ms')}_seconds", v / 1e3, f"latency component {k}")
    for k, v in (st.get("processing_ms") or {}).items():
        metric(f"processing_{k.removesuffix('_ms')}_seconds", v / 1e3, f"processing time per block: {k}")
    for k, v in (st.get("xruns") or {}).items():
        metric("xruns_total" if k == "total" else f"xruns_{k}_total", v, f"xruns: {k}", "counter")
    for k, v in (st.get("output_underflow_causes") or {}).items():
        metric(f"output_underflows_{k}_total", v, f"output underflows whose cause was {k.replace('_', ' ')}", "counter")
    for k, v in (st.get("engine") or {}).items():
        metric(f"engine_{k}_total", v, f"engine counter {k}", "counter")
    rings = st.get("rings") or {}
    for k in ("capture_fill", "playback_fill", "playback_target", "playback_level_ema", "playback_owed", "drift_correction_ppm"):
        metric(f"ring_{k}", rings.get(k), f"ring {k}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- commands
def _path_from_config(config_path: str | None) -> Path:
    from rtupscale.cli import default_config_path, load_config_or_exit

    cfg = load_config_or_exit(config_path or default_config_path())
    return socket_path(cfg.control.socket)


def format_status(st: dict) -> list[str]:
    lines = [f"state: {st['state']}" + (f" ({st['stop_reason']})" if st.get("stop_reason") else "")]
    lines.append(f"uptime: {st['uptime_s']:.0f} s, pid {st['pid']}, recoveries {st['recoveries']}, reloads {st['reloads']} ({st['reload_errors']} failed)")
    if "server" not in st:
        return lines
    cap, pb = st["capture"], st["playback"]
    streams = {"pulse": "native PulseAudio streams", "portaudio": "PortAudio"}.get(st.get("backend", ""), st.get("backend", ""))
    lines.append(f"sound server: {st['server']}" + (f"; streams: {streams}" if streams else ""))
    lines.append(f"capture: {cap['device']} at {cap['rate']} Hz" + (f"  [{cap['route']}]" if cap.get("route") else ""))
    dac = pb.get("dac_rate")
    reach = "not checked yet" if dac is None else (f"{dac} Hz reaches the DAC" + (" (RESAMPLED)" if pb.get("resampled") else ""))
    lines.append(f"playback: {pb['device']} at {pb['rate']} Hz: {reach}" + (f"  [{pb['route']}]" if pb.get("route") else ""))
    if pb.get("advice"):
        lines.append(f"  fix: {pb['advice']}")
    m = st.get("model")
    lines.append(f"model: {'none (plain x4 upsampler)' if m is None else m['name'] + ' on ' + m['provider']}; bypass {'on' if st['bypass'] else 'off'} (model gain {st['model_gain']})")
    lat = st["latency_ms"]
    lines.append(
        f"latency: {lat['total_ms']:.1f} ms = engine {lat['engine_ms']:.1f} + capture ring {lat['capture_ring_ms']:.1f}"
        f" + playback ring {lat['playback_ring_ms']:.1f} (target {lat['prefill_target_ms']:.1f}; the rings hold the {lat['block_ms']:.1f} ms block) + devices {lat['device_in_ms']:.1f} in / {lat['device_out_ms']:.1f} out + sink {lat['sink_ms']:.1f}"
    )
    r = st["rings"]
    band = r.get("playback_level_band")
    lines.append(
        f"rings: capture {r['capture_fill']}/{r['capture_capacity']}, playback {r['playback_fill']}/{r['playback_capacity']} frames"
        f" (level {r['playback_level_ema']:.0f}, target {r['playback_target']}"
        + (f", band {band[0]:.0f}..{band[1]:.0f}" if band else "")
        + (f", lowest {r['playback_min_fill']}" if r.get("playback_min_fill") is not None else "")
        + (f"; the level is the ring less what the server is owed ({r['playback_owed']:.0f} at the last look)" if "playback_owed" in r else "")
        + f"), drift correction {r['drift_correction_ppm']:+.1f} ppm"
    )
    p = st["processing_ms"]
    lines.append(
        f"block {st['block_size']} frames: processing median {p['median_ms']:.3f} ms, p99 {p['p99_ms']:.3f} ms, max {p['max_ms']:.3f} ms (budget {p['budget_ms']:.2f} ms)"
        + (f", of it the worker's CPU median {p['cpu_median_ms']:.3f} ms, p99 {p['cpu_p99_ms']:.3f} ms" if "cpu_median_ms" in p else "")
        + f"; {st['blocks']} blocks"
    )
    w = st.get("worker_late_wakes")
    if w:
        lines.append(f"worker woken late (kept from running: another thread held the GIL, or it was preempted): {w['count']} times over {w['over_ms']:g} ms, at most {w['max_ms']:.2f} ms")
    g = st.get("gc")
    if g:
        slow = g.get("last_slow")
        lines.append(
            f"garbage collections: {'/'.join(str(n) for n in g['collections'])} (generations 0/1/2), {g['frozen_objects']} objects frozen, "
            f"{g['slow']} over {g['slow_over_ms']:g} ms (longest {g['max_ms']:.2f} ms"
            + (f"; last slow: generation {slow['generation']}, {slow['ms']:.2f} ms" if slow else "") + ")"
        )
    x = st["xruns"]
    e = st["engine"]
    lines.append(
        f"xruns: {x['total']} (input overflows {x['input_overflows']}, output underflows {x['output_underflows']}, "
        f"capture ring full {x['capture_ring_full']}, playback ring empty {x['playback_ring_empty']}, late skips {x['late_skips']}, drops {x.get('drops', 0)})"
    )
    if st.get("output_underflow_causes"):
        c = st["output_underflow_causes"]
        lines.append("output underflows by cause: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(c.items())))
    if st.get("last_output_underflow"):
        lines.append(f"last output underflow: {st['last_output_underflow']}")
    if st.get("playback_ring_short"):
        lines.append(f"playback ring short: {st['playback_ring_short']} (requests topped up a millisecond later while the server's queue played on; not gaps)")
    lines.append(f"guard events {e.get('guard_events', 0)}, resets {e.get('resets', 0)}, swaps {e.get('swaps', 0)}, limited samples {e.get('limited_samples', 0)}")
    lines.append(f"worker priority: {st['worker_priority']}")
    if st.get("cpus_kept_awake"):
        lines.append(f"CPUs kept awake: {st['cpus_kept_awake']} (latency.keep_cpus_awake: they never idle, at full power)")
    return lines


def status_command(config_path: str | None, as_json: bool) -> int:
    path = _path_from_config(config_path)
    ans = request(path, {"cmd": "status"})
    if not ans.get("ok"):
        print(f"rtupscale status: {ans.get('error')}", file=sys.stderr)
        return 1
    st = ans["status"]
    if as_json:
        print(json.dumps(st, indent=2, default=str))
    else:
        print("\n".join(format_status(st)))
    return 0


def bypass_command(config_path: str | None, on: bool) -> int:
    path = _path_from_config(config_path)
    ans = request(path, {"cmd": "bypass", "on": on})
    if not ans.get("ok"):
        print(f"rtupscale bypass: {ans.get('error')}", file=sys.stderr)
        return 1
    print(f"bypass {'on: plain x4 upsampler' if on else 'off: model'} (crossfaded)")
    return 0
