"""The live tests' sound servers (a private PulseAudio, or a private PipeWire + WirePlumber +
pipewire-pulse), the daemon as a subprocess, and the measurements the live tests share (delay
between two monitors, alignment of a recording with the file-mode output).

Both servers speak the PulseAudio protocol to the daemon and to the tests (``pactl``,
``pacat``, the recorder), and offer the same methods: ``start``, ``stop``, ``kill`` (as a
crash), ``died``, ``pactl``, ``sinks``, ``sink_inputs``, ``env`` and ``proc`` (the process
that serves the PulseAudio protocol: ``pulseaudio``, or ``pipewire-pulse``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PA_FILE = HERE / "null-sinks.pa"
PW_CONF = HERE / "pipewire"  # pipewire/pipewire.conf.d/: the x4 rates and the null DACs
PYTHON = sys.executable


def wait_until(cond, timeout: float, what: str):
    """``cond()``'s first true value within ``timeout`` s (polled every 0.1 s), else an
    AssertionError naming ``what`` and the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:g} s (last: {last})")


class PulseServer:
    """``pulseaudio -n -F null-sinks.pa`` with a private XDG_RUNTIME_DIR (no session bus)."""

    name = "pulseaudio"

    def __init__(self, root: Path):
        self.root = root
        self.runtime = root / "run"
        self.log = root / "pulse.log"
        self.proc: subprocess.Popen | None = None

    @property
    def env(self) -> dict:
        e = dict(os.environ)
        e["XDG_RUNTIME_DIR"] = str(self.runtime)
        e["HOME"] = str(self.root)  # no user ~/.config/pulse, no ~/.asoundrc
        e.pop("PULSE_SERVER", None)
        e.pop("DBUS_SESSION_BUS_ADDRESS", None)
        return e

    def start(self) -> None:
        self.runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.runtime, 0o700)
        # PulseAudio caps a real-time thread's CPU time between blocking calls at 200 ms
        # (rlimit-rttime) and the kernel kills the server past it. Run whole at SCHED_RR (below)
        # on a 2-core machine where pytest analyses a minute of 176.4 kHz audio, the server
        # died once with no word in its log, between two tests. 2 s keeps the safety net.
        conf = self.root / ".config" / "pulse"
        conf.mkdir(parents=True, exist_ok=True)
        # The server stands in for the sound hardware: its I/O threads (null sinks, also those
        # loaded later) at SCHED_RR 30, above every client's real-time threads (the daemon's at
        # 20 and below, the recorder's at 15); PulseAudio's default is 5, under the daemon's
        # callback threads, and its main thread (which carries every client's data) is not
        # real-time at all: raised below, after start.
        (conf / "daemon.conf").write_text("rlimit-rttime = 2000000\nrealtime-priority = 30\nrlimit-rtprio = 40\n")
        self.proc = subprocess.Popen(
            [shutil.which("pulseaudio") or "pulseaudio", "-n", "-F", str(PA_FILE), "--daemonize=no",
             "--exit-idle-time=-1", "--realtime=yes", "--high-priority=yes", f"--log-target=file:{self.log}"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {self.proc.returncode} (another server running?); log {self.log}")
            if self.pactl("info", check=False).returncode == 0:
                self._raise_main_thread()
                return
            time.sleep(0.1)
        raise RuntimeError("pulseaudio did not answer within 10 s")

    def _raise_main_thread(self) -> None:
        """SCHED_RR 30 for the server's main thread where allowed (root in CI); else as is."""
        try:
            os.sched_setscheduler(self.proc.pid, os.SCHED_RR, os.sched_param(30))
        except (PermissionError, OSError):
            pass

    def died(self) -> str | None:
        """Why the server is gone (exit status and the end of its log), or None if it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        tail = self.log.read_text(errors="replace").splitlines()[-5:] if self.log.exists() else []
        return f"pulseaudio exited with {self.proc.returncode}; log ends: " + " | ".join(tail)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """As a crash: SIGKILL, no cleanup."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        sock = self.runtime / "pulse" / "native"
        if sock.exists():
            sock.unlink()

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, check=check, timeout=10)

    def sinks(self) -> list[dict]:
        return json.loads(self.pactl("-f", "json", "list", "sinks").stdout)

    def sink_inputs(self) -> list[dict]:
        return json.loads(self.pactl("-f", "json", "list", "sink-inputs").stdout)


class PipeWireServer:
    """PipeWire + WirePlumber + pipewire-pulse, headless, with a private runtime dir, config,
    state and session bus (``dbus-daemon --session``), and the null DACs ``dac`` and ``dac192``
    of ``pipewire/pipewire.conf.d`` (see ../shared/audio/README.md, "PipeWire").

    ``proc`` is pipewire-pulse: ``kill`` kills only it (as a crash of the PulseAudio-protocol
    server: the graph, the DAC nodes and PipeWire-native clients stay), ``start`` starts
    whatever part is not running."""

    name = "pipewire"
    PARTS = ("dbus", "pipewire", "wireplumber", "pipewire-pulse")

    def __init__(self, root: Path, dropins: tuple[str, ...] | None = None):
        """``dropins``: the names of ``pipewire/pipewire.conf.d``'s files to install (all by
        default); what ``root / "config"`` already holds is kept."""
        self.root = root
        self.runtime = root / "run"
        self.log = root / "pipewire-pulse.log"
        self.procs: dict[str, subprocess.Popen] = {}
        self.dropins = dropins

    @staticmethod
    def missing() -> str | None:
        """What this machine lacks to run the server, or None."""
        need = ["pipewire", "wireplumber", "pipewire-pulse", "dbus-daemon", "pactl", "pw-dump", "pw-metadata", "pw-cat"]
        lack = [n for n in need if shutil.which(n) is None]
        return ("missing " + ", ".join(lack) + " (apt: pipewire pipewire-pulse wireplumber pipewire-bin dbus "
                "pulseaudio-utils; scripts/setup --test installs them)") if lack else None

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.procs.get("pipewire-pulse")

    @property
    def env(self) -> dict:
        e = dict(os.environ)
        run = str(self.runtime)
        e.update({
            "XDG_RUNTIME_DIR": run, "PIPEWIRE_RUNTIME_DIR": run, "HOME": str(self.root),
            "XDG_CONFIG_HOME": str(self.root / "config"), "XDG_STATE_HOME": str(self.root / "state"),
            "XDG_DATA_HOME": str(self.root / "data"), "PULSE_RUNTIME_PATH": f"{run}/pulse",
            "PULSE_SERVER": f"unix:{run}/pulse/native", "DBUS_SESSION_BUS_ADDRESS": f"unix:path={run}/bus",
        })
        e.pop("PIPEWIRE_REMOTE", None)
        return e

    def _spawn(self, part: str) -> None:
        cmd = {
            "dbus": ["dbus-daemon", "--session", f"--address=unix:path={self.runtime}/bus", "--nofork", "--nopidfile"],
            "pipewire": ["pipewire"], "wireplumber": ["wireplumber"], "pipewire-pulse": ["pipewire-pulse"],
        }[part]
        log = open(self.root / f"{part}.log", "ab")
        self.procs[part] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self) -> None:
        why = self.missing()
        if why:
            raise RuntimeError(why)
        self.runtime.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.runtime, 0o700)
        conf = self.root / "config" / "pipewire" / "pipewire.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        for f in (PW_CONF / "pipewire.conf.d").iterdir():
            if self.dropins is None or f.name in self.dropins:
                shutil.copy(f, conf / f.name)
        for d in ("state", "data"):
            (self.root / d).mkdir(exist_ok=True)
        for part in self.PARTS:
            p = self.procs.get(part)
            if p is not None and p.poll() is None:
                continue
            if part == "pipewire-pulse":
                sock = self.runtime / "pulse" / "native"
                if sock.exists():
                    sock.unlink()
            self._spawn(part)
            if part == "dbus":
                self._wait(lambda: (self.runtime / "bus").exists(), "dbus-daemon", 5)
            elif part == "pipewire":
                self._wait(lambda: (self.runtime / "pipewire-0").exists(), "pipewire", 5)
        # the PulseAudio protocol answers, and WirePlumber has made `dac` the default sink
        self._wait(lambda: "Default Sink: dac\n" in self.pactl("info", check=False).stdout, "pipewire-pulse", 10)

    def _wait(self, ready, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for part, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{part} exited with {p.returncode}; logs in {self.root}")
            if ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} not ready within {timeout:g} s; logs in {self.root}")

    def died(self) -> str | None:
        gone = [f"{part} exited with {p.returncode}" for part, p in self.procs.items() if p.poll() is not None]
        return "; ".join(gone) or None

    def _end(self, part: str, sig: int = signal.SIGTERM) -> None:
        p = self.procs.pop(part, None)
        if p is not None and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop(self) -> None:
        for part in reversed(self.PARTS):
            self._end(part)

    def kill(self) -> None:
        """As a crash of pipewire-pulse: SIGKILL, no cleanup (the graph runs on)."""
        self._end("pipewire-pulse", signal.SIGKILL)

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, check=check, timeout=10)

    def sinks(self) -> list[dict]:
        return json.loads(self.pactl("-f", "json", "list", "sinks").stdout)

    def sink_inputs(self) -> list[dict]:
        return json.loads(self.pactl("-f", "json", "list", "sink-inputs").stdout)

    def nodes(self) -> list:
        """pw-dump's nodes (``rtupscale.audio.pulse.PipeWireNode``)."""
        from rtupscale.audio.pulse import parse_pw_dump

        return parse_pw_dump(subprocess.run(["pw-dump"], env=self.env, capture_output=True, text=True, check=True, timeout=10).stdout)

    def node_rate(self, name: str) -> int | None:
        """The rate node ``name`` runs at (its negotiated Format), as pw-top shows it."""
        from rtupscale.audio.pulse import device_node

        node = device_node(self.nodes(), name)
        return None if node is None else node.rate

    def metadata(self, key: str, value: str) -> None:
        """``pw-metadata -n settings 0 KEY VALUE`` (e.g. clock.force-rate 48000)."""
        subprocess.run(["pw-metadata", "-n", "settings", "0", key, value], env=self.env, capture_output=True,
                       check=True, timeout=10)


