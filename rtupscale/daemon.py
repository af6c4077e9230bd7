"""The live daemon: ``rtupscale run``.

Threads::

    rtmixer callbacks (C, no GIL)   capture -> capture ring        playback ring -> DAC
    worker (one)                    capture ring -> Engine -> rate adjust -> playback ring;
                                    re-arms ended ring actions, fetches xrun flags; woken
                                    by the capture callback (native PulseAudio streams)
                                    or polling every millisecond (PortAudio)
    main                            signals (TERM/INT: fade out and stop; HUP: reload),
                                    systemd notify + watchdog, stall detection, recovery
                                    with backoff, the rate check, event logging
    control                         unix socket (status, bypass); optional Prometheus

The worker never logs or waits on a lock: it appends events to a deque that the main
thread logs. Everything the worker allocates, it allocates when a session or pipeline
is built, not per block.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rtupscale import FACTOR
from rtupscale.audio import cpuawake, gcpause, priority, pulse
from rtupscale.audio.devices import DeviceError, Endpoint, resolve_capture, resolve_playback
from rtupscale.audio.pipeline import Pipeline
from rtupscale.audio.rings import FrameRing
from rtupscale.audio.pulse_streams import PulseStreams, choose_backend
from rtupscale.audio.streams import LiveStreams, prefill_warning
from rtupscale.lockfile import LockError, LockHeld, OwnerLock

log = logging.getLogger("rtupscale.daemon")

EXIT_OK, EXIT_FAILURE, EXIT_USER = 0, 1, 2

WORKER_POLL_S = 0.001
"""The worker's wait when no block is waiting, with PortAudio streams (rtmixer's callbacks
cannot signal: 1000 wake-ups/s, a few % of a core)."""
WORKER_WAIT_S = 0.005
"""The longest wait with the native PulseAudio streams, whose capture callback wakes the
worker when audio arrives (the timeout only paces the bookkeeping while none does)."""
STATS_EVERY_S = 0.2
STALL_S = 2.0
"""No capture callback for this long (or a silent worker) counts as a stall: recover."""
RECOVER_BACKOFF_S = (0.25, 0.5, 1.0, 2.0, 4.0)
RECOVER_GIVE_UP_S = 120.0
"""Recovery tries this long, then the daemon stops with the reason (exit 1; systemd restarts it)."""
RATE_CHECK_EVERY_S = 2.0
SHUTDOWN_LIMIT_S = 8.0
"""After TERM/INT the daemon exits within this long, cleaned up or not."""
SINK_LATENCY_LIMIT_S = 0.1
"""A DAC sink latency above this (the server says so) reopens the audio path."""
LATE_WAKE_S = 0.002
"""A worker back from its wait this much later than the wait may last counts as a late wake."""
GIL_SWITCH_S = 0.0005
"""Python's thread switch interval in the daemon (see ``Daemon.run``)."""


class StopDaemon(Exception):
    def __init__(self, reason: str, code: int = EXIT_FAILURE):
        super().__init__(reason)
        self.reason, self.code = reason, code


@dataclass
class Routing:
    """What was chosen and what the server does with it (for logs and ``status``)."""

    server: str = "none"
    capture: str = ""
    playback: str = ""
    rate: int = 0
    out_rate: int = 0
    capture_route: str = ""
    playback_route: str = ""
    dac_rate: int | None = None
    resampled: bool | None = None
    advice: str = ""
    backend: str = ""


