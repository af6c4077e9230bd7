"""The live daemon: ``rtupscale run``.

Threads::

    stream callbacks (C, no GIL)   capture -> capture ring        playback ring -> DAC
    worker (one, live/worker.py)   capture ring -> Engine -> drift -> playback ring
    main (this module)             signals (TERM/INT: fade out and stop; HUP: reload),
                                   systemd notify + watchdog, stall detection, recovery
                                   (live/supervisor.py), rate checks, event logging
    control                        unix socket (status, bypass); optional Prometheus

The daemon assembles sessions (live/session.py) from parts it passes in: the sound-server
client, the virtual sink, the engine factory and the stream backends.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import signal
import sys
import threading
import time

from rtupscale import FACTOR
from rtupscale.audio import cpuawake, gcpause, pulse
from rtupscale.audio.devices import DeviceError
from rtupscale.audio.pipeline import Pipeline
from rtupscale.live import reload as reload_plan
from rtupscale.live.rates import capture_rate_change, check_playback_rate
from rtupscale.live.routing import REATTACH_WINDOW_S, AllApps, OurApps, others_streams
from rtupscale.live.server import SoundServerClient
from rtupscale.live.session import Backend, Session, SessionParts
from rtupscale.live.sink import VirtualSink
from rtupscale.live.status import XrunBank, build_status
from rtupscale.live.supervisor import EXIT_FAILURE, EXIT_OK, EXIT_USER, StopDaemon, StopReason, Supervisor
from rtupscale.live.worker import STALL_S

log = logging.getLogger("rtupscale.daemon")

RATE_CHECK_EVERY_S = 2.0
"""Without the server's events (pulsectl missing): how often the capture rate is polled."""
RATE_RECHECK_GAP_S = 0.3
"""A burst of the server's sink events re-checks the rate once, this long after the first."""
RESAMPLED_RECHECK_S = 3.0
"""While PipeWire's DAC runs at another rate, the rate is checked again this often: lifting
``clock.force-rate`` or ``allowed-rates`` shows in no event of the PulseAudio protocol."""
REGRAPH_EVERY_S = 10.0
"""At most this often the daemon reopens its playback stream to let a PipeWire graph that
only our stream holds at another rate switch to the x4 rate."""
RATE_SWITCH_MIN_S = 2.0
"""``audio.rate: auto``: the virtual sink changes its rate at most this often."""
PARK_SUFFIX = "switching"
"""``audio.rate: auto``: while the virtual sink is remade at a new rate, its apps wait on a
silent sink of this name (after the virtual sink's and a dash), not on the DAC un-upscaled."""
REATTACH_AFTER_SWITCH_S = 3.0
"""``audio.rate: auto``: after a switch, the apps that were on our sink and play elsewhere are
moved back for this long (the next switch waits for it to end)."""
UNPARK_S = 3.0
"""``audio.rate: auto``: how long the apps' moves back to the remade sink are repeated."""
RETAKE_CHECK_S = 0.3
"""``routing.all_apps``: how often streams just moved are checked (see ``routing.RETAKE_S``)."""
TAKE_GAP_S = 0.1
"""``routing.all_apps``: a new app stream is moved to our sink this long after the server
announced it (the server lists it by then)."""
REGRAPH_TRIES = 3
"""Reopens in a row that may leave a PipeWire DAC's graph at another rate (something no
stream listing shows holds it) before the daemon stops trying, until the server's streams
change or :data:`REGRAPH_RETRY_S` has passed: each reopen is a fade and a pause at the DAC."""
REGRAPH_RETRY_S = 600.0
"""After giving up (:data:`REGRAPH_TRIES`), the daemon tries again this long later even if
no stream came or went."""
REGRAPH_AFTER_SWITCH_S = 2.0
"""The same, in the 15 s after ``audio.rate: auto`` changed the rate: the apps that moved
back to our sink may hold the DAC's graph at their rate for a moment."""
SHUTDOWN_LIMIT_S = 8.0
"""After TERM/INT the daemon exits within this long, cleaned up or not."""
GIL_SWITCH_S = 0.0005
"""Python's thread switch interval in the daemon: a thread holding the GIL delays the
worker by up to this (5 ms by default, which is a block at low latency)."""