class Daemon:
    """``rtupscale run --config CONFIG`` as a child process with the server's environment."""

    def __init__(self, server: "PulseServer | PipeWireServer", config: Path, log: Path):
        self.server, self.config, self.logpath = server, config, log
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> None:
        self._log = open(self.logpath, "ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-c", "import sys; from rtupscale.cli import main; sys.exit(main(sys.argv[1:]))", "run", "--config", str(self.config)],
            env=self.server.env, cwd=str(REPO), stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_running(self, timeout: float = 20.0) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                st = self.status()
                last = st
                if st["state"] == "running" and st.get("blocks", 0) > 0:
                    return st
            except Exception:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"daemon not running after {timeout} s (last status {last}):\n{self.log_text()[-3000:]}")

    def status(self) -> dict:
        from rtupscale.control import request

        ans = request(self.socket, {"cmd": "status"})
        assert ans["ok"], ans
        return ans["status"]

    def bypass(self, on: bool) -> dict:
        from rtupscale.control import request

        return request(self.socket, {"cmd": "bypass", "on": on})

    @property
    def socket(self) -> Path:
        import yaml

        cfg = yaml.safe_load(self.config.read_text())
        return Path(cfg["control"]["socket"])

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.logpath.read_text(errors="replace") if self.logpath.exists() else ""


