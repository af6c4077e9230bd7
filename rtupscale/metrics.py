"""The daemon's status as Prometheus metrics (``prometheus_client``'s exposition format).

Read from ``status()`` at each scrape, so the numbers are the ones ``rtupscale status``
shows. Units are in the names (seconds, frames, ratio); kinds of one thing are labels.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

XRUN_KINDS = {
    "input_overflows": "input_overflow",
    "output_underflows": "output_underflow",
    "capture_ring_full": "capture_ring_full",
    "playback_ring_empty": "playback_ring_empty",
    "late_skips": "late_skip",
    "drops": "drop",
}
"""``status['xruns']`` keys -> the ``kind`` label of ``rtupscale_xruns_total``."""


class StatusCollector:
    """A collector that turns ``status()`` (the daemon's status dict) into metric families."""

    def __init__(self, status: Callable[[], dict]):
        self.status = status

    def collect(self) -> Iterator[Metric]:
        st = self.status()
        yield _gauge("rtupscale_up", "1 while the audio path runs", 1 if st.get("state") == "running" else 0)
        yield _gauge("rtupscale_uptime_seconds", "Seconds since the daemon started", st.get("uptime_s"))
        yield _gauge("rtupscale_bypass", "1 when the plain upsampler is selected", 1 if st.get("bypass") else 0)
        for key, name, help_ in (("recoveries", "rtupscale_recoveries", "Reopenings of the audio path"),
                                 ("reloads", "rtupscale_reloads", "Config reloads (SIGHUP)"),
                                 ("reload_errors", "rtupscale_reload_errors", "Reloads that kept the running config")):
            if st.get(key) is not None:
                yield _counter(name, help_, st[key])
        model = st.get("model") or {}
        info = InfoMetricFamily("rtupscale_model", "The running model", labels=["name", "provider"])
        info.add_metric([model.get("name", "none"), model.get("provider", "none")], {})
        yield info
        if st.get("blocks") is not None:
            yield _counter("rtupscale_blocks", "Blocks processed by the worker", st["blocks"])

        lat = GaugeMetricFamily("rtupscale_latency_seconds", "Where a sample's time goes", labels=["component"])
        for k, v in (st.get("latency_ms") or {}).items():
            lat.add_metric([k.removesuffix("_ms")], 1e-3 * v)
        yield lat
        proc = GaugeMetricFamily("rtupscale_block_processing_seconds",
                                 "Processing time per block: wall clock and the worker's CPU time", labels=["clock", "stat"])
        for k, v in (st.get("processing_ms") or {}).items():
            k = k.removesuffix("_ms")
            if k == "budget":
                continue
            clock, stat = ("cpu", k.removeprefix("cpu_")) if k.startswith("cpu_") else ("wall", k)
            proc.add_metric([clock, stat], 1e-3 * v)
        yield proc
        if "budget_ms" in (st.get("processing_ms") or {}):
            yield _gauge("rtupscale_block_budget_seconds", "The block's duration: the time a block may take",
                         1e-3 * st["processing_ms"]["budget_ms"])

        xr = CounterMetricFamily("rtupscale_xruns", "Xruns since the daemon started, by kind", labels=["kind"])
        for k, v in (st.get("xruns") or {}).items():
            if k in XRUN_KINDS:
                xr.add_metric([XRUN_KINDS[k]], v)
        yield xr
        causes = CounterMetricFamily("rtupscale_output_underflow_causes",
                                     "Output underflows of the native streams, by cause", labels=["cause"])
        for k, v in (st.get("output_underflow_causes") or {}).items():
            causes.add_metric([k], v)
        yield causes
        eng = CounterMetricFamily("rtupscale_engine_events", "Engine events (this session)", labels=["event"])
        for k, v in (st.get("engine") or {}).items():
            eng.add_metric([k], v)
        yield eng

        rings = st.get("rings") or {}
        fill = GaugeMetricFamily("rtupscale_ring_fill_frames", "Frames in the ring", labels=["ring"])
        cap = GaugeMetricFamily("rtupscale_ring_capacity_frames", "Frames the ring holds", labels=["ring"])
        for ring in ("capture", "playback"):
            if f"{ring}_fill" in rings:
                fill.add_metric([ring], rings[f"{ring}_fill"])
            if f"{ring}_capacity" in rings:
                cap.add_metric([ring], rings[f"{ring}_capacity"])
        yield fill
        yield cap
        for key, name, help_ in (
            ("playback_target", "rtupscale_playback_target_frames", "The drift control's target level"),
            ("playback_level_ema", "rtupscale_playback_level_frames", "The playback level the drift control sees (ring less what the server is owed)"),
            ("playback_owed", "rtupscale_playback_owed_frames", "Frames the sound server asked for and did not get yet"),
        ):
            if rings.get(key) is not None:
                yield _gauge(name, help_, rings[key])
        if rings.get("drift_correction_ppm") is not None:
            yield _gauge("rtupscale_drift_correction_ratio", "Output rate correction (0.0001 = 100 ppm faster)",
                         1e-6 * rings["drift_correction_ppm"])


def _gauge(name: str, help_: str, value) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, help_)
    if value is not None:
        g.add_metric([], float(value))
    return g


def _counter(name: str, help_: str, value) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_, value=float(value))


def registry_for(status: Callable[[], dict]) -> CollectorRegistry:
    """A registry of its own (not the process-wide default) that reads ``status``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StatusCollector(status))
    return reg


def prometheus_text(st: dict) -> str:
    """``st`` (a status dict) in the Prometheus text exposition format."""
    return generate_latest(registry_for(lambda: st)).decode()