class State(str, enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STALLED = "stalled"
    RECOVERING = "recovering"
    STOPPED = "stopped"


class Daemon:
    """The daemon for ``config`` (read from ``config_path``, which a reload reads again).

    Args:
        server: the sound-server client (default :mod:`rtupscale.audio.pulse`).
        parts: :class:`SessionParts` fields to replace (tests: ``open_streams``,
            ``resolve_capture``, ``resolve_playback``, ``choose_backend``).
    """

    def __init__(self, config, config_path: str | None, server: SoundServerClient = pulse, parts: dict | None = None):
        self.config = config
        self.config_path = config_path
        self.server = server
        self._parts = dict(parts or {})
        self.state = State.STARTING
        self.stop_reason: str | None = None
        self.stop_kind: StopReason | None = None
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
        self.last_rate_check = 0.0
        self.last_latency_probe = 0.0
        self.bank = XrunBank()
        self.sink = VirtualSink(server)
        self.nonfinite_reported = False
        self.gc = gcpause.GcPauses()
        self.server_events = None  # rtupscale.audio.server_events.ServerEvents, from run()
        self.apps: OurApps | None = None  # the apps on our virtual sink (with the events)
        self.all_apps: AllApps | None = None  # routing.all_apps (with the events)
        self.rate_checks = 0
        self.last_regraph = -REGRAPH_EVERY_S
        self.regraph_misses = 0  # reopens in a row that left the DAC's graph at another rate
        self.regraph_census: tuple[frozenset, float] | None = None  # the other streams, and when, at giving up
        self.rate_switches = 0
        self.last_rate_switch = -RATE_SWITCH_MIN_S

    # -- parts ----------------------------------------------------------------------
    def build_engine(self, config, runner, rate: int):
        from rtupscale.engine import build_engine

        engine = build_engine(config, config.audio.channels, rate, runner)
        engine.set_bypass(self.bypass)
        return engine

    def session_parts(self) -> SessionParts:
        return SessionParts(server=self.server, sink=self.sink, build_engine=self.build_engine,
                            before_start=self.gc.settle, **self._parts)

    def claim_sink(self, name: str) -> None:
        """Hold the lock on virtual sink ``name`` (see :class:`VirtualSink`)."""
        self.sink.claim(name)

    def release_sink_claim(self) -> None:
        self.sink.release_claim()

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
        sys.setswitchinterval(GIL_SWITCH_S)
        # Import the model runtime now, not on the first reload that loads a model: importing
        # onnxruntime holds the GIL for long enough to starve the worker.
        import rtupscale.model.runner  # noqa: F401
        self.gc.install()
        self.control = control.ControlServer(self, self.config.control)
        self.control.start()  # refuses to start if another daemon answers on the socket
        self.sink.lock_folder = self.control.path.parent
        self._watch_server()
        try:
            self._set_cpus_awake(self.config.latency.keep_cpus_awake)
            self.runner = self._load_runner(self.config)
            self.session = self._start_session(self.config)
            self.state = State.RUNNING
            self._log_start()
            service.sd_notify("READY=1\nSTATUS=running")
            code = self._main_loop()
        except StopDaemon as e:
            self.stop_reason, self.stop_kind = e.reason, e.kind
            log.error("stopping: %s", e.reason)
            code = e.code
        finally:
            self.state = State.STOPPED
            service.sd_notify(f"STOPPING=1\nSTATUS=stopped: {self.stop_reason or 'unknown'}")
            if self._takes_all_apps():
                self.all_apps.give_back()
            if self.session is not None:
                self.session.close()
            self.sink.remove()  # also one kept by a recovery that then gave up
            self.control.stop()
            if self.server_events is not None:
                self.server_events.stop()
            self.gc.uninstall()
            cpuawake.stop()
        log.info("stopped: %s", self.stop_reason)
        return code

    def _watch_server(self) -> None:
        """Listen to the sound server's events (the real server only; tests with a fake
        server pass none): a sink or source that changed is checked when it changes, not
        polled."""
        if self.server is not pulse:
            return
        from rtupscale.audio.server_events import ServerEvents

        try:
            ev = ServerEvents(self._wake.set)
            ev.start()
        except ImportError as e:
            log.warning("no event subscription to the sound server (%s): polling it every %g s instead", e, RATE_CHECK_EVERY_S)
            return
        self.server_events = ev
        if self.config.audio.capture == "auto":
            self.apps = OurApps(self.server, self.config.audio.virtual_sink)
            self.all_apps = self._make_all_apps(self.config)

    def _make_all_apps(self, config) -> AllApps:
        sink = config.audio.virtual_sink
        return AllApps(self.server, sink, config.routing.exclude, skip_sinks=(f"{sink}-{PARK_SUFFIX}",))

    def _takes_all_apps(self) -> bool:
        return self.all_apps is not None and self.config.routing.all_apps

    def _follows_rate(self) -> bool:
        return self.config.audio.follows_rate and self.config.audio.capture == "auto"

    def _load_runner(self, config):
        if config.model_path() is None:
            log.info("model: none (model.path) - the plain x4 upsampler")
            return None
        from rtupscale.app import load_runner

        return load_runner(config)

    def _open_session(self, config, rate: int | None = None) -> Session:
        try:
            return Session(config, self.runner, self.session_parts(), rate)
        except DeviceError:
            raise
        except self.server.SoundServerError as e:
            raise StopDaemon(f"sound server: {e}", kind=StopReason.SOUND_SERVER) from e

    def _start_session(self, config, rate: int | None = None) -> Session:
        s = self._open_session(config, rate)
        s.start(self.events)
        return s

    def _log_start(self) -> None:
        s = self.session
        r = s.routing
        model = "none (plain x4 upsampler)" if self.runner is None else f"{self.runner.name} on {self.runner.provider}"
        log.info("sound server: %s; streams: %s", r.server, "native PulseAudio" if r.backend == Backend.PULSE else "PortAudio")
        log.info("capture: %s at %d Hz; playback: %s at %d Hz", r.capture, r.rate, r.playback, r.out_rate)
        log.info(
            "model: %s; block %d frames (%.1f ms), prefill %.1f ms, crossfade %.1f ms, engine latency %d frames",
            model, s.pipeline.block_size, 1e3 * s.pipeline.block_size / s.rate,
            self.config.latency.prefill_ms, self.config.latency.crossfade_ms, s.engine.latency,
        )
        log.info("control socket %s", self.control.path)
        if s.worker is not None:
            s.worker.started.wait(0.5)  # the worker sets its priority as it starts
        log.info("audio threads: %s; worker: %s", ", ".join(s.audio_thread_priority) or "none new", s.state.priority)
        from rtupscale.dsp import kernels

        if not kernels.available():
            log.warning("%s (more CPU per block; reinstall with a C compiler)", kernels.why_not())

    def _main_loop(self) -> int:
        from rtupscale import service

        watchdog_s = service.watchdog_interval_s()
        next_watchdog = 0.0
        rate_checked = False
        latency_logged = False
        rate_recheck_at = 0.0
        apps_refresh_at = reattach_until = 0.0
        follow_at = time.monotonic() if self._follows_rate() else 0.0  # apps already on a kept sink
        take_at = time.monotonic()  # routing.all_apps: the apps that play already
        if self._follows_rate() and self.apps is None:
            log.warning("audio.rate: auto needs the sound server's events (pulsectl): the virtual sink stays at %d Hz",
                        self.session.rate)
        while True:
            self._wake.wait(min(0.25, max(0.0, rate_recheck_at - time.monotonic())) if rate_recheck_at else 0.25)
            self._wake.clear()
            self._drain_events()
            if self._stop.is_set():
                self.stop_reason = f"{self._stop_signal or 'stop'} received"
                self.stop_kind = StopReason.SIGNAL
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
            if now - s.state.heartbeat > STALL_S:
                self.state = State.STALLED
            elif self.state == State.STALLED:
                self.state = State.RUNNING
            first_audio = s.state.first_audio_at
            if not rate_checked and first_audio is not None and now - first_audio > 0.5:
                rate_checked = True
                self.check_rates()
                if self.session is not s:  # reopened so that the DAC's graph switches rate
                    rate_checked = latency_logged = False
                    continue
            if self.server_events is None:
                if now - self.last_rate_check > RATE_CHECK_EVERY_S and rate_checked:
                    self._check_capture_rate()
            else:
                events = self.server_events.take()
                if self.apps is not None:
                    apps_refresh_at, reattach_until = self._follow_apps(events, now, apps_refresh_at, reattach_until)
                    if self._follows_rate() and any(e.facility == "sink_input" for e in events):
                        follow_at = follow_at or now + RATE_RECHECK_GAP_S
                    if any((e.facility == "sink_input" and e.kind == "new") or e.index == -1 for e in events):
                        take_at = take_at or now + TAKE_GAP_S
                if take_at and now >= take_at:
                    take_at = 0.0
                    if self._takes_all_apps() and self.session.sink_module is not None:
                        self.all_apps.take(now)
                        if self.all_apps.pending:  # look again whether they stayed
                            take_at = now + RETAKE_CHECK_S
                if any(e.facility == "server" and e.kind == "change" for e in events) and self._follow_default_sink():
                    rate_checked = latency_logged = False
                    continue
                if follow_at and now >= follow_at and self.apps is not None and not reattach_until:
                    follow_at = self._follow_rate(now)
                    if self.session is not s:
                        # the apps that were ours are moved back for a while, should the server
                        # have linked one elsewhere after it came back from the parking sink
                        reattach_until = time.monotonic() + REATTACH_AFTER_SWITCH_S
                        rate_checked = latency_logged = False
                        continue
                if rate_checked and any(e.facility == "source" for e in events):
                    self._check_capture_rate()
                resampled_pw = bool(s.routing.resampled and s.server is not None and s.server.is_pipewire)
                if rate_checked and (
                    any(e.facility in ("sink", "server") or (resampled_pw and e.kind == "remove") for e in events)
                    or (resampled_pw and now - self.last_rate_check > RESAMPLED_RECHECK_S)
                ):
                    rate_recheck_at = rate_recheck_at or now + RATE_RECHECK_GAP_S
                if rate_recheck_at and now >= rate_recheck_at and self.session is s:
                    rate_recheck_at = 0.0
                    self.check_rates()
                    if self.session is not s:
                        rate_checked = latency_logged = False
                        continue
            for line in s.check_dac_gaps():
                log.warning("%s", line)
            if first_audio is not None and now - self.last_latency_probe > 1.0:
                self.last_latency_probe = now
                s.measure_device_latency()
            if not latency_logged and first_audio is not None and now - first_audio > 5.0:
                latency_logged = True
                lat = s.latency_report()
                log.info(
                    "latency %.1f ms: engine %.1f + capture ring %.1f + playback ring %.1f (target %.1f) "
                    "+ devices %.1f in / %.1f out + sink %.1f",
                    lat["total_ms"], lat["engine_ms"], lat["capture_ring_ms"], lat["playback_ring_ms"],
                    lat["prefill_target_ms"], lat["device_in_ms"], lat["device_out_ms"], lat["sink_ms"],
                )
            if watchdog_s and now >= next_watchdog and self.state != State.STALLED:
                service.sd_notify("WATCHDOG=1")
                next_watchdog = now + watchdog_s / 3

    def _follow_apps(self, events, now: float, refresh_at: float, reattach_until: float) -> tuple[float, float]:
        """Remember the apps on our sink when the server says a stream changed; after the
        server came back (the listener reconnected), move the remembered ones back to our
        sink for ``REATTACH_WINDOW_S``. Returns the new (refresh_at, reattach_until)."""
        if any(e.facility == "server" and e.kind == "new" and e.index == -1 for e in events):
            reattach_until = now + REATTACH_WINDOW_S
            log.info("sound server back: moving the apps that played to %s before (%d) back to it",
                     self.apps.sink, len(self.apps.remembered))
        if reattach_until:
            if now < reattach_until:
                if self.apps.remembered and self.session is not None and self.session.sink_module is not None:
                    self.apps.reattach()
                return refresh_at, reattach_until
            reattach_until = 0.0
            refresh_at = now
        if any(e.facility == "sink_input" for e in events):
            refresh_at = refresh_at or now + RATE_RECHECK_GAP_S
        if refresh_at and now >= refresh_at:
            refresh_at = 0.0
            self.apps.refresh()
        return refresh_at, reattach_until

    def _follow_rate(self, now: float) -> float:
        """``audio.rate: auto``: when the apps on our sink all play at one base rate that is
        not the sink's, remake the sink and the audio path at that rate (playback at 4x); the
        apps wait on a silent sink meanwhile and come back. Returns when to look again (0:
        at the next app event)."""
        from rtupscale.config import BASE_RATES

        s = self.session
        rate = self.apps.rate(BASE_RATES)
        if rate is None or rate == s.rate:
            return 0.0
        if now - self.last_rate_switch < RATE_SWITCH_MIN_S:
            return self.last_rate_switch + RATE_SWITCH_MIN_S
        self.last_rate_switch = now
        a = self.config.audio
        park = f"{a.virtual_sink}-{PARK_SUFFIX}"
        self.apps.refresh()  # remember who plays to our sink now
        log.info("the apps on %s play at %d Hz: remaking it at %d Hz (playback at %d Hz)", a.virtual_sink, rate, rate, FACTOR * rate)
        park_module = None
        parked: list = []
        t0 = time.monotonic()
        self._fade_out()  # first: the apps leaving our sink would be a step in what we capture
        try:
            park_module = self.server.load_null_sink(park, rate, a.channels)
            parked = self.apps.park(park)
            # before our sink goes: a move still in flight then would take the app to the
            # server's fallback sink, where it plays un-upscaled
            _, _, left = self.apps.move_until_there({x.index for x in parked}, park, UNPARK_S)
            log.info("%d app(s) wait on %s: %s%s", len(parked), park, ", ".join(x.app or x.node for x in parked),
                     f" ({left} did not get there)" if left else "")
        except self.server.SoundServerError as e:
            log.warning("could not hold the apps on a silent sink while %s is remade (%s): they play on the "
                        "server's fallback sink meanwhile", a.virtual_sink, e)
        try:
            self._close_session(keep_sink=False)  # status shows the closed session until the new one runs
            self.session = self._start_session(self.config, rate)
            self.rate_switches += 1
        except (DeviceError, StopDaemon, RuntimeError, self.server.SoundServerError) as e:
            self.session = None
            log.warning("could not reopen at %d Hz (%s): reopening at %d Hz", rate, e, a.base_rate)
        finally:
            if park_module is not None:
                if self.session is not None and self.session.sink_module is not None:
                    self._unpark(park, {x.index for x in parked})
                try:  # what is still parked goes to the fallback sink
                    self.server.unload_module(park_module)
                except self.server.SoundServerError as e:
                    log.warning("could not remove the sink %s (module %d): %s", park, park_module, e)
        if self.session is None:
            self._recover(f"the audio path did not reopen at {rate} Hz")
        else:
            self.apps.refresh()
            log.info("rate switch to %d Hz took %.0f ms (the apps waited on %s)", rate, 1e3 * (time.monotonic() - t0), park)
            self._log_start()
        return 0.0

    def _follow_default_sink(self) -> bool:
        """``audio.playback: default``: when the server's default sink changed to another
        real sink (headphones plugged in, a Bluetooth device connected), move the playback
        there (the virtual sink and its apps stay). Returns whether it moved."""
        a = self.config.audio
        s = self.session
        if a.playback != "default" or s is None or s.playback_ep.server_name is None:
            return False
        try:
            default = self.server.server_info().default_sink
        except self.server.SoundServerError:
            return False
        if not default or default in (s.playback_ep.server_name, a.virtual_sink) or default.startswith(a.virtual_sink + "-"):
            return False
        self._reopen(f"the default sink is now {default}: moving the playback there from {s.playback_ep.server_name}")
        return True

    def _reopen(self, why: str) -> None:
        """Reopen the audio path on purpose (not after a failure): faded out, the virtual sink
        and its apps kept, at the same rate; the new path fades its first sound in. Counted
        with the recoveries (``status``)."""
        s = self.session
        log.info("%s", why)
        self.recoveries += 1
        self._fade_out()
        self._close_session(keep_sink=True)  # status shows the closed session until the new one runs
        try:
            self.session = self._start_session(self.config, s.rate)
        except (DeviceError, StopDaemon, RuntimeError, self.server.SoundServerError) as e:
            self.session = None
            self._recover(f"{why}: the reopen failed ({e})")
            return
        self._log_start()

    def _unpark(self, park: str, parked: set[int]) -> None:
        """Move the apps parked on ``park`` (the stream indices ``parked``, wherever they play
        now) and any other app on it back to our sink, and make sure they went: a PipeWire
        server accepts the move before its new sink can take streams, and the app stays where
        it was; so the move is repeated until each is there (for up to ``UNPARK_S``)."""
        try:
            on_park = {a.index for a in others_streams(self.server) if a.sink == park}
        except self.server.SoundServerError:
            on_park = set()
        moved, tries, left = self.apps.move_until_there(parked | on_park, self.apps.sink, UNPARK_S)
        if left:
            log.warning("%d app(s) did not get back to %s from %s: they go to the server's fallback sink",
                        left, self.config.audio.virtual_sink, park)
        else:
            log.info("app(s) moved back to %s (%d move(s), %d tries)", self.config.audio.virtual_sink, moved, tries)

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
        t0 = time.monotonic()
        deadline = t0 + 1.0 + fade_frames / s.pipeline.out_rate
        while time.monotonic() < deadline and not s.pipeline.faded:  # the fade itself
            time.sleep(0.005)
        # then the ring's frames ahead of the fade's end, and the server's queue, play out
        # (the ring never empties: the worker keeps writing silence behind the fade)
        time.sleep(min(0.5, s.play_ring.fill / s.pipeline.out_rate + 1e-3 * self.config.latency.playback_buffer_ms + 0.01))
        log.info("faded out (%.0f ms)", 1e3 * (time.monotonic() - t0))

    # -- recovery ---------------------------------------------------------------------
    def _close_session(self, keep_sink: bool) -> None:
        s = self.session
        if s is not None:
            s.close(keep_sink=keep_sink)
            self.bank.bank(s)

    def _recover(self, why: str) -> None:
        self.state = State.RECOVERING
        self.recoveries += 1
        log.warning("audio path failed: %s; reopening", why)
        # rate: auto: at the rate the apps play at, which the kept sink runs at
        rate = self.session.rate if self.session is not None and self._follows_rate() else None
        self._close_session(keep_sink=True)
        sup = Supervisor(lambda: self._start_session(self.config, rate), self._stop,
                         stop_name=lambda: self._stop_signal or "stop", after_failure=_reinit_portaudio)
        self.session = sup.reopen()
        self.state = State.RUNNING
        self._log_start()

    def check_rates(self) -> None:
        """Log (and keep for ``status``) the rate that really reaches the DAC."""
        self.last_rate_check = time.monotonic()
        self.rate_checks += 1
        s = self.session
        check_playback_rate(s, self.server)
        r = s.routing
        if not r.resampled:
            self.regraph_misses, self.regraph_census = 0, None
        if not (r.resampled and s.server is not None and s.server.is_pipewire and r.advice.startswith("another stream holds")):
            return
        # PipeWire switches a graph's rate only while nothing runs on it: if the stream that
        # held it at another rate has gone and ours alone keeps it there, a new stream of ours
        # lets it switch (a reopen of the audio path, keeping the virtual sink). A recording
        # of the DAC's monitor runs in the same graph and holds it as a player does.
        sink = s.playback_ep.server_name
        try:
            streams = [a for a in self.server.list_app_streams() if a.pid != os.getpid()]
            readers = [a for a in self.server.list_monitor_readers(sink) if a.pid != os.getpid()]
        except self.server.SoundServerError:
            return
        others = [a for a in streams if a.sink == sink]
        census = frozenset((a.sink, a.index) for a in streams)
        if self.regraph_census is not None and (
                census != self.regraph_census[0] or time.monotonic() - self.regraph_census[1] > REGRAPH_RETRY_S):
            self.regraph_misses, self.regraph_census = 0, None
        if others or readers:
            log.info("rate check: the DAC's graph is held by %s", ", ".join(
                [f"{a.app or a.node} (stream {a.index})" for a in others]
                + [f"{a.app or a.node} (recording its monitor, stream {a.index})" for a in readers]))
        elif self.regraph_misses >= REGRAPH_TRIES:
            if self.regraph_census is None:
                self.regraph_census = (census, time.monotonic())
                log.warning("rate check: the DAC's graph stayed at %d Hz through %d reopens with no other stream seen "
                            "on it: not reopening again until the server's streams change (or for %.0f min)",
                            r.dac_rate, REGRAPH_TRIES, REGRAPH_RETRY_S / 60)
        elif time.monotonic() - self.last_regraph > (
                REGRAPH_AFTER_SWITCH_S if time.monotonic() - self.last_rate_switch < 15.0 else REGRAPH_EVERY_S):
            self.last_regraph = time.monotonic()
            self.regraph_misses += 1
            self._reopen(f"the DAC's graph runs at {r.dac_rate} Hz with only our stream on it: reopening the playback "
                         f"so that it switches to {r.out_rate} Hz")

    def _check_capture_rate(self) -> None:
        """A capture source that switched between 44.1 and 48 kHz: reopen at its new rate."""
        self.last_rate_check = time.monotonic()
        s = self.session
        new_rate = capture_rate_change(s, self.server, self.config.audio.capture)
        if new_rate is None:
            return
        log.warning("capture source %s switched to %d Hz (was %d): reopening at %d Hz", s.capture_ep.server_name, new_rate, s.rate, new_rate)
        self._close_session(keep_sink=False)
        self.session = self._start_session(self.config, new_rate)
        self.recoveries += 1

    # -- reload -------------------------------------------------------------------------
    def reload(self) -> None:
        from rtupscale.config import ConfigError, load_config

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
        plan = reload_plan.plan(self.config, new)
        if not plan:
            log.info("reload: no change")
            return
        log.info("reload: changed %s", ", ".join(plan.changed))
        try:
            self._apply(new, plan)
        except Exception as e:
            self.reload_errors += 1
            log.error("reload failed, keeping the running config: %s", e)
            return
        old, self.config = self.config, new
        if self.all_apps is not None and old.routing != new.routing:
            self._apply_routing(old)

    def _apply_routing(self, old) -> None:
        """A reload changed ``routing``: all_apps turned off gives the apps back, turned on
        takes them; a new exclude list applies to streams from now on."""
        came_from = self.all_apps.came_from
        if old.routing.all_apps and not self.config.routing.all_apps:
            log.info("reload: routing.all_apps off: moving the apps back (%d)", self.all_apps.give_back())
        self.all_apps = self._make_all_apps(self.config)
        self.all_apps.came_from = came_from if self.config.routing.all_apps else {}
        if self.config.routing.all_apps and self.session is not None and self.session.sink_module is not None:
            self.all_apps.take()

    def _apply(self, new, plan: reload_plan.ReloadPlan) -> None:
        """Carry out ``plan``. Raises on the first part that cannot be built; the control
        socket is moved back then, the audio parts roll back themselves."""
        if not plan.control:
            self._apply_audio(new, plan)
            return
        # first: a socket or port it cannot take leaves everything as it runs
        self.control.restart(new.control)
        try:
            self._apply_audio(new, plan)
        except Exception:
            try:
                self.control.restart(self.config.control)  # the running config, whole
            except Exception as e:
                log.error("reload: the control socket stays on the new settings (%s)", e)
            raise

    def _apply_audio(self, new, plan: reload_plan.ReloadPlan) -> None:
        """The model, engine and audio path parts of a reload (see ``_apply``)."""
        s = self.session
        runner = self.runner
        if plan.model:
            runner = self._load_runner(new)  # raises on a bad model: the old one keeps running
        if plan.reopen_audio:
            log.info("reload: audio devices or device buffers changed: reopening the audio path")
            self._close_session(keep_sink=plan.keep_sink)
            old_runner, self.runner = self.runner, runner
            try:
                # rate: auto kept: stay at the rate the apps play at
                self.session = self._open_session(new, s.rate if new.audio.follows_rate and plan.keep_sink else None)
            except Exception:
                log.error("reload: the new audio devices do not open: back to the running ones")
                self.runner = old_runner
                self.session = self._start_session(self.config, s.rate)
                raise
            self.session.start(self.events)
            self.check_rates()
        elif plan.rebuild_engine or (plan.model and s.engine.can_swap(runner) is not None):
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
            if plan.model:
                s.engine.swap_runner(runner)
                self.runner = runner
                gcpause.freeze()
                log.info("reload: model swapped under the crossfade: %s", "none" if runner is None else runner.name)
            if plan.prefill:
                prefill = int(round(new.latency.prefill_ms * 1e-3 * FACTOR * s.rate))
                s.pipeline.set_target(prefill)
                log.info("reload: prefill %.1f ms (the drift control moves the level there)", new.latency.prefill_ms)
        if plan.cpus_awake:
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
        return build_status(self)


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


def run_command(config_path: str | None) -> int:
    """``rtupscale run``: the daemon in the foreground. Exit 0 on TERM/INT, 2 on a user
    error (bad config, device, model: one line), 1 when the audio path cannot be kept up."""
    from rtupscale.app import default_config_path, load_config_or_exit
    from rtupscale.control import ControlError

    path = config_path or default_config_path()
    cfg = load_config_or_exit(path)
    daemon = Daemon(cfg, path)
    try:
        return daemon.run()
    except (DeviceError, ControlError) as e:
        print(f"rtupscale run: {e}", file=sys.stderr)
        return EXIT_USER