# ------------------------------------------------------------------------ signals
def noise_signal(seconds: float, rate: int, seed: int = 1, cutoff_hz: float = 9000.0) -> np.ndarray:
    """Band-limited noise with a slow envelope, ``[frames, 2]`` float32, peak about 0.5.

    Noise has no period, so a correlation finds one lag; the band limit keeps interpolation
    errors of the alignment far below the error bound.
    """
    n = int(seconds * rate)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    spec = np.fft.rfft(x, axis=0)
    f = np.fft.rfftfreq(n, 1 / rate)
    spec[f > cutoff_hz] = 0
    spec[f < 40] = 0
    x = np.fft.irfft(spec, n, axis=0)
    t = np.arange(n) / rate
    env = 0.6 + 0.4 * np.sin(2 * np.pi * 0.37 * t)[:, None]
    x = x * env
    x *= 0.5 / np.abs(x).max()
    fade = min(n // 4, int(0.01 * rate))
    ramp = np.sin(np.linspace(0, np.pi / 2, fade)) ** 2
    x[:fade] *= ramp[:, None]
    x[-fade:] *= ramp[::-1, None]
    return x.astype(np.float32)


def sine(seconds: float, rate: int, freq: float = 997.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = amp * np.sin(2 * np.pi * freq * t)
    fade = int(0.05 * rate)
    ramp = np.sin(np.linspace(0, np.pi / 2, fade)) ** 2
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    return np.stack([x, x], 1).astype(np.float32)


# ---------------------------------------------------------------------- measuring
def _clock_fit(stamps: np.ndarray, column: int = 1) -> tuple[float, float]:
    """Fit time = t0 + index * period over a recorder's callbacks (robust to a few late
    ones); ``column`` 1 is PortAudio's ADC time, 3 ``time.monotonic()`` in the callback."""
    idx, adc = stamps[:, 0], stamps[:, column]
    ok = adc > 0
    idx, adc = idx[ok], adc[ok]
    period, t0 = np.polyfit(idx, adc, 1)
    resid = adc - (t0 + period * idx)
    keep = np.abs(resid - np.median(resid)) < 0.003
    period, t0 = np.polyfit(idx[keep], adc[keep], 1)
    return float(t0), float(period)


def _xcorr_lag(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, float]:
    """Lag L (samples, fractional) maximising corr(a[n], b[n + L]); and the peak's correlation."""
    n = len(a) + len(b)
    nfft = 1 << (n - 1).bit_length()
    c = np.fft.irfft(np.conj(np.fft.rfft(a, nfft)) * np.fft.rfft(b, nfft), nfft)
    lags = np.concatenate([c[: max_lag + 1], c[-max_lag:]])
    lag_idx = np.concatenate([np.arange(max_lag + 1), np.arange(-max_lag, 0)])
    k = int(np.argmax(lags))
    L = float(lag_idx[k])
    if 0 < k < len(lags) - 1 and lag_idx[k - 1] == lag_idx[k] - 1 and lag_idx[(k + 1) % len(lags)] == lag_idx[k] + 1:
        y0, y1, y2 = lags[k - 1], lags[k], lags[(k + 1) % len(lags)]
        den = y0 - 2 * y1 + y2
        if den != 0:
            L += 0.5 * (y0 - y2) / den
    i = int(lag_idx[k])
    if i >= 0:
        bb = b[i:i + len(a)]
        aa = a[: len(bb)]
    else:
        aa = a[-i:]
        bb = b[: len(aa)]
        aa = aa[: len(bb)]
    norm = np.sqrt(np.sum(aa * aa) * np.sum(bb * bb)) or 1.0
    return L, float(np.sum(aa * bb) / norm)


def _lowpass(x: np.ndarray, rate: int, cutoff: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / rate) > cutoff] = 0
    return np.fft.irfft(spec, len(x))


def monitor_delay(rec: dict, factor: int = 4, segments: int = 5) -> tuple[float, float]:
    """Delay (s) from monitor A to monitor B and the median correlation, B at ``factor`` x A's rate
    (a gap in one segment must not move the measurement; the alignment check finds gaps).

    B is brought to A's rate by taking every ``factor``-th sample (the upsampler's phase-0
    samples are its input); both are low-passed to 2 kHz, where the drift control's slow time
    warp (< 1 sample per 0.1 s) cannot blur the correlation; the lag is found in short
    segments spread over the signal (the median is kept), and the two streams' callback
    clocks turn sample indices into times.
    """
    ra, rb = int(rec["a_rate"]), int(rec["b_rate"])
    assert rb == factor * ra
    a = _lowpass(rec["a"][:, 0].astype(np.float64), ra, 2000.0)
    b_full = rec["b"][:, 0].astype(np.float64)
    ta0, pa = _clock_fit(rec["a_stamps"])
    tb0, pb = _clock_fit(rec["b_stamps"])
    on = np.flatnonzero(np.abs(rec["a"][:, 0]) > 0.02)
    first, last = int(on[0]) + int(0.3 * ra), int(on[-1]) - int(0.5 * ra)
    starts = np.linspace(first, max(first, last - int(0.1 * ra)), segments).astype(int)
    bds = [_lowpass(b_full[p::factor], ra, 2000.0) for p in range(factor)]
    delays, corrs = [], []
    for st in starts:
        seg = a[st:st + int(0.1 * ra)]
        best = None
        for phase in range(factor):
            lo = max(0, st - int(0.05 * ra))
            bseg = bds[phase][lo:lo + len(seg) + int(0.3 * ra)]
            L, c = _xcorr_lag(seg, bseg, int(0.25 * ra))
            if best is None or c > best[1]:
                best = (lo + L - st, c, phase)
        lag_a, corr, phase = best
        ib = factor * (st + lag_a) + phase
        delays.append((tb0 + pb * ib) - (ta0 + pa * st))
        corrs.append(corr)
    return float(np.median(delays)), float(np.median(corrs))


BREAK_CORR = 0.95
"""A window of the input whose best match in the DAC's recording correlates no better than
this is a break: a gap or broken audio there (the same bar as :func:`monitor_delay`'s)."""


MERGE_BREAKS_S = 0.1
"""Breaks this close to the one before are one (a gap's window and the one after it that
still holds its edge)."""


def recording_breaks(rec: dict, factor: int = 4, win_s: float = 0.01) -> list[float] | None:
    """Where in the DAC's recording the input's audio is missing: the ``time.monotonic()``
    (on the clock of :mod:`tests.audio.stall_probe` and ``status``'s ``xrun_times``) at which
    the DAC's monitor heard each run of windows of the input (``win_s`` each, over the
    whole signal) whose best match correlates no better than :data:`BREAK_CORR` (runs
    within :data:`MERGE_BREAKS_S` of each other as one).

    Both sides are low-passed to 2 kHz (as in :func:`monitor_delay`). The lag is tracked
    from window to window (searched within 1 ms of the last, since the drift control warps
    time by up to a few thousand ppm while it settles); a window that matches no better
    than the bar is searched within 0.3 s, so that a gap, which delays all that follows,
    is a break where it is and not after it. None for a recording without the monotonic
    stamps."""
    ra, rb = int(rec["a_rate"]), int(rec["b_rate"])
    assert rb == factor * ra
    stamps = np.asarray(rec["b_stamps"])
    if stamps.ndim != 2 or stamps.shape[1] < 4:
        return None
    m0, mp = _clock_fit(stamps, column=3)
    a = _lowpass(rec["a"][:, 0].astype(np.float64), ra, 2000.0)
    b = _lowpass(rec["b"][::factor, 0].astype(np.float64), ra, 2000.0)
    on = np.flatnonzero(np.abs(rec["a"][:, 0]) > 0.02)
    if not len(on):
        return []
    w, near, wide = int(win_s * ra), int(0.001 * ra), int(0.3 * ra)
    first, last = int(on[0]) + int(0.3 * ra), int(on[-1]) - int(0.5 * ra)
    seg = a[first:first + int(0.1 * ra)]
    L, _ = _xcorr_lag(seg, b[: first + len(seg) + 4 * ra], first + 3 * ra)
    lag = L - first  # B index / factor = A index + lag

    def match(st: int, reach: int) -> tuple[float, float] | None:
        lo = max(0, int(round(st + lag)) - reach)
        bseg = b[lo:lo + w + 2 * reach]
        if len(bseg) < w + reach:
            return None
        L, c = _xcorr_lag(a[st:st + w], bseg, len(bseg) - 1)
        return lo + L - st, c

    breaks, in_break = [], False
    for st in range(first, last - w, w):
        found = match(st, near)
        if found is not None and found[1] <= BREAK_CORR:
            found = match(st, wide)
        if found is None:
            break
        if found[1] > BREAK_CORR:
            lag, in_break = found[0], False
        elif not in_break:
            in_break = True
            t = m0 + mp * factor * (st + lag)
            if not breaks or t - breaks[-1] > MERGE_BREAKS_S:
                breaks.append(t)
    return breaks


def catmull_rom(x: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``x`` sampled at fractional positions ``pos`` (cubic Catmull-Rom)."""
    i = np.floor(pos).astype(np.int64)
    f = pos - i
    i = np.clip(i, 1, len(x) - 3)
    xm1, x0, x1, x2 = x[i - 1], x[i], x[i + 1], x[i + 2]
    return x0 + 0.5 * f * (x1 - xm1 + f * (2 * xm1 - 5 * x0 + 4 * x1 - x2 + f * (3 * (x0 - x1) + x2 - xm1)))


def _band_compare(rec: np.ndarray, ref: np.ndarray, rate: int, lo: float = 16000.0, hi: float = 22000.0,
                  win_s: float = 0.1) -> dict:
    """The restored band of an aligned recording against its reference: the difference of
    their energies in ``[lo, hi)`` Hz (dB), and the RMS difference (dB) of their 100 ms
    energy envelopes in that band, over the windows where the reference has energy there."""
    spec_f = np.fft.rfftfreq(len(ref), 1 / rate)
    keep = (spec_f >= lo) & (spec_f < hi)

    def band(x):
        spec = np.fft.rfft(x)
        spec[~keep] = 0
        return np.fft.irfft(spec, len(x))

    a, b = band(rec), band(ref)
    seg = int(win_s * rate)
    n = len(b) // seg
    ea = (a[: n * seg] ** 2).reshape(n, seg).sum(1)
    eb = (b[: n * seg] ** 2).reshape(n, seg).sum(1)
    live = eb > 1e-3 * eb.max() if n and eb.max() > 0 else np.zeros(n, bool)
    env = 10 * np.log10(np.maximum(ea[live], 1e-30) / eb[live]) if live.any() else np.array([np.nan])
    return {"hf_db": float(10 * np.log10(max(ea.sum(), 1e-30) / max(eb.sum(), 1e-30))),
            "hf_envelope_rms_db": float(np.sqrt(np.mean(env**2))), "hf_ref_energy": float(eb.sum())}


def align_to_reference(rec: np.ndarray, ref: np.ndarray, rate: int, win_s: float = 0.02) -> dict:
    """Align a recording of the daemon's output with the file-mode output of the same input.

    The daemon resamples its output by a few hundred ppm (drift control), so the lag drifts:
    it is found once on a low-passed stretch, then tracked in short windows (fractional, by
    correlation, each searched near the last), and the recording is read at the reference's
    positions plus the interpolated lag. Returns the SNR (dB) over everything, the worst
    50 ms stretch's SNR (a click or a gap shows there), the worst correlation of a 20 ms
    window of the aligned recording with the reference (or of one where the track was lost), and
    how often the track was lost and found again further on (``lag_jumps``: a gap at the
    DAC that delayed the rest).
    """
    rec = rec.astype(np.float64)
    ref = ref.astype(np.float64)
    w = int(win_s * rate)
    on = np.flatnonzero(np.abs(ref) > 0.02)
    first = int(on[0]) + int(0.05 * rate)
    seg = _lowpass(ref, rate, 2000.0)[first:first + int(0.1 * rate)]
    L0, _ = _xcorr_lag(seg, _lowpass(rec, rate, 2000.0)[: len(seg) + 4 * rate], 4 * rate)
    lag = L0 - first  # rec index = ref index + lag
    search = 48
    wide = int(0.3 * rate)  # a gap at the DAC delays everything after it by its length
    centers, lags, corrs = [], [], []
    misses, jumps = 0, 0
    for s in range(first, int(on[-1]) - w, w):
        r = ref[s:s + w]
        lo = int(round(s + lag)) - search
        if lo < 0 or lo + w + 2 * search > len(rec):
            break
        L, c = _xcorr_lag(r, rec[lo:lo + w + 2 * search], 2 * search)
        if c < 0.5 and misses >= 2:
            # lost for three windows: search wide for where the stream went (a gap shifts
            # it later; it is counted as a lag jump)
            wlo = max(0, int(round(s + lag)) - wide)
            whi = min(len(rec), int(round(s + lag)) + w + wide)
            L2, c2 = _xcorr_lag(r, rec[wlo:whi], whi - wlo - 1)
            if c2 >= 0.9:
                L, c, lo = L2, c2, wlo
                jumps += 1
        if c < 0.5:  # a gap or garbage here: keep the track, record the failure
            corrs.append(c)
            misses += 1
            continue
        misses = 0
        lag = lo + L - s
        centers.append(s + w / 2)
        lags.append(lag)
        corrs.append(c)
    centers, lags, corrs = map(np.asarray, (centers, lags, corrs))
    # The true lag moves smoothly (the drift control changes its ratio slowly); each window's
    # estimate is noisy. A centred quadratic fit over 9 windows (180 ms) keeps the curve and
    # drops the noise.
    k = 4
    sm = lags.copy()
    for i in range(len(lags)):
        lo, hi = max(0, i - k), min(len(lags), i + k + 1)
        if hi - lo >= 5:
            c = np.polyfit(centers[lo:hi] - centers[i], lags[lo:hi], 2)
            sm[i] = c[-1]
    lags = sm
    pos_ref = np.arange(len(ref), dtype=np.float64)
    good = (pos_ref >= centers[0]) & (pos_ref <= centers[-1])
    lag_at = np.interp(pos_ref[good], centers, lags)
    aligned = catmull_rom(rec, pos_ref[good] + lag_at)
    r = ref[good]
    err = aligned - r
    snr = 10 * np.log10(np.sum(r * r) / max(np.sum(err * err), 1e-30))
    seg = int(0.05 * rate)
    nseg = len(r) // seg
    e2 = (err[: nseg * seg] ** 2).reshape(nseg, seg).sum(1)
    r2 = (r[: nseg * seg] ** 2).reshape(nseg, seg).sum(1)
    live = r2 > 1e-6 * seg
    worst = 10 * np.log10(np.min(r2[live] / np.maximum(e2[live], 1e-30))) if live.any() else float("nan")
    # Each window's correlation on the aligned recording (at the fractional lag: at the
    # nearest whole sample, with the lag drifting through it, a window of high-band content
    # correlates at about 0.9 with no fault); a window where the track was lost (a gap) counts with its correlation there.
    nwin = len(r) // w
    ra, aa = r[: nwin * w].reshape(nwin, w), aligned[: nwin * w].reshape(nwin, w)
    er, ea = (ra * ra).sum(1), (aa * aa).sum(1)
    has = er > 1e-6 * w
    win_corr = (ra * aa).sum(1)[has] / np.maximum(np.sqrt(er[has] * ea[has]), 1e-30)
    lost = corrs[corrs < 0.5]
    min_corr = min(float(win_corr.min()) if win_corr.size else 1.0, float(lost.min()) if lost.size else 1.0)
    hf = _band_compare(aligned, r, rate)
    return {
        **hf,
        "snr_db": float(snr),
        "worst_50ms_snr_db": float(worst),
        "min_window_corr": min_corr,
        "lag_start": float(lags[0]),
        "lag_end": float(lags[-1]),
        "seconds_compared": float(good.sum() / rate),
        "lag_jumps": jumps,
    }


def max_step(x: np.ndarray) -> float:
    """The largest sample-to-sample step of ``x [frames, ch]``."""
    return float(np.abs(np.diff(x, axis=0)).max())