# ----------------------------------------------------------------------------- session
class Session:
    """One opening of the audio path: virtual sink, endpoints, rings, streams, pipeline.

    Built by the main thread; run by the worker thread it starts; torn down by ``close``.
    """

    def __init__(self, daemon: "Daemon", config, runner, rate: int | None = None):
        self.d = daemon
        self.config = config
        a = config.audio
        self.channels = a.channels
        self.sink_module: int | None = None
        self.routing = Routing()
        try:
            server = pulse.server_info()
        except pulse.SoundServerError as e:
            server = None
            log.info("no sound server (%s): using PortAudio devices directly", e)
        self.server = server
        if server is not None:
            self.routing.server = f"{server.name} {server.version}"
        try:
            playback = resolve_playback(a.playback, a.virtual_sink, server)
            if a.capture == "auto":
                self._create_virtual_sink(a.virtual_sink, a.rate, a.channels)
            capture = resolve_capture(a.capture, a.virtual_sink, server)
        except Exception:
            self._remove_virtual_sink(keep=True)  # the daemon removes it when it stops
            raise
        self.capture_ep, self.playback_ep = capture, playback
        if rate is None:
            rate = a.rate
            if capture.server_name and a.capture != "auto" and capture.device_rate in (44100, 48000):
                rate = capture.device_rate  # a source at 48 kHz is captured at 48 kHz
        self.rate = rate
        self.routing.capture, self.routing.playback = str(capture), str(playback)
        self.routing.rate, self.routing.out_rate = rate, FACTOR * rate
        lat = config.latency
        self.engine = daemon.build_engine(config, runner, rate)
        prefill = int(round(lat.prefill_ms * 1e-3 * FACTOR * rate))
        block = lat.block_size
        self.cap_ring = FrameRing(self.channels, max(16 * block, int(0.5 * rate)))
        self.play_ring = FrameRing(self.channels, 2 * prefill + 16 * FACTOR * block + FACTOR * int(0.25 * rate))
        self.pipeline = Pipeline(self.engine, self.channels, rate, block, self.cap_ring, self.play_ring, prefill)
        self.routing.backend = choose_backend(a.backend, capture, playback)
        streams_cls = PulseStreams if self.routing.backend == "pulse" else LiveStreams
        if warning := prefill_warning(lat.prefill_ms, self.routing.backend):
            log.warning("%s", warning)
        self.streams = streams_cls(
            capture, playback, rate, self.channels, self.cap_ring, self.play_ring,
            1e-3 * lat.capture_buffer_ms, 1e-3 * lat.playback_buffer_ms,
        )
        self.worker: threading.Thread | None = None
        self.stop_worker = False
        self._threads_before = priority.thread_ids()
        self.audio_thread_priority: list[str] = []
        try:
            self.streams.open()
        except Exception as e:
            self.close(keep_sink=True)  # a reopen tries again with it; the daemon removes it when it stops
            raise RuntimeError(f"cannot open the audio streams ({capture} -> {playback}): {e}") from e
        self.heartbeat = time.monotonic()
        self.last_capture_progress = time.monotonic()
        self.pending_pipeline: Pipeline | None = None
        self.fading_out = False
        self.failure: str | None = None
        self.started_at = time.monotonic()
        self.first_audio_at: float | None = None
        self.late_wakes = 0
        self.max_late_wake_s = 0.0
        # device latencies, s: the server's figures (averaged) where it has them, else PortAudio's
        self.dev_latency: dict[str, float] | None = None

    # -- virtual sink ----------------------------------------------------------------
    def _create_virtual_sink(self, name: str, rate: int, channels: int) -> None:
        self.d.claim_sink(name)  # raises DeviceError if another live daemon owns it
        loaded = pulse.null_sink_module(name)
        if loaded is not None and self.d.own_sink == (loaded, name, rate, channels):
            # ours, kept across a reopen: the apps playing to it stay on it (a new sink of the
            # same name would not get them back: the server moved them to its fallback sink)
            self.sink_module = loaded
            log.info("virtual sink %r kept (module %d)", name, loaded)
            return
        if loaded is not None:
            # no live daemon holds its lock: a crashed one left it
            log.warning("a virtual sink %r is already loaded (module %d) and no running rtupscale owns it: replacing it", name, loaded)
            pulse.unload_module(loaded)
        self.sink_module = pulse.load_null_sink(name, rate, channels)
        self.d.own_sink = (self.sink_module, name, rate, channels)
        log.info("virtual sink %r created at %d Hz, %d ch (module %d): set it as the output of your apps", name, rate, channels, self.sink_module)

    def _remove_virtual_sink(self, keep: bool = False) -> None:
        if self.sink_module is None:
            return
        if not keep:
            self.d.remove_own_sink()
        self.sink_module = None

    # -- run ---------------------------------------------------------------------------
    def start(self) -> None:
        # no worker runs yet: the one collection that may take milliseconds happens now
        self.d.gc.settle()
        self.streams.start()
        self.audio_thread_priority = priority.promote_new_threads(self._threads_before)
        self.worker = threading.Thread(target=self._work, name="rtupscale-worker", daemon=True)
        self.worker.start()

    def close(self, keep_sink: bool = False) -> None:
        """Stop the worker and the streams; remove the virtual sink unless ``keep_sink`` (a
        reopen: the next session takes it over, with the apps playing to it)."""
        self.stop_worker = True
        if self.worker is not None and self.worker is not threading.current_thread():
            self.worker.join(timeout=2.0)
        self.streams.close()
        self._remove_virtual_sink(keep=keep_sink)

    def _work(self) -> None:
        d = self.d
        d.raise_thread_priority()
        events = d.events
        next_stats = time.monotonic() + STATS_EVERY_S
        streams = self.streams
        last_callbacks = -1
        last_callbacks_out = -1
        wait_s = WORKER_WAIT_S if isinstance(streams, PulseStreams) else WORKER_POLL_S
        self.last_playback_progress = time.monotonic()
        waited_from = None
        cap_after = None  # the capture ring's level after the last steps (woken streams)
        try:
            while not self.stop_worker:
                now = time.monotonic()
                self.heartbeat = now
                if waited_from is not None:
                    # back from the wait later than it may last: the worker was kept from
                    # running (the GIL held by another thread, or preempted), not slow
                    late = now - waited_from - wait_s
                    if late > LATE_WAKE_S:
                        self.late_wakes += 1
                    if late > self.max_late_wake_s:
                        self.max_late_wake_s = late
                pipe = self.pipeline
                if self.pending_pipeline is not None and pipe.engine.model_gain == 0.0:
                    new = self.pending_pipeline
                    new.adopt(pipe)
                    self.pipeline = pipe = new
                    self.engine = new.engine
                    self.pending_pipeline = None
                    events.append(("info", f"switched to block {new.block_size}, prefill {new.prefill_frames} frames"))
                # Woken by a capture delivery, the worker would see the capture ring at its
                # highest every time: for the status's average it counts the level its last
                # steps left, which stands until this delivery (the playback level, for the
                # drift control, is taken now, as the soaks ran it)
                pipe.sample_levels(now, streams.playing, cap_level=cap_after, owed=streams.owed_average())
                if not streams.playing and self.cap_ring.fill >= pipe.block_size:
                    if self.first_audio_at is None:
                        self.first_audio_at = now
                    pipe.prefill(streams.arm_frames)
                    streams.arm_playback()
                while pipe.step():
                    pass
                cap_ended, play_ended = streams.poll()
                if cap_ended:
                    pipe.engine.request_reset()
                    events.append(("warning", "capture ring overflowed (the worker fell behind): state reset"))
                if play_ended and not self.fading_out:
                    pipe.engine.request_reset()
                    events.append(("warning", f"playback ring ran dry (level {self.play_ring.fill} frames): refilled, state reset"))
                if now >= next_stats:
                    next_stats = now + STATS_EVERY_S
                    under_before = streams.xruns.output_underflows
                    before = streams.xruns.input_overflows + under_before
                    if streams.collect_stats():
                        pipe.engine.request_reset()
                        x = streams.xruns
                        why = f"; last underflow: {x.last_underflow}" if x.output_underflows > under_before and x.last_underflow else ""
                        events.append(("warning", f"device xrun (input overflows {x.input_overflows}, output underflows {x.output_underflows}, was {before}): state reset{why}"))
                    cb = streams.xruns.callbacks_in
                    if cb != last_callbacks:
                        last_callbacks = cb
                        self.last_capture_progress = now
                    elif now - self.last_capture_progress > STALL_S and self.failure is None:
                        self.failure = f"no audio from {self.capture_ep} for {STALL_S:g} s (device gone or server down)"
                    cbo = streams.xruns.callbacks_out
                    if cbo != last_callbacks_out or not streams.playing:
                        last_callbacks_out = cbo
                        self.last_playback_progress = now
                    elif now - self.last_playback_progress > STALL_S and self.failure is None:
                        self.failure = f"{self.playback_ep} took no audio for {STALL_S:g} s (device gone or server down)"
                if wait_s == WORKER_WAIT_S:
                    cap_after = self.cap_ring.fill
                waited_from = time.monotonic()
                streams.wait(wait_s)
        except Exception as e:  # a broken session must not kill the daemon: recover instead
            self.failure = f"worker error: {type(e).__name__}: {e}"
            events.append(("error", self.failure))

    # -- reporting ---------------------------------------------------------------------
    def measure_device_latency(self) -> None:
        """Average the server's account of our streams' latencies (main thread, ~1/s): what
        ``pactl`` lists for them (what the live tests were calibrated against), or where it
        lists nothing (pipewire-pulse) the native streams' own timing updates."""
        sample = None
        if self.capture_ep.server_name or self.playback_ep.server_name:
            try:
                sl = pulse.stream_latencies()
            except pulse.SoundServerError:
                return
            if None in (sl.capture_buffer, sl.source, sl.playback_buffer, sl.sink) and self.routing.backend == "pulse":
                sl = self.streams.server_latencies() or sl
            if None not in (sl.capture_buffer, sl.source, sl.playback_buffer, sl.sink):
                # capture: what the server holds, plus what the ALSA plugin holds until
                # PortAudio takes its next period (half of PortAudio's input buffer, on average)
                pa_in = 0.0
                if self.routing.backend == "portaudio":
                    try:
                        pa_in = self.streams.device_latency_s[0]
                    except Exception:
                        pass
                sample = {"device_in": sl.capture_buffer + sl.source + pa_in / 2, "device_out": sl.playback_buffer, "sink": sl.sink}
                if sl.sink > SINK_LATENCY_LIMIT_S and self.failure is None:
                    # Seen after a device underflow through ALSA's pulse plugin: the plugin's
                    # re-made stream no longer asks for a low sink latency, and the sink runs
                    # hundreds of ms ahead. Only a new stream brings it back.
                    self.failure = f"the DAC sink runs {1e3 * sl.sink:.0f} ms ahead of real time (after a server underrun)"
        if sample is None:
            try:
                dev_in, dev_out = self.streams.device_latency_s
            except Exception:
                return
            sample = {"device_in": dev_in, "device_out": dev_out, "sink": 0.0}
        if self.dev_latency is None:
            self.dev_latency = sample
        else:
            for k, v in sample.items():
                self.dev_latency[k] += 0.2 * (v - self.dev_latency[k])

    def latency_report(self) -> dict:
        """Where a sample's time goes, ms. The two rings (Little's law on their time-averaged
        levels) include the block; the device figures are the sound server's own (PortAudio's
        without a server). ``sink_ms`` is the DAC sink's latency: a monitor of that sink hears
        the audio this much before the DAC does."""
        p = self.pipeline
        dl = self.dev_latency
        if dl is None:
            try:
                dev_in, dev_out = self.streams.device_latency_s
            except Exception:
                dev_in = dev_out = math.nan
            dl = {"device_in": dev_in, "device_out": dev_out, "sink": 0.0}
        buffered = p.buffered_latency_s()
        return {
            "total_ms": 1e3 * (buffered + dl["device_in"] + dl["device_out"] + dl["sink"]),
            "block_ms": 1e3 * p.block_size / self.rate,
            "engine_ms": 1e3 * p.engine.latency / self.rate,
            "capture_ring_ms": 1e3 * p.cap_level_avg / self.rate,
            "playback_ring_ms": 1e3 * p.play_level_avg / p.out_rate,
            "prefill_target_ms": 1e3 * p.prefill_frames / p.out_rate,
            "device_in_ms": 1e3 * dl["device_in"],
            "device_out_ms": 1e3 * dl["device_out"],
            "sink_ms": 1e3 * dl["sink"],
        }


