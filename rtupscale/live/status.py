"""What the running daemon reports: the ``status`` dict (the control socket's answer, and
the metrics' source), its text form, and the ``status`` / ``bypass`` commands."""

from __future__ import annotations

import collections
import json
import math
import os
import sys
import time
from pathlib import Path

from rtupscale.control import request, socket_path
from rtupscale.live.worker import LATE_WAKE_S


class XrunBank:
    """The xruns of closed sessions, so that ``status`` counts since the daemon started."""

    def __init__(self):
        self.xruns: collections.Counter = collections.Counter()
        self.ring_short = 0
        self.underflow_causes: collections.Counter = collections.Counter()
        self.last_underflow = ""
        self.dac_gap_frames = 0
        self.dac_gap_causes: collections.Counter = collections.Counter()
        self.last_dac_gap = ""

    def bank(self, s) -> None:
        """Add closed session ``s``'s counts."""
        for k, v in session_xruns(s).items():
            self.xruns[k] += v
        x = s.streams.xruns
        self.ring_short += x.ring_short
        self.underflow_causes.update(x.underflow_causes)
        self.last_underflow = x.last_underflow or self.last_underflow
        g = getattr(s, "dac_gaps", None)
        if g is not None:
            self.dac_gap_frames += g.frames
            self.dac_gap_causes.update(g.causes)
            self.last_dac_gap = g.last or self.last_dac_gap


def session_xruns(s) -> dict[str, int]:
    x = s.streams.xruns
    c = s.pipeline.counters
    return {
        "input_overflows": x.input_overflows,
        "output_underflows": x.output_underflows,
        "capture_ring_full": x.capture_ring_full,
        "playback_ring_empty": x.playback_ring_empty,
        "late_skips": c.late_skips,
        "drops": c.drops,
        # PipeWire: silence the DAC played in our stream that no underflow notice reported
        "dac_gaps": s.dac_gaps.count if getattr(s, "dac_gaps", None) is not None else 0,
    }


def build_status(d) -> dict:
    """The status of daemon ``d`` (a :class:`rtupscale.live.daemon.Daemon`)."""
    from rtupscale.audio import cpuawake

    s = d.session
    out: dict = {
        "state": str(d.state.value),
        "stop_reason": d.stop_reason,
        "stop_kind": None if d.stop_kind is None else d.stop_kind.value,
        "pid": os.getpid(),
        "uptime_s": round(time.monotonic() - d.started, 1),
        "config": d.config_path,
        "recoveries": d.recoveries,
        "reloads": d.reloads,
        "reload_errors": d.reload_errors,
        "worker_priority": s.state.priority if s is not None else "normal",
        "gc": d.gc.snapshot(),
        "cpus_kept_awake": cpuawake.running(),
        "bypass": d.bypass,
        "model": None if d.runner is None else {"name": d.runner.name, "path": str(d.runner.path), "provider": d.runner.provider},
    }
    if s is None:
        return out
    p = s.pipeline
    r = s.routing
    bank = d.bank
    xr = {k: v + bank.xruns[k] for k, v in session_xruns(s).items()}
    xr = {"total": sum(xr.values()), **xr}
    # not an xrun (see XrunCounters.ring_short), shown beside them
    ring_short = s.streams.xruns.ring_short + bank.ring_short
    # native PulseAudio streams: what led to each output underflow (see underflow_cause)
    causes = dict(bank.underflow_causes + collections.Counter(s.streams.xruns.underflow_causes))
    drift = p.drift.state
    out.update(
        {
            "server": r.server,
            "backend": r.backend,
            "capture": {"device": r.capture, "rate": r.rate, "route": r.capture_route,
                        "follows_apps": bool(d.config.audio.follows_rate and d.config.audio.capture == "auto"),
                        "rate_switches": d.rate_switches},
            "playback": {"device": r.playback, "rate": r.out_rate, "route": r.playback_route, "dac_rate": r.dac_rate, "resampled": r.resampled, "advice": r.advice},
            "block_size": p.block_size,
            "channels": s.channels,
            "model_gain": round(float(s.engine.model_gain), 3),
            "latency_ms": {k: round(v, 2) for k, v in s.latency_report().items()},
            "rings": {
                "capture_fill": s.cap_ring.fill,
                "capture_capacity": s.cap_ring.capacity,
                "playback_fill": s.play_ring.fill,
                "playback_capacity": s.play_ring.capacity,
                "playback_target": p.prefill_frames,
                "playback_level_ema": round(drift.level_ema, 1),  # the ring less what the server is owed
                "playback_owed": round(p.owed, 1),
                "playback_level_band": [round(drift.min_ema, 1), round(drift.max_ema, 1)] if math.isfinite(drift.min_ema) else None,
                "drift_correction_ppm": round(drift.correction * 1e6, 1),
                "playback_min_fill": p.min_fill if p.min_fill < (1 << 62) else None,
            },
            "processing_ms": {k: round(v, 3) for k, v in p.timing().items()},
            "worker_late_wakes": {"count": s.state.late_wakes, "over_ms": 1e3 * LATE_WAKE_S, "max_ms": round(1e3 * s.state.max_late_wake_s, 2)},
            "blocks": p.counters.blocks,
            "pipeline": {  # this session's: what bounding the latency cost
                "skipped_frames": p.counters.skipped_frames,
                "dropped_blocks": p.counters.dropped_blocks,
                "playback_full_frames": p.counters.playback_full,
            },
            "xruns": xr,
            "playback_ring_short": ring_short,
            "output_underflow_causes": causes,
            # this session's: when the worker found the stream xruns (input overflows, output
            # underflows) rise, and when a gap at the DAC was found (PipeWire), on the system's
            # monotonic clock, and by how many
            "xrun_times": _xrun_times(s),
            "last_output_underflow": s.streams.xruns.last_underflow or bank.last_underflow or None,
            "dac_gaps": _dac_gaps(s, bank),
            "engine": s.engine.counters.snapshot(),
        }
    )
    return out


