"""The daemon's status as Prometheus metrics."""

from __future__ import annotations


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