# ----------------------------------------------------------------------------- daemon
class Daemon:
    def __init__(self, config, config_path: str | None):
        self.config = config
        self.config_path = config_path
        self.state = "starting"
        self.stop_reason: str | None = None
        self.started = time.monotonic()
        self.events: collections.deque = collections.deque(maxlen=1000)
        self.session: Session | None = None
        self.runner = None
        self.bypass = False
        self.recoveries = 0
        self.reloads = 0
        self.reload_errors = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload = False
        self._stop_signal: str | None = None
        self.control = None
        self.priority = "normal"
        self.last_rate_check = 0.0
        self.last_latency_probe = 0.0
        self.past_xruns: dict[str, int] = collections.Counter()  # of closed sessions
        self.past_ring_short = 0
        self.past_underflow_causes: collections.Counter = collections.Counter()
        self.last_underflow = ""
        self.own_sink: tuple[int, str, int, int] | None = None
        """The virtual sink this daemon loaded: (module, name, rate, channels)."""
        self.sink_lock: OwnerLock | None = None
        """The lock on the virtual sink's name this daemon holds (see ``claim_sink``)."""
        self.nonfinite_reported = False
        self._prev_counters: dict = {}
        self.gc = gcpause.GcPauses()

    # -- helpers used by sessions ---------------------------------------------------
    def build_engine(self, config, runner, rate: int):
        from rtupscale.engine import build_engine

        engine = build_engine(config, config.audio.channels, rate, runner)
        engine.set_bypass(self.bypass)
        return engine

    def raise_thread_priority(self) -> None:
        """SCHED_FIFO for the worker if allowed (root, or an rtprio limit), else a lower nice."""
        self.priority = priority.promote(0, priority.WORKER_PRIO)

    # -- signals ----------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGHUP:
            self._reload = True
        else:
            self._stop_signal = signal.Signals(signum).name
            if not self._stop.is_set():
                # never hang on the way out (a device or server that blocks a close)
                t = threading.Timer(SHUTDOWN_LIMIT_S, self._hard_exit)
                t.daemon = True
                t.start()
            self._stop.set()
        self._wake.set()

    def _hard_exit(self) -> None:
        log.error("shutdown took longer than %g s: exiting without cleanup", SHUTDOWN_LIMIT_S)
        logging.shutdown()
        os._exit(EXIT_FAILURE)

    # -- main ------------------------------------------------------------------------
    def run(self) -> int:
        from rtupscale import control, service

        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, self._on_signal)
        # The worker is a Python thread: a thread holding the GIL delays it by up to the
        # switch interval (5 ms by default), which is a block at low latency.
        sys.setswitchinterval(GIL_SWITCH_S)
        # Import the model runtime now, not on the first reload that loads a model: importing
        # onnxruntime holds the GIL for long enough to starve the worker.
        import rtupscale.model.runner  # noqa: F401
        self.gc.install()
        self.control = control.ControlServer(self, self.config.control)
        self.control.start()  # refuses to start if another daemon answers on the socket
        try:
            self._set_cpus_awake(self.config.latency.keep_cpus_awake)
            self.runner = self._load_runner(self.config)
            self.session = self._open_session(self.config)
            self.session.start()
            self.state = "running"
            self._log_start()
            service.sd_notify("READY=1\nSTATUS=running")
            code = self._main_loop()
        except StopDaemon as e:
            self.stop_reason = e.reason
            log.error("stopping: %s", e.reason)
            code = e.code
        finally:
            self.state = "stopped"
            service.sd_notify(f"STOPPING=1\nSTATUS=stopped: {self.stop_reason or 'unknown'}")
            if self.session is not None:
                self.session.close()
            self.remove_own_sink()  # also one kept by a recovery that then gave up
            self.control.stop()
            self.gc.uninstall()
            cpuawake.stop()
        log.info("stopped: %s", self.stop_reason)
        return code

    def _load_runner(self, config):
        if config.model_path() is None:
            log.info("model: none (model.path) - the plain x4 upsampler")
            return None
        from rtupscale.cli import load_runner

        return load_runner(config)

    def _open_session(self, config, rate: int | None = None) -> Session:
        try:
            return Session(self, config, self.runner, rate)
        except DeviceError:
            raise
        except pulse.SoundServerError as e:
            raise StopDaemon(f"sound server: {e}") from e

    def _log_start(self) -> None:
        s = self.session
        r = s.routing
        eng = s.engine
        model = "none (plain x4 upsampler)" if self.runner is None else f"{self.runner.name} on {self.runner.provider}"
        log.info("sound server: %s; streams: %s", r.server, "native PulseAudio" if r.backend == "pulse" else "PortAudio")
        log.info("capture: %s at %d Hz; playback: %s at %d Hz", r.capture, r.rate, r.playback, r.out_rate)
        log.info(
            "model: %s; block %d frames (%.1f ms), prefill %.1f ms, crossfade %.1f ms, engine latency %d frames",
            model, s.pipeline.block_size, 1e3 * s.pipeline.block_size / s.rate,
            self.config.latency.prefill_ms, self.config.latency.crossfade_ms, eng.latency,
        )
        log.info("control socket %s", self.control.path)
        log.info("audio threads: %s; worker: %s", ", ".join(s.audio_thread_priority) or "none new", self.priority)
        from rtupscale.dsp import kernels

        if not kernels.available():
            log.warning("%s (more CPU per block; reinstall with a C compiler)", kernels.why_not())

    def _main_loop(self) -> int:
        from rtupscale import service

        watchdog_s = service.watchdog_interval_s()
        next_watchdog = 0.0
        rate_checked = False
        latency_logged = False
        while True:
            self._wake.wait(0.25)
            self._wake.clear()
            self._drain_events()
            if self._stop.is_set():
                self.stop_reason = f"{self._stop_signal or 'stop'} received"
                self._fade_out()
                return EXIT_OK
            if self._reload:
                self._reload = False
                self.reload()
            s = self.session
            now = time.monotonic()
            self._report_nonfinite(s)
            if s.failure is not None:
                self._recover(s.failure)
                rate_checked = latency_logged = False
                continue
            if now - s.heartbeat > STALL_S:
                self.state = "stalled"
            elif self.state == "stalled":
                self.state = "running"
            if not rate_checked and s.first_audio_at is not None and now - s.first_audio_at > 0.5:
                rate_checked = True
                self.check_rates()
            if now - self.last_rate_check > RATE_CHECK_EVERY_S and rate_checked:
                self._check_capture_rate()
            if s.first_audio_at is not None and now - self.last_latency_probe > 1.0:
                self.last_latency_probe = now
                s.measure_device_latency()
            if not latency_logged and s.first_audio_at is not None and now - s.first_audio_at > 5.0:
                latency_logged = True
                lat = s.latency_report()
                log.info(
                    "latency %.1f ms: engine %.1f + capture ring %.1f + playback ring %.1f (target %.1f) "
                    "+ devices %.1f in / %.1f out + sink %.1f",
                    lat["total_ms"], lat["engine_ms"], lat["capture_ring_ms"], lat["playback_ring_ms"],
                    lat["prefill_target_ms"], lat["device_in_ms"], lat["device_out_ms"], lat["sink_ms"],
                )
            if watchdog_s and now >= next_watchdog and self.state != "stalled":
                service.sd_notify("WATCHDOG=1")
                next_watchdog = now + watchdog_s / 3

    def _report_nonfinite(self, s: Session) -> None:
        """Log once that the capture delivered NaN/Inf samples (the engine set them to 0)."""
        if not self.nonfinite_reported and s.engine.counters.nonfinite_inputs:
            self.nonfinite_reported = True
            log.warning("the capture delivered NaN or infinite samples (%d so far): they are replaced by 0; "
                        "status counts them (engine nonfinite_inputs)", s.engine.counters.nonfinite_inputs)

    def _drain_events(self) -> None:
        while self.events:
            level, msg = self.events.popleft()
            getattr(log, level)(msg)

    # -- stop -------------------------------------------------------------------------
    def _fade_out(self) -> None:
        s = self.session
        if s is None or not s.streams.playing:
            return
        fade_frames = int(self.config.latency.crossfade_ms * 1e-3 * s.pipeline.out_rate)
        s.pipeline.begin_fade_out(fade_frames)
        s.fading_out = True
        deadline = time.monotonic() + 1.0 + fade_frames / s.pipeline.out_rate
        # the fade itself, then what the playback ring still holds
        while time.monotonic() < deadline and not (s.pipeline.faded and s.play_ring.fill < s.pipeline.out_rate * 0.002):
            time.sleep(0.005)
        log.info("faded out")

    def claim_sink(self, name: str) -> None:
        """Hold the lock on virtual sink ``name`` (``rtupscale-sink-NAME.lock`` in
        ``$XDG_RUNTIME_DIR``, else beside the control socket) from now until the sink is
        removed: a sink whose lock another live process holds is never unloaded or reused.

        Raises:
            DeviceError: another running daemon owns a sink of this name.
        """
        folder = os.environ.get("XDG_RUNTIME_DIR") or str(self.control.path.parent if self.control else "/tmp")
        path = os.path.join(folder, f"rtupscale-sink-{name}.lock")
        if self.sink_lock is not None and self.sink_lock.path == Path(path):
            return
        lock = OwnerLock(path)
        try:
            lock.acquire()
        except LockHeld as e:
            who = f"pid {e.pid}" if e.pid else "another process"
            raise DeviceError(
                f"audio.virtual_sink: the sink {name!r} belongs to another running rtupscale daemon ({who}); "
                "stop it, or give this one another virtual_sink"
            ) from None
        except LockError as e:
            raise DeviceError(f"audio.virtual_sink: {e}") from None
        self.release_sink_claim()
        self.sink_lock = lock

    def release_sink_claim(self) -> None:
        if self.sink_lock is not None:
            self.sink_lock.release()
            self.sink_lock = None

    def remove_own_sink(self) -> None:
        """Unload the virtual sink this daemon loaded, if it is still there, and drop its lock."""
        if self.own_sink is None:
            self.release_sink_claim()
            return
        module, name = self.own_sink[:2]
        self.own_sink = None
        try:
            # a server that restarted in between numbers its modules afresh: unload only ours
            if pulse.null_sink_module(name) != module:
                log.info("virtual sink %r (module %d) is gone already", name, module)
                return
            pulse.unload_module(module)
            log.info("virtual sink removed (module %d)", module)
        except pulse.SoundServerError as e:
            log.info("virtual sink not removed: %s", e)
        finally:
            self.release_sink_claim()

    # -- recovery ---------------------------------------------------------------------
    def _recover(self, why: str) -> None:
        self.state = "recovering"
        self.recoveries += 1
        log.warning("audio path failed: %s; reopening", why)
        old = self.session
        rate = None
        if old is not None:
            old.close(keep_sink=True)
            self._bank_counters(old)
        t0 = time.monotonic()
        attempt = 0
        while not self._stop.is_set():
            delay = RECOVER_BACKOFF_S[min(attempt, len(RECOVER_BACKOFF_S) - 1)]
            try:
                self.session = self._open_session(self.config, rate)
                self.session.start()
                self.state = "running"
                log.info("recovered after %.1f s (%d attempt%s)", time.monotonic() - t0, attempt + 1, "" if attempt == 0 else "s")
                self._log_start()
                return
            except (StopDaemon, DeviceError, RuntimeError, OSError) as e:
                msg = e.reason if isinstance(e, StopDaemon) else str(e)
                attempt += 1
                if time.monotonic() - t0 > RECOVER_GIVE_UP_S:
                    raise StopDaemon(f"audio path down for {RECOVER_GIVE_UP_S:g} s: {msg}") from None
                log.info("reopen attempt %d failed (%s); next in %.2f s", attempt, msg, delay)
                self._stop.wait(delay)
                if self._stop.is_set():
                    break
            except Exception as e:  # PortAudio errors and the like
                attempt += 1
                log.info("reopen attempt %d failed (%s: %s); next in %.2f s", attempt, type(e).__name__, e, delay)
                self._stop.wait(delay)
            self._reinit_portaudio()
        raise StopDaemon(f"{self._stop_signal or 'stop'} received during recovery", EXIT_OK)

    def _bank_counters(self, s: Session) -> None:
        """Keep a closed session's xruns, so that ``status`` counts since the daemon started."""
        for k, v in self._session_xruns(s).items():
            self.past_xruns[k] += v
        self.past_ring_short += s.streams.xruns.ring_short
        self.past_underflow_causes.update(s.streams.xruns.underflow_causes)
        self.last_underflow = s.streams.xruns.last_underflow or self.last_underflow

    @staticmethod
    def _session_xruns(s: Session) -> dict[str, int]:
        x = s.streams.xruns
        c = s.pipeline.counters
        return {
            "input_overflows": x.input_overflows,
            "output_underflows": x.output_underflows,
            "capture_ring_full": x.capture_ring_full,
            "playback_ring_empty": x.playback_ring_empty,
            "late_skips": c.late_skips,
            "drops": c.drops,
        }

    @staticmethod
    def _reinit_portaudio() -> None:
        """PortAudio lists ALSA's pulse device only while a server runs: re-scan."""
        import sounddevice as sd

        try:
            sd._terminate()
        except Exception:
            pass
        try:
            sd._initialize()
        except Exception as e:
            log.debug("PortAudio re-init: %s", e)

    # -- rate checks --------------------------------------------------------------------
    def check_rates(self) -> None:
        """Log (and keep for ``status``) the rate that really reaches the DAC."""
        self.last_rate_check = time.monotonic()
        s = self.session
        r = s.routing
        if s.playback_ep.server_name is None:
            r.playback_route = f"direct to PortAudio device, {r.out_rate} Hz"
            r.dac_rate, r.resampled = r.out_rate, False
            log.info("rate check: %s", r.playback_route)
            return
        try:
            route = pulse.playback_route()
            croute = pulse.capture_route()
        except pulse.SoundServerError as e:
            log.warning("rate check failed: %s", e)
            return
        if croute is not None:
            r.capture_route = f"{croute.device} [{croute.device_spec}] -> stream [{croute.stream_spec}], resample {croute.resample_method or 'n/a'}"
        if route is None:
            log.warning("rate check: our playback stream is not listed by the server")
            return
        r.dac_rate = route.device_spec.rate
        r.resampled = route.resampled
        r.playback_route = f"stream [{route.stream_spec}] -> {route.device} [{route.device_spec}], resample method {route.resample_method or 'n/a'}"
        if s.server is not None and s.server.is_pipewire:
            # The sink's format is not the graph's rate, and "resample method" is always
            # "PipeWire": the graph clock says what reaches the DAC.
            try:
                clock = pulse.pipewire_clock()
            except pulse.SoundServerError as e:
                r.playback_route += f"; PipeWire graph rate unknown ({e})"
            else:
                r.dac_rate = clock.graph_rate(route.stream_spec.rate)
                r.resampled = r.dac_rate != r.out_rate
                r.playback_route += f"; PipeWire graph at {r.dac_rate} Hz ({clock})"
        if r.resampled:
            r.advice = pulse.resampling_advice(s.server, r.out_rate, r.dac_rate) if s.server else ""
            log.warning("rate check: %s: the DAC gets %d Hz, not %d Hz. %s", r.playback_route, r.dac_rate, r.out_rate, r.advice)
        else:
            r.advice = ""
            log.info("rate check: %s: %d Hz reaches the DAC", r.playback_route, r.dac_rate)

    def _check_capture_rate(self) -> None:
        """A capture source that switched between 44.1 and 48 kHz: reopen at its new rate."""
        self.last_rate_check = time.monotonic()
        s = self.session
        ep = s.capture_ep
        if not ep.server_name or self.config.audio.capture == "auto":
            return
        try:
            src = [x for x in pulse.list_sources() if x.name == ep.server_name]
        except pulse.SoundServerError:
            return  # the stall watchdog handles a server that went away
        if src and src[0].spec.rate in (44100, 48000) and src[0].spec.rate != s.rate:
            new_rate = src[0].spec.rate
            log.warning("capture source %s switched to %d Hz (was %d): reopening at %d Hz", ep.server_name, new_rate, s.rate, new_rate)
            s.close()
            self._bank_counters(s)
            self.session = self._open_session(self.config, new_rate)
            self.session.start()
            self.recoveries += 1

    # -- reload -------------------------------------------------------------------------
    def reload(self) -> None:
        from rtupscale.config import ConfigError, diff_configs, load_config

        self.reloads += 1
        if not self.config_path:
            log.warning("SIGHUP: no config file to reload (running on defaults)")
            return
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            self.reload_errors += 1
            for err in e.errors:
                log.error("reload: %s", err)
            log.error("reload: keeping the running config")
            return
        except Exception as e:  # whatever the file holds, the daemon keeps running
            self.reload_errors += 1
            log.error("reload: %s cannot be read (%s: %s); keeping the running config",
                      self.config_path, type(e).__name__, str(e)[:200])
            return
        changed = diff_configs(self.config, new)
        if not changed:
            log.info("reload: no change")
            return
        log.info("reload: changed %s", ", ".join(changed))
        try:
            self._apply(new, changed)
        except Exception as e:
            self.reload_errors += 1
            log.error("reload failed, keeping the running config: %s", e)
            return
        self.config = new

    def _apply(self, new, changed: list[str]) -> None:
        """Rebuild what ``changed`` names. Raises on the first part that cannot be built;
        the control socket is moved back then, the audio parts roll back themselves."""
        if any(k.startswith("control.") for k in changed):
            # first: a socket or port it cannot take leaves everything as it runs
            self.control.restart(new.control)
            try:
                self._apply_audio(new, changed)
            except Exception:
                try:
                    self.control.restart(self.config.control)  # the running config, whole
                except Exception as e:
                    log.error("reload: the control socket stays on the new settings (%s)", e)
                raise
        else:
            self._apply_audio(new, changed)

    def _apply_audio(self, new, changed: list[str]) -> None:
        """The model, engine and audio path parts of a reload (see ``_apply``)."""
        s = self.session
        audio_changed = any(k.startswith("audio.") or k in ("latency.capture_buffer_ms", "latency.playback_buffer_ms") for k in changed)
        model_changed = any(k.startswith("model.") for k in changed)
        engine_changed = any(k in changed for k in ("latency.block_size", "latency.crossfade_ms", "output.ceiling_dbfs"))
        runner = self.runner
        if model_changed:
            runner = self._load_runner(new)  # raises on a bad model: the old one keeps running
        if audio_changed:
            log.info("reload: audio devices or device buffers changed: reopening the audio path")
            same_sink = all(getattr(self.config.audio, k) == getattr(new.audio, k) for k in ("capture", "virtual_sink", "rate", "channels"))
            s.close(keep_sink=same_sink)
            self._bank_counters(s)
            old_runner, self.runner = self.runner, runner
            try:
                self.session = self._open_session(new, None)
            except Exception:
                log.error("reload: the new audio devices do not open: back to the running ones")
                self.runner = old_runner
                self.session = self._open_session(self.config, s.rate)
                self.session.start()
                raise
            self.session.start()
            self.check_rates()
        elif engine_changed or (model_changed and s.engine.can_swap(runner) is not None):
            engine = self.build_engine(new, runner, s.rate)
            prefill = int(round(new.latency.prefill_ms * 1e-3 * FACTOR * s.rate))
            pipe = Pipeline(engine, s.channels, s.rate, new.latency.block_size, s.cap_ring, s.play_ring, prefill)
            # the old engine fades its model out first; the worker switches at model gain 0
            s.engine.set_bypass(True)
            s.pending_pipeline = pipe
            self.runner = runner
            gcpause.freeze()  # the new engine's objects: never walked by a collection
            log.info("reload: new engine (block %d), switching after the crossfade", new.latency.block_size)
        else:
            if model_changed:
                s.engine.swap_runner(runner)
                self.runner = runner
                gcpause.freeze()
                log.info("reload: model swapped under the crossfade: %s", "none" if runner is None else runner.name)
            if "latency.prefill_ms" in changed:
                prefill = int(round(new.latency.prefill_ms * 1e-3 * FACTOR * s.rate))
                s.pipeline.set_target(prefill)
                log.info("reload: prefill %.1f ms (the drift control moves the level there)", new.latency.prefill_ms)
        if "latency.keep_cpus_awake" in changed:
            self._set_cpus_awake(new.latency.keep_cpus_awake)

    def _set_cpus_awake(self, on: bool) -> None:
        """Start or stop the idle spinners (``latency.keep_cpus_awake``). A machine where
        they cannot run gets a warning, not a stop: the audio path works without them."""
        if not on:
            if cpuawake.running():
                cpuawake.stop()
                log.info("keep_cpus_awake off: the CPUs may idle again")
            return
        try:
            n = cpuawake.start()
        except cpuawake.AwakeError as e:
            log.warning("keep_cpus_awake: %s; running without", e)
            return
        log.info("keep_cpus_awake: %d CPUs kept out of their idle halt (a SCHED_IDLE spinner on each: "
                 "they draw full power while the daemon runs)", n)

    # -- control --------------------------------------------------------------------------
    def set_bypass(self, on: bool) -> None:
        self.bypass = bool(on)
        s = self.session
        if s is not None:
            s.engine.set_bypass(on)
            if s.pending_pipeline is not None:
                s.pending_pipeline.engine.set_bypass(on)
        log.info("bypass %s", "on: plain x4 upsampler" if on else "off: model")

    def status(self) -> dict:
        s = self.session
        out: dict = {
            "state": self.state,
            "stop_reason": self.stop_reason,
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "config": self.config_path,
            "recoveries": self.recoveries,
            "reloads": self.reloads,
            "reload_errors": self.reload_errors,
            "worker_priority": self.priority,
            "gc": self.gc.snapshot(),
            "cpus_kept_awake": cpuawake.running(),
            "bypass": self.bypass,
            "model": None if self.runner is None else {"name": self.runner.name, "path": str(self.runner.path), "provider": self.runner.provider},
        }
        if s is None:
            return out
        p = s.pipeline
        r = s.routing
        xr = {k: v + self.past_xruns[k] for k, v in self._session_xruns(s).items()}
        xr = {"total": sum(xr.values()), **xr}
        # not an xrun (see XrunCounters.ring_short), shown beside them
        ring_short = s.streams.xruns.ring_short + self.past_ring_short
        # native PulseAudio streams: what led to each output underflow (see underflow_cause)
        causes = dict(self.past_underflow_causes + collections.Counter(s.streams.xruns.underflow_causes))
        out.update(
            {
                "server": r.server,
                "backend": r.backend,
                "capture": {"device": r.capture, "rate": r.rate, "route": r.capture_route},
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
                    "playback_level_ema": round(p.drift.state.level_ema, 1),  # the ring less what the server is owed
                    "playback_owed": round(p.owed, 1),
                    "playback_level_band": [round(p.drift.state.min_ema, 1), round(p.drift.state.max_ema, 1)] if math.isfinite(p.drift.state.min_ema) else None,
                    "drift_correction_ppm": round(p.drift.state.correction * 1e6, 1),
                    "playback_min_fill": p.min_fill if p.min_fill < (1 << 62) else None,
                },
                "processing_ms": {k: round(v, 3) for k, v in p.timing().items()},
                "worker_late_wakes": {"count": s.late_wakes, "over_ms": 1e3 * LATE_WAKE_S, "max_ms": round(1e3 * s.max_late_wake_s, 2)},
                "blocks": p.counters.blocks,
                "xruns": xr,
                "playback_ring_short": ring_short,
                "output_underflow_causes": causes,
                "last_output_underflow": s.streams.xruns.last_underflow or self.last_underflow or None,
                "engine": s.engine.counters.snapshot(),
            }
        )
        return out


def run_command(config_path: str | None) -> int:
    """``rtupscale run``: the daemon in the foreground. Exit 0 on TERM/INT, 2 on a user
    error (bad config, device, model: one line), 1 when the audio path cannot be kept up."""
    from rtupscale.cli import load_config_or_exit, default_config_path
    from rtupscale.control import ControlError

    path = config_path or default_config_path()
    cfg = load_config_or_exit(path)
    daemon = Daemon(cfg, path)
    try:
        return daemon.run()
    except (DeviceError, ControlError) as e:
        print(f"rtupscale run: {e}", file=sys.stderr)
        return EXIT_USER