def _xrun_times(s) -> list[list]:
    g = getattr(s, "dac_gaps", None)
    times = sorted(list(s.state.xrun_times) + (list(g.times) if g is not None else []))
    return [[round(t, 3), n] for t, n in times]


def _dac_gaps(s, bank: XrunBank) -> dict:
    g = getattr(s, "dac_gaps", None)
    frames = bank.dac_gap_frames + (g.frames if g else 0)
    rate = g.rate if g else 0
    return {
        "checked": g is not None,
        "ms": round(1e3 * frames / rate, 2) if rate else 0.0,
        "causes": dict(bank.dac_gap_causes + (g.causes if g else collections.Counter())),
        "last": (g.last if g else "") or bank.last_dac_gap or None,
    }


# ----------------------------------------------------------------------------- commands
def _path_from_config(config_path: str | None) -> Path:
    from rtupscale.app import default_config_path, load_config_or_exit

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
    follows = f" (rate: auto, follows the apps; {cap.get('rate_switches', 0)} switches)" if cap.get("follows_apps") else ""
    lines.append(f"capture: {cap['device']} at {cap['rate']} Hz{follows}" + (f"  [{cap['route']}]" if cap.get("route") else ""))
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
        f"capture ring full {x['capture_ring_full']}, playback ring empty {x['playback_ring_empty']}, late skips {x['late_skips']}, drops {x.get('drops', 0)}"
        + (f", gaps at the DAC {x['dac_gaps']}" if "dac_gaps" in x else "") + ")"
    )
    pc = st.get("pipeline")
    if pc and any(pc.values()):
        lines.append(f"bounded latency: {pc['skipped_frames']} capture frames skipped, {pc['dropped_blocks']} output blocks dropped, "
                     f"{pc['playback_full_frames']} output frames that did not fit the playback ring")
    if st.get("output_underflow_causes"):
        c = st["output_underflow_causes"]
        lines.append("output underflows by cause: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(c.items())))
    if st.get("last_output_underflow"):
        lines.append(f"last output underflow: {st['last_output_underflow']}")
    g = st.get("dac_gaps") or {}
    if g.get("checked") or x.get("dac_gaps"):
        lines.append(
            f"gaps at the DAC no underflow notice reported (PipeWire): {x.get('dac_gaps', 0)}, {g.get('ms', 0.0):.1f} ms in all"
            + ("; by cause: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(g["causes"].items())) if g.get("causes") else "")
        )
        if g.get("last"):
            lines.append(f"last gap at the DAC: {g['last']}")
    if st.get("playback_ring_short"):
        lines.append(f"playback ring short: {st['playback_ring_short']} (requests topped up a millisecond later while the server's queue played on; not gaps)")
    lines.append(
        f"guard events {e.get('guard_events', 0)}, resets {e.get('resets', 0)}, swaps {e.get('swaps', 0)}, limited samples {e.get('limited_samples', 0)}"
        + (f", NaN/Inf input samples set to 0: {e['nonfinite_inputs']}" if e.get("nonfinite_inputs") else "")
    )
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
