"""Soak benchmark (a report, not a test): the daemon through PulseAudio or PipeWire for
minutes, with a CPU hog keeping another core busy.

    python tests/audio/soak_bench.py --minutes 10 --block 256 --prefill 20 [--out soak.json]
    python tests/audio/soak_bench.py --minutes 10 --server pipewire      # PipeWire + pipewire-pulse
    python tests/audio/soak_bench.py --minutes 1 --server-stalls 12,300   # injected stalls

Starts a private PulseAudio (tests/audio/null-sinks.pa) or PipeWire (tests/audio/pipewire/), the daemon with the shipped
config.yaml plus the given block size and pre-fill, a busy-loop process, and an app
(pacat) playing band-limited noise into the virtual sink for the whole run. Every 10 s it
reads ``status``; at the end it measures the end-to-end delay (monitor to monitor) and
prints xruns (during the soak, and apart from them those during the final recording, whose
recorder joins the DAC's graph), processing time per block (median, p99, max), the playback level band,
drift correction, the daemon's CPU use and RSS at start and end, xruns by cause (on
PipeWire also the gaps the DAC played that no underflow notice reported), and the gaps
found in the final recording of the DAC's monitor (runs of 32 or more zero frames in the
noise). Beside them: the stalls of the whole machine a FIFO-99 probe per CPU saw
(tests/audio/stall_probe.py), and how many of the soak's xruns came right after one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.audio.pulse_harness import (  # noqa: E402
    HERE, PYTHON, REPO, Daemon, PipeWireServer, PulseServer, monitor_delay, noise_signal,
)
from tests.audio.stall_probe import StallProbe  # noqa: E402

RATE = 44100


def cpu_s(pid: int) -> float:
    """The process's CPU time so far (user + system), s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def zero_runs(x: np.ndarray, min_frames: int = 32) -> list[int]:
    """Lengths of the runs of at least ``min_frames`` all-zero frames in ``x [frames, ch]``."""
    z = np.all(x == 0, axis=1).astype(np.int8)
    edges = np.diff(np.concatenate([[0], z, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return [int(e - s) for s, e in zip(starts, ends) if e - s >= min_frames]


def explained(probe: StallProbe, times: list) -> int:
    """How many of the xruns at ``times`` came right after a stall of the machine."""
    return sum(n for t, n in times if probe.explains([[t, n]], n))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


STALLER = """
import os, sys, time
cpu, d, p, t0 = int(sys.argv[1]), float(sys.argv[2]) / 1e3, float(sys.argv[3]) / 1e3, float(sys.argv[4])
os.sched_setaffinity(0, {cpu})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(98))
k = 1
while True:
    t = t0 + k * p
    if t > time.monotonic():
        time.sleep(t - time.monotonic())
    while time.monotonic() < t + d:
        pass
    k += 1
"""
"""One per CPU, all in step (CLOCK_MONOTONIC is the machine's): every ``p`` ms each CPU is
taken for ``d`` ms at SCHED_FIFO 98, above everything on the audio path except the server's
sink threads, which are raised to RR 99 first: the sinks keep playing while the server's
main thread (which carries the requests) and ours stall. This is the shape of the stalls
that the daemon's underflow reports show on this machine ("no request ... for 12 to 16 ms").
On PipeWire the graph's threads are raised instead (see start_server_stalls)."""


def start_server_stalls(server: PulseServer | PipeWireServer, stall_ms: float, every_ms: float) -> list[subprocess.Popen]:
    """On PulseAudio the null sinks' threads are raised over the stalls; on PipeWire the
    real-time threads of the ``pipewire`` process (the graph, whose null-sink drivers are
    the DACs): pipewire-pulse, its data thread included, stalls with our daemon."""
    if isinstance(server, PipeWireServer):
        pid = server.procs["pipewire"].pid
        tasks = [t for t in Path(f"/proc/{pid}/task").iterdir()
                 if os.sched_getscheduler(int(t.name)) in (os.SCHED_FIFO, os.SCHED_RR)]
    else:
        tasks = [t for t in Path(f"/proc/{server.proc.pid}/task").iterdir()
                 if (t / "comm").read_text().strip() == "null-sink"]
    for task in tasks:
        os.sched_setscheduler(int(task.name), os.SCHED_RR, os.sched_param(99))
    t0 = time.monotonic() + 0.5
    return [subprocess.Popen([PYTHON, "-c", STALLER, str(cpu), str(stall_ms), str(every_ms), str(t0)])
            for cpu in sorted(os.sched_getaffinity(0))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--server", choices=("pulseaudio", "pipewire"), default="pulseaudio")
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--prefill", type=float, default=None, help="latency.prefill_ms (default: config.yaml's)")
    ap.add_argument("--playback-buffer", type=float, default=None, help="latency.playback_buffer_ms (default: config.yaml's)")
    ap.add_argument("--capture-buffer", type=float, default=None, help="latency.capture_buffer_ms (default: config.yaml's)")
    ap.add_argument("--backend", choices=("auto", "pulse", "portaudio"), default=None, help="audio.backend (default: config.yaml's)")
    ap.add_argument("--model", type=Path, default=None, help="model.path (default: config.yaml's)")
    ap.add_argument("--keep-cpus-awake", action="store_true", help="latency.keep_cpus_awake: true")
    ap.add_argument("--no-hog", action="store_true")
    ap.add_argument("--server-stalls", metavar="MS,EVERY_MS", default=None,
                    help="stall the server's main thread and ours (not its sinks) for MS every EVERY_MS (root)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--log", type=Path, help="keep the daemon's log here")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="rtupscale-soak-"))
    server = PipeWireServer(root) if args.server == "pipewire" else PulseServer(root)
    server.start()
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    model = cfg.setdefault("model", {})
    if args.model is not None:
        model["path"] = str(args.model.resolve())
    elif model.get("path", "none") != "none":  # relative to config.yaml, which stays in the repo
        model["path"] = str((REPO / model["path"]).resolve())
    cfg["latency"]["block_size"] = args.block
    if args.prefill is not None:
        cfg["latency"]["prefill_ms"] = args.prefill
    if args.playback_buffer is not None:
        cfg["latency"]["playback_buffer_ms"] = args.playback_buffer
    if args.capture_buffer is not None:
        cfg["latency"]["capture_buffer_ms"] = args.capture_buffer
    if args.backend is not None:
        cfg.setdefault("audio", {})["backend"] = args.backend
    cfg["latency"]["keep_cpus_awake"] = bool(args.keep_cpus_awake)
    cfg.setdefault("control", {})["socket"] = str(server.runtime / "rtupscale.sock")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    d = Daemon(server, config, root / "daemon.log")
    hog = None
    app = None
    stallers: list[subprocess.Popen] = []
    probe = StallProbe()
    try:
        d.start()
        d.wait_running()
        rss_start = rss_kib(d.proc.pid)
        cpu0, t0 = cpu_s(d.proc.pid), time.monotonic()
        if not args.no_hog:
            hog = subprocess.Popen([PYTHON, "-c", "while True: pass"])
        if args.server_stalls:
            stall_ms, every_ms = (float(v) for v in args.server_stalls.split(","))
            stallers = start_server_stalls(server, stall_ms, every_ms)
        app = subprocess.Popen(
            ["pacat", "--playback", "--raw", "--format=float32le", f"--rate={RATE}", "--channels=2",
             "--latency-msec=40", "-d", "rtupscale"],
            stdin=subprocess.PIPE, env=server.env,
        )
        loop = noise_signal(30.0, RATE, seed=7)
        stop = threading.Event()

        def feed():
            try:
                while not stop.is_set():
                    app.stdin.write(loop.tobytes())
            except (BrokenPipeError, ValueError):
                pass

        threading.Thread(target=feed, daemon=True).start()
        probe.start()
        time.sleep(3.0)
        st0 = d.status()
        t_soak = time.monotonic()
        samples = []
        t_end = time.monotonic() + 60 * args.minutes
        while time.monotonic() < t_end:
            time.sleep(10.0)
            st = d.status()
            samples.append({
                "t": round(st["uptime_s"], 1),
                "xruns": st["xruns"]["total"] - st0["xruns"]["total"],
                "p99_ms": st["processing_ms"]["p99_ms"],
                "max_ms": st["processing_ms"]["max_ms"],
                "level": st["rings"]["playback_level_ema"],
                "ppm": st["rings"]["drift_correction_ppm"],
                "latency_ms": st["latency_ms"]["total_ms"],
                "rss_kib": rss_kib(d.proc.pid),
            })
            print(json.dumps(samples[-1]), flush=True)
        # the recorder joins the DAC's graph and may lower its quantum (PipeWire): what
        # happens meanwhile is reported apart from the soak
        st_soak = d.status()
        soak_times = [t for t in st_soak.get("xrun_times", []) if t[0] >= t_soak]
        stalls = probe.stalls_since(t_soak)
        rec_path = root / "rec.npz"
        rec = subprocess.Popen(
            [PYTHON, str(HERE / "record_monitors.py"), str(rec_path), "6", "rtupscale.monitor", str(RATE), "dac.monitor", str(4 * RATE)],
            env=server.env, stdout=subprocess.PIPE, text=True,
        )
        rec.communicate(timeout=60)
        recording = dict(np.load(rec_path))
        delay, corr = monitor_delay(recording)
        b = recording["b"]
        on = np.flatnonzero(np.abs(b[:, 0]) > 0.01)
        dac_zero_runs = zero_runs(b[on[0]:on[-1]]) if len(on) else []
        st = d.status()
        cpu_percent = 100 * (cpu_s(d.proc.pid) - cpu0) / (time.monotonic() - t0)
        stop.set()
        levels = [s["level"] for s in samples]
        report = {
            "server": st.get("server"),
            "minutes": args.minutes,
            "block": args.block,
            "model": model.get("path", "none"),
            "prefill_ms": cfg["latency"]["prefill_ms"],
            "playback_buffer_ms": cfg["latency"]["playback_buffer_ms"],
            "capture_buffer_ms": cfg["latency"]["capture_buffer_ms"],
            "backend": st.get("backend", ""),
            "cpu_hog": not args.no_hog,
            "cpus_kept_awake": st.get("cpus_kept_awake", 0),
            "server_stalls": args.server_stalls,
            "xruns": st["xruns"],
            "xruns_during_soak": st_soak["xruns"]["total"] - st0["xruns"]["total"],
            "xruns_during_final_recording": st["xruns"]["total"] - st_soak["xruns"]["total"],
            "output_underflow_causes": st.get("output_underflow_causes"),
            "last_output_underflow": st.get("last_output_underflow"),
            "dac_gaps": st.get("dac_gaps"),
            "zero_runs_at_the_dac_in_the_final_recording": dac_zero_runs,
            "daemon_cpu_percent_of_one_core": round(cpu_percent, 1),
            "processing_ms": st["processing_ms"],
            "playback_level_frames": {"target": st["rings"]["playback_target"], "min": min(levels), "max": max(levels),
                                      "ema_band_since_start": st["rings"]["playback_level_band"]},
            "drift_correction_ppm": st["rings"]["drift_correction_ppm"],
            "status_latency_ms": st["latency_ms"],
            "measured_delay_ms": round(1e3 * delay, 2),
            "measured_corr": round(corr, 4),
            "rss_kib": {"start": rss_start, "end": rss_kib(d.proc.pid)},
            "worker_priority": st["worker_priority"],
            "gc": st.get("gc"),
            "worker_late_wakes": st.get("worker_late_wakes"),
            "recoveries": st["recoveries"],
            # stalls of the whole machine during the soak (tests/audio/stall_probe.py), and the
            # soak's xrun times each with the last stall before it
            "machine_stalls": {"probe": probe.error or "FIFO 99, one per CPU", "count": len(stalls),
                               "over_10_ms": sum(1 for x in stalls if x[2] >= 10.0),
                               "longest_ms": max((x[2] for x in stalls), default=0.0)},
            "xrun_times_during_soak": soak_times,
            "last_stall_before_each": probe.before_each(soak_times),
            "xruns_during_soak_after_a_stall": explained(probe, soak_times),
        }
        print(json.dumps(report, indent=2))
        if args.out:
            args.out.write_text(json.dumps({"report": report, "samples": samples}, indent=2))
    finally:
        probe.stop()
        for p in stallers:
            p.kill()
        if app is not None:
            app.kill()
        if hog is not None:
            hog.kill()
        d.stop()
        server.stop()
        if args.log:
            args.log.write_bytes((root / "daemon.log").read_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
