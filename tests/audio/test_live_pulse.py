"""The daemon against a real sound server (a private PulseAudio with null sinks for the DACs).

The one long run (>= 60 s of signal, the shipped model) carries several checks: zero
xruns, the recording equals the file-mode output after alignment, the measured delay
agrees with ``status``, the 4x rate reaches the DAC unresampled, and ``status``/``bypass``
work from the CLI. The default config's 40 ms target and the low-latency setting's 25 ms
are measured by their own tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from tests.audio.pulse_harness import (
    HERE,
    PYTHON,
    REPO,
    align_to_reference,
    max_step,
    monitor_delay,
    noise_signal,
    recording_breaks,
    sine,
)
from tests.audio.stall_probe import PROBE

pytestmark = pytest.mark.pulse

RATE = 44100
OUT_RATE = 4 * RATE


def record(server, out, seconds: float, a="rtupscale.monitor", b="dac.monitor") -> subprocess.Popen:
    p = subprocess.Popen(
        [PYTHON, str(HERE / "record_monitors.py"), str(out), str(seconds), a, str(RATE), b, str(OUT_RATE)],
        env=server.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = p.stdout.readline()
    assert line.strip() == "READY", p.stderr.read()
    return p


def assert_unresampled(server, stream: dict) -> None:
    """The server carries our stream to the DAC at its own rate. PulseAudio says so in the
    stream's resample method; on PipeWire that is always "PipeWire", and the DAC node's
    running rate (pw-dump) is what tells."""
    if server.name == "pipewire":
        assert server.node_rate("dac") == OUT_RATE
    else:
        assert stream["resample_method"] in ("copy", "n/a", ""), stream["resample_method"]


def target(server, pulseaudio_ms: float, pipewire_ms: float) -> float:
    """A latency target by server: on PipeWire the graph's quanta (the DAC's and the virtual
    sink's, 2.9 ms each at the default request sizes) and pipewire-pulse's queue come on top
    of what PulseAudio costs; the PipeWire figures are those measured (docs/measurements/
    2026-12-05-pipewire.md) with some room."""
    return pipewire_ms if server.name == "pipewire" else pulseaudio_ms


def assert_no_xruns(server, xruns: dict, before: int, causes: dict | None = None, last: str | None = None,
                    times: list | None = None) -> None:
    """No xrun since ``before``. Two kinds of window are expected failures, reported with
    the counts; any other xrun fails:

    - every xrun came right after a stall of the whole machine (``times``: ``status``'s
      ``xrun_times``; see :mod:`tests.audio.stall_probe`): these shared 2-core VMs stop
      all their threads for 5-28 ms, at busy hours several times a minute, or their
      hypervisor takes a share of the CPUs' time in slices too short to see one by one
      (steal);
    - on PipeWire, gaps the DAC played because pipewire-pulse's data thread missed a graph
      cycle (``dac_gaps``, *server late*): a recording of the DAC's monitor shows zero runs
      of one or two quanta as often (docs/measurements/2026-12-05-pipewire.md)."""
    n = xruns["total"] - before
    if not n:
        return
    why = PROBE.explains(times, n)
    if why:
        print(f"the last stall before each xrun time: {PROBE.before_each(times)}")
        pytest.xfail(f"{n} xruns in the window ({xruns}; underflow causes {causes}): {why}; "
                     f"{PROBE.summary(PROBE.test_started)}")
    if server.name == "pipewire" and xruns.get("dac_gaps", 0) + xruns.get("output_underflows", 0) >= n \
            and set(causes or {}) <= {"server_late"}:
        pytest.xfail(f"PipeWire: {n} gaps at the DAC in the window ({xruns}; underflow causes {causes}; last {last}): "
                     "pipewire-pulse's data thread missed the DAC's graph cycles (known on this VM)")
    assert n == 0, (f"{n} xruns in the window ({xruns}; underflow causes {causes}, last: {last}; "
                    f"at {times}; the last stall before each: {PROBE.before_each(times)}; {PROBE.summary(PROBE.test_started)})")


def assert_correlated(server, corr: float, xruns: dict, before: int, causes: dict | None = None,
                      last: str | None = None, times: list | None = None, rec: dict | None = None) -> None:
    """The recording at the DAC matches the input (correlation over 0.95). A gap at the DAC
    shifts the audio behind it by its length, and no single delay fits: a low correlation
    checks the counted xruns first (see :func:`assert_no_xruns`). With none counted (the
    PortAudio backend, through ALSA's pulse plugin, reports no underflow), the breaks are
    located in the recording ``rec`` (:func:`recording_breaks`, on the monotonic clock), and
    the window is the expected failure only if each came right after a stall of the
    machine (:meth:`StallProbe.explains`)."""
    if corr <= 0.95:
        assert_no_xruns(server, xruns, before, causes, last, times)
        breaks = recording_breaks(rec) if rec is not None else None
        if breaks:
            why = PROBE.explains([[t, 1] for t in breaks], len(breaks), what="the DAC's recording breaks")
            if why:
                pytest.xfail(f"correlation {corr:.3f} with no xrun counted: {why}; {PROBE.summary(PROBE.test_started)}")
        assert corr > 0.95, (f"correlation {corr:.3f} with no xrun counted; the recording breaks at "
                             f"{breaks} (monotonic), the last stall before each: "
                             f"{PROBE.before_each([[t, 1] for t in breaks or ()])}; {PROBE.summary(PROBE.test_started)}")


def tolerance_ms(server, measured_ms: float) -> float:
    """How far ``status``'s latency may be from the measured one: 4 ms on PulseAudio, whose
    timing reports are exact; on PipeWire, where the queue is modelled from what the server
    granted (see ``Session._pipewire_latency``), max(5 ms, 20 %)."""
    return max(5.0, 0.2 * measured_ms) if server.name == "pipewire" else 4.0


def finish(p: subprocess.Popen) -> dict:
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return p


def paplay(server, path, sink="rtupscale") -> subprocess.Popen:
    return subprocess.Popen(["paplay", "-d", sink, str(path)], env=server.env)


def cli(server, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-c", "import sys; from rtupscale.cli import main; sys.exit(main(sys.argv[1:]))", *args],
        env=server.env, cwd=str(REPO), capture_output=True, text=True, timeout=60,
    )


def file_mode_output(config_path, wav_in, wav_out) -> np.ndarray:
    from rtupscale.app import load_runner
    from rtupscale.config import load_config
    from rtupscale.fileio import upscale_file

    cfg = load_config(config_path)
    upscale_file(wav_in, wav_out, cfg, runner=load_runner(cfg), bits="float", progress=False)
    y, rate = sf.read(wav_out, dtype="float32")
    assert rate == OUT_RATE
    return y


MARGIN = {"prefill_ms": 12, "playback_buffer_ms": 40}
"""The functional live tests run the shipped model with a larger server-side buffer than the
default config: they check what the daemon does (output equal to file mode, reloads,
recovery) and must not fail on a stall of this shared 2-core machine (and CI's) that the
default's 27 ms queue may not cover: four 10-minute soaks under load counted none, but a
24 ms queue counted 1 (see docs/measurements/2026-12-05-live-daemon.md). The default config itself is measured
by ``test_default_config_latency`` and by the soak benchmark (tests/audio/soak_bench.py)."""


# RECORDER: the recorder's streams joining and leaving the DAC sink perturb it (PulseAudio
# re-plans the null sink's latency and rewinds): our stream has run dry right then, in runs
# that were clean over the whole signal. So xruns are counted from 2 s after the recorder
# joined to the end of the signal, read before the recorder leaves.


def recorded(path) -> dict:
    data = dict(np.load(path))
    lost = (int(data["a_overflows"]), int(data["b_overflows"]))
    assert lost == (0, 0), f"the test's recorder lost input (overflows {lost}): the recording proves nothing"
    return data


def test_sixty_seconds_equal_file_mode_no_xruns_latency_as_reported(sound_server, make_config, daemon_factory, tmp_path):
    config = make_config(latency=MARGIN)
    d = daemon_factory(config)
    assert d.status()["model"] is not None  # the shipped model, not the plain upsampler
    seconds = 62.0
    sig = noise_signal(seconds, RATE, seed=3)
    wav = tmp_path / "in.wav"
    sf.write(wav, sig, RATE, subtype="FLOAT")
    time.sleep(2.5)  # trap 1: let the sinks settle
    rec = record(sound_server, tmp_path / "rec.npz", seconds + 6)
    time.sleep(2.0)  # the recorder's streams joined the DAC sink: count xruns from here on
    before = d.status()["xruns"]["total"]
    player = paplay(sound_server, wav)
    # during the run: the server really carries 176400 Hz to the DAC sink, unresampled
    time.sleep(3)
    ours = [r for r in sound_server.sink_inputs() if str(r["properties"].get("application.process.id")) == str(d.proc.pid)]
    assert len(ours) == 1, sound_server.sink_inputs()
    assert ours[0]["sample_specification"] == "float32le 2ch 176400Hz"
    assert_unresampled(sound_server, ours[0])
    player.wait(seconds + 20)
    st = d.status()  # xruns over the signal, read before the recorder leaves the DAC sink (see RECORDER)
    finish(rec)
    data = recorded(tmp_path / "rec.npz")

    # zero xruns over the whole signal (checked below on PipeWire, after what does not
    # depend on it)
    assert st["state"] == "running"
    if sound_server.name != "pipewire":
        assert_no_xruns(sound_server, st["xruns"], before, st.get("output_underflow_causes"), times=st.get("xrun_times"))
    assert st["playback"]["dac_rate"] == OUT_RATE and st["playback"]["resampled"] is False, st["playback"]

    # measured delay, monitor to monitor, against status (the monitor of the DAC sink hears the
    # audio the sink's own latency before the DAC: status reports that part separately)
    delay, corr = monitor_delay(data)
    lat = st["latency_ms"]
    print("rings", st["rings"])
    reported = lat["total_ms"] - lat["sink_ms"]
    print(f"measured delay {1e3 * delay:.2f} ms (corr {corr:.4f}); status {lat}")
    assert_correlated(sound_server, corr, st["xruns"], before, st.get("output_underflow_causes"), times=st.get("xrun_times"),
                      rec=data)
    assert abs(1e3 * delay - reported) <= tolerance_ms(sound_server, 1e3 * delay), (1e3 * delay, lat)

    # status and bypass from the CLI
    out = cli(sound_server, "status", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert "state: running" in out.stdout and "176400 Hz reaches the DAC" in out.stdout, out.stdout
    js = json.loads(cli(sound_server, "status", "--json", "--config", str(config)).stdout)
    for key in ("state", "capture", "playback", "model", "block_size", "latency_ms", "rings", "processing_ms", "xruns", "xrun_times", "engine", "uptime_s"):
        assert key in js, key
    assert js["processing_ms"]["p99_ms"] > 0 and js["processing_ms"]["max_ms"] >= js["processing_ms"]["p99_ms"]
    pm = js["processing_ms"]
    assert 0 < pm["cpu_median_ms"] <= pm["cpu_p99_ms"], pm  # the worker's own CPU time per block
    # the heap was frozen before the worker started, so a full collection walks only what
    # was made since (gcpause): far fewer objects than the frozen tens of thousands
    assert js["gc"]["frozen_objects"] > 10000, js["gc"]
    assert "garbage collections:" in out.stdout and "of it the worker's CPU" in out.stdout, out.stdout
    w = js["worker_late_wakes"]
    assert w["over_ms"] == 2.0 and w["max_ms"] >= 0 and isinstance(w["count"], int), w
    assert "worker woken late" in out.stdout, out.stdout
    on = cli(sound_server, "bypass", "on", "--config", str(config))
    assert on.returncode == 0 and d.status()["bypass"] is True, on.stderr
    assert cli(sound_server, "bypass", "off", "--config", str(config)).returncode == 0
    assert d.status()["bypass"] is False
    sock = d.socket
    assert oct(sock.stat().st_mode & 0o777) == "0o600"

    # SIGTERM: fade out, exit 0, virtual sink removed, socket gone
    assert d.stop() == 0
    assert "rtupscale" not in [s["name"] for s in sound_server.sinks()]
    assert not sock.exists()

    assert_no_xruns(sound_server, st["xruns"], before, st.get("output_underflow_causes"), times=st.get("xrun_times"))
    # the recording equals the file-mode output of the same input (computed after the
    # daemon stopped: the analysis is heavy)
    ref = file_mode_output(config, wav, tmp_path / "ref.wav")
    b = data["b"]
    res = [align_to_reference(b[:, ch], ref[:, ch], OUT_RATE) for ch in range(2)]
    print("alignment", res)
    for r in res:
        assert r["seconds_compared"] >= 55.0, r
        gap = r["lag_jumps"] > 0 or r["min_window_corr"] < 0.9 or r["worst_50ms_snr_db"] < 20.0
        if gap and sound_server.name == "pipewire":
            # A gap at the DAC, which the daemon may count only after ``st`` was read or not at
            # all (its PipeWire gap check finds most, not all: docs/measurements/2026-12-05-
            # pipewire.md); issue #17 stays open on it. What the gap did not touch still matches.
            assert r["snr_db"] >= 20.0, r
            pytest.xfail(f"PipeWire: the recording has a gap at the DAC ({r}; xruns {st['xruns']})")
        assert r["lag_jumps"] == 0, r  # the stream never lost its place
        assert r["min_window_corr"] >= 0.9, r  # a gap or a click falls below 0.5
        assert r["snr_db"] >= 35.0, r
        assert r["worst_50ms_snr_db"] >= 20.0, r  # no click, gap or burst anywhere
        # The restored band (16-22 kHz) at the DAC is the file mode's: its energy and its
        # 100 ms envelope, not only the whole signal, which the band below dominates.
        assert r["hf_ref_energy"] > 0, r
        assert abs(r["hf_db"]) <= 0.5, r
        assert r["hf_envelope_rms_db"] <= 1.5, r


def test_default_config_latency(sound_server, make_config, daemon_factory, tmp_path):
    """The shipped config.yaml as it is: at most 40 ms end to end, with no xrun in the 20 s
    window. How clean it stays over minutes under load is the soak benchmark's job
    (``tests/audio/soak_bench.py``)."""
    _latency_setting(
        sound_server, daemon_factory(make_config()), tmp_path, "default config", target(sound_server, 40.0, 52.0), seed=4,
    )


def test_portaudio_backend_still_carries_the_stream(sound_server, make_config, daemon_factory, tmp_path):
    """``audio.backend: portaudio`` (the path for raw ALSA devices, here through ALSA's pulse
    plugin): the same checks as above, with the buffering that path needs. The plugin's stream
    can underrun as the recorder's streams join the DAC sink, and the sink then runs far ahead
    until the daemon reopens the path (seen in CI: three reopens in 3 s, one of them inside
    the measured window, correlation 0.18): the window is measured after the path settled,
    and once more if the daemon reopened it inside the window."""
    config = make_config(audio={"backend": "portaudio"}, latency={"prefill_ms": 30, "playback_buffer_ms": 20})
    d = daemon_factory(config)
    assert d.status()["backend"] == "portaudio"
    _latency_setting(sound_server, d, tmp_path, "portaudio backend", 120.0, seed=6, seconds=10.0, retry_after_recovery=True)


WINDOWS = 3
"""How many 20 s windows a latency test measures to find a clean one. One window with an xrun
proves little on these shared 2-core VMs: a stall of the server's thread alone can outlast a
16 ms queue and not show on the stall probe, whose 5 ms sleeps see a stall only from the
wake it delays (CI: one xrun, a request 8 ms late, the nearest probe stall 2.5 s before).
A setting that misses its queue keeps missing it, in every window; a rare stall does not
come back in three in a row. The soak benchmark (tests/audio/soak_bench.py) is what
measures how clean a setting stays over minutes."""


def _latency_setting(
    sound_server, d, tmp_path, label: str, target_ms: float, seed: int, seconds: float = 20.0,
    retry_after_recovery: bool = False,
) -> None:
    """``seconds`` of noise through the running daemon ``d``: no xruns (checked first, with
    their causes: after an underflow the refilled rings' time-averaged levels stand above the
    delay for seconds), the delay agrees with ``status``, and the measured delay is within
    ``target_ms``.

    A window with an xrun or a low correlation at the DAC is measured again, up to
    :data:`WINDOWS` windows in all; the last one is judged (an expected failure only if each of
    its xruns followed a stall of the machine, see :func:`assert_no_xruns`). With
    ``retry_after_recovery``, a window in which the daemon reopened its audio path is measured
    once more, after the path has run 2 s without a reopen (the daemon's own recovery is what
    is tested then: ``recoveries`` counted it; a second reopen fails the test)."""
    reopens_allowed = 1 if retry_after_recovery else 0
    for window in range(1, WINDOWS + 1):
        rec_before = d.status()["recoveries"]
        sig = noise_signal(seconds, RATE, seed=seed + 100 * (window - 1))
        wav = tmp_path / "in.wav"
        sf.write(wav, sig, RATE, subtype="FLOAT")
        time.sleep(2.5)
        st0 = d.status()
        before_recorder, causes_recorder = st0["xruns"]["total"], dict(st0.get("output_underflow_causes") or {})
        rec = record(sound_server, tmp_path / "rec.npz", seconds + 5.0)
        time.sleep(2.0)  # the recorder's streams joined the DAC sink: count xruns from here on
        if retry_after_recovery:
            _settled(d)
        recoveries = d.status()["recoveries"]
        st0 = d.status()
        before, causes_before = st0["xruns"]["total"], dict(st0.get("output_underflow_causes") or {})
        paplay(sound_server, wav).wait(40)
        st = d.status()  # before the recorder leaves (see RECORDER)
        finish(rec)
        reopened = st["recoveries"] - recoveries
        data = recorded(tmp_path / "rec.npz")
        delay, corr = monitor_delay(data)
        n = st["xruns"]["total"] - before
        print(
            f"{label}, window {window}: measured {1e3 * delay:.2f} ms (corr {corr:.4f}); status {st['latency_ms']}; "
            f"xruns {st['xruns']} ({n} in the window, at {st.get('xrun_times')}; the last stall before each: "
            f"{PROBE.before_each(st.get('xrun_times'))}); audio path reopened {st['recoveries'] - rec_before} times "
            f"({reopened} in the window); underflow causes {st.get('output_underflow_causes')}, "
            f"last: {st.get('last_output_underflow')}; worker time per block {st.get('processing_ms')}; "
            f"worker woken late {st.get('worker_late_wakes')}; {PROBE.summary(PROBE.test_started)}"
        )
        if reopened and reopens_allowed:
            reopens_allowed -= 1
            print(f"{label}: the daemon reopened its audio path in the window: measuring again")
            continue
        assert reopened == 0, f"the audio path was reopened {reopened} times in the measured window"
        if (n or corr <= 0.95) and window < WINDOWS:
            print(f"{label}: window {window} was not clean: measuring another")
            continue
        break
    causes = _causes_since(st, causes_before)  # the window's own, not the daemon's since it started
    assert_correlated(sound_server, corr, st["xruns"], before, causes,
                      st.get("last_output_underflow"), st.get("xrun_times"), rec=data)
    no_xruns = lambda: assert_no_xruns(sound_server, st["xruns"], before, causes,  # noqa: E731
                                       st.get("last_output_underflow"), st.get("xrun_times"))
    if sound_server.name != "pipewire":
        no_xruns()
    # On PipeWire the delay is checked against status first, the gaps after: a gap of the
    # DAC's graph delays everything behind it by its length (seen: 2.9 ms, 33.25 ms measured
    # against a 33 ms target), so a window over the target with such a gap is the known
    # gap, not a latency setting that misses its target. That includes a gap between the
    # recorder joining the DAC's graph and the window (seen: 33.82 ms, one DAC gap counted
    # before the window; likely the recorder's arrival changing the graph's quantum).
    assert abs(1e3 * delay - (st["latency_ms"]["total_ms"] - st["latency_ms"]["sink_ms"])) <= tolerance_ms(sound_server, 1e3 * delay)
    if 1e3 * delay > target_ms:
        assert_no_xruns(sound_server, st["xruns"], before_recorder, _causes_since(st, causes_recorder),
                        st.get("last_output_underflow"), st.get("xrun_times"))
    assert 1e3 * delay <= target_ms
    no_xruns()


def _causes_since(st: dict, earlier: dict) -> dict:
    """The output underflows by cause counted since ``earlier`` (``status``'s counts then)."""
    now = st.get("output_underflow_causes") or {}
    return {k: v - earlier.get(k, 0) for k, v in now.items() if v > earlier.get(k, 0)}


def _settled(d, quiet_s: float = 2.0, limit_s: float = 20.0) -> None:
    """Wait until the daemon runs and has not reopened its audio path for ``quiet_s``."""
    t_end = time.monotonic() + limit_s
    last, since = d.status()["recoveries"], time.monotonic()
    while time.monotonic() < t_end:
        st = d.status()
        if st["recoveries"] != last or st["state"] != "running":
            last, since = st["recoveries"], time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.2)
    raise AssertionError(f"the daemon kept reopening its audio path for {limit_s:g} s (recoveries {last})")


def test_an_output_underflow_is_explained_in_status_and_log(pulse_server, make_config, daemon_factory):
    """A stall of the sound server (SIGSTOP for 80 ms, longer than the default 27 ms server
    buffer) makes it run out of our queue: the daemon counts the underflow, says in its log
    and in ``status`` what led to it and which setting to raise, and plays on. (PulseAudio:
    pipewire-pulse sends no underflow notice for a stall; its counterpart is
    test_live_pipewire's gap check.)"""
    sound_server = pulse_server
    config = make_config()
    d = daemon_factory(config)
    time.sleep(3.0)  # past the start, where the server asks at its steady pace
    before = d.status()["xruns"]["output_underflows"]
    for _ in range(3):  # a stall that meets the server just after it rendered ahead can be covered
        os.kill(sound_server.proc.pid, signal.SIGSTOP)
        time.sleep(0.080)
        os.kill(sound_server.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 2
        while (st := d.status())["xruns"]["output_underflows"] == before and time.monotonic() < deadline:
            time.sleep(0.2)
        if st["xruns"]["output_underflows"] > before:
            break
    assert st["xruns"]["output_underflows"] > before, "three 80 ms server stalls did not show as an output underflow"
    assert st["backend"] == "pulse"
    assert st["output_underflow_causes"].get("server_late", 0) >= 1, st["output_underflow_causes"]
    assert st["last_output_underflow"].startswith("no request from the sound server reached us for ")
    assert "latency.playback_buffer_ms" in st["last_output_underflow"]
    deadline = time.monotonic() + 3  # the main loop logs the worker's events a moment later
    while "last underflow: no request from the sound server" not in d.log_text():
        assert time.monotonic() < deadline, "the log does not say what led to the underflow"
        time.sleep(0.1)
    out = cli(sound_server, "status", "--config", str(config)).stdout
    assert "output underflows by cause: server late " in out and "last output underflow: no request" in out
    assert "; the level is the ring less what the server is owed (" in out  # the native streams' debt
    time.sleep(1.0)
    assert d.status()["state"] == "running"


def _example(name: str) -> tuple[dict, Path]:
    path = REPO / "docs" / "examples" / name
    example = yaml.safe_load(path.read_text())
    model = (path.parent / example["model"]["path"]).resolve()
    assert model.exists(), model
    return example, model


def test_low_latency_example(sound_server, make_config, daemon_factory, tmp_path):
    """docs/examples/low-latency.yaml as shipped (block 128, the 64-frame-hop model, a 16 ms
    server queue, the CPUs kept awake): the issue's 25 ms target (a 10-minute soak under load
    measured 23.3 ms with no xrun, its start included). A window with an xrun is measured
    again, as for the default config (a stall of this shared machine longer than the queue
    covers is possible in any window: :data:`WINDOWS`); the latency must hold.

    On the way, ``keep_cpus_awake`` is switched off and on again by SIGHUP: the spinners
    stop and start without a reopen of the audio path."""
    example, model = _example("low-latency.yaml")
    assert example["latency"]["block_size"] == 128 and example["latency"]["keep_cpus_awake"] is True
    config = make_config(latency=example["latency"], model={"path": str(model)})
    d = daemon_factory(config)
    cpus = len(os.sched_getaffinity(0))
    assert d.status()["cpus_kept_awake"] == cpus
    assert f"keep_cpus_awake: {cpus} CPUs kept out of their idle halt" in d.log_text()
    cfg = yaml.safe_load(config.read_text())
    for on in (False, True):
        cfg["latency"]["keep_cpus_awake"] = on
        config.write_text(yaml.safe_dump(cfg))
        d.signal(signal.SIGHUP)
        t_end = time.monotonic() + 10.0
        while d.status()["cpus_kept_awake"] != (cpus if on else 0) and time.monotonic() < t_end:
            time.sleep(0.1)
        st = d.status()
        assert st["cpus_kept_awake"] == (cpus if on else 0) and st["recoveries"] == 0, st
    assert "keep_cpus_awake off: the CPUs may idle again" in d.log_text()
    _latency_setting(
        sound_server, d, tmp_path, "low-latency example", target(sound_server, 25.0, 33.0), seed=5,
    )


def test_the_25_ms_target_at_block_64(sound_server, make_config, daemon_factory, tmp_path):
    """The low-latency target at block 64 (the hop-64 model's block multiple, 16 ms server
    queue, the CPUs kept awake): at most 25 ms end to end, with no xrun in the window."""
    _, model = _example("low-latency.yaml")
    latency = {"block_size": 64, "prefill_ms": 2, "crossfade_ms": 10, "capture_buffer_ms": 1.5, "playback_buffer_ms": 16,
               "keep_cpus_awake": True}
    config = make_config(latency=latency, model={"path": str(model)})
    _latency_setting(
        sound_server, daemon_factory(config), tmp_path, "block 64", target(sound_server, 25.0, 33.0), seed=8,
    )


def test_sighup_block_size_model_and_broken_config(sound_server, make_config, daemon_factory, tmp_path, fir_model):
    # The shipped model, then a new block size (a new engine: the old one fades its model
    # out, the new one fades its own in), then a new model (swapped under the crossfade).
    config = make_config(latency=MARGIN)
    d = daemon_factory(config)
    assert d.status()["model"] is not None
    wav = tmp_path / "sine.wav"
    sf.write(wav, sine(16.0, RATE), RATE, subtype="FLOAT")
    time.sleep(2.5)
    rec = record(sound_server, tmp_path / "rec.npz", 19.0)
    time.sleep(2.0)  # see RECORDER
    before = d.status()["xruns"]["total"]
    t0 = time.monotonic()
    player = paplay(sound_server, wav)
    cfg = yaml.safe_load(config.read_text())

    def rewrite_and_hup(at: float, **changes):
        while time.monotonic() - t0 < at:
            time.sleep(0.02)
        for section, values in changes.items():
            cfg.setdefault(section, {}).update(values)
        config.write_text(yaml.safe_dump(cfg))
        d.signal(signal.SIGHUP)

    rewrite_and_hup(4.0, latency={"block_size": 128})
    rewrite_and_hup(7.0, model={"path": str(fir_model)})
    time.sleep(1.0)
    # a broken config: logged, the daemon keeps running on the one it has
    config.write_text(config.read_text() + "\nlatency:\n  blok_size: 3\n")
    d.signal(signal.SIGHUP)
    player.wait(40)
    st = d.status()  # before the recorder leaves (see RECORDER)
    finish(rec)
    log = d.log_text()
    assert "reload: changed latency.block_size" in log, log
    assert "switched to block 128" in log, log
    assert "reload: changed model.path" in log, log
    assert "keeping the running config" in log, log
    assert st["state"] == "running" and st["block_size"] == 128, st
    assert st["model"] is not None and st["reload_errors"] >= 1, st
    assert_no_xruns(sound_server, st["xruns"], before, st.get("output_underflow_causes"), times=st.get("xrun_times"))

    b = recorded(tmp_path / "rec.npz")["b"]
    on = np.flatnonzero(np.abs(b[:, 0]) > 0.05)
    start, end = on[0] + OUT_RATE, on[-1] - OUT_RATE
    # the signal's own largest step, from a stretch before any reload
    own = max_step(b[start:start + OUT_RATE])
    whole = max_step(b[start:end])
    print(f"sine: own step {own:.5f}, largest step over the reloads {whole:.5f}")
    assert whole <= 1.05 * own, (whole, own)
    assert np.abs(b[start:end]).min(axis=0).max() >= 0 and np.sqrt(np.mean(b[start:end] ** 2)) > 0.2  # no dropout


def test_reopen_keeps_the_apps_on_the_virtual_sink(sound_server, make_config, daemon_factory):
    """A reopen of the audio path (here: SIGHUP with a new playback buffer; a recovery takes
    the same path) keeps the virtual sink: an app playing to it stays on it. A sink re-made
    under the same name would not get it back: the server moves it to its fallback sink,
    where it plays on, not upscaled."""
    config = make_config()
    d = daemon_factory(config)  # with the fixture's app (pacat) playing to the virtual sink

    def app_sinks() -> list[str]:
        names = {s["index"]: s["name"] for s in sound_server.sinks()}
        return [names.get(i["sink"]) for i in sound_server.sink_inputs()
                if i["properties"].get("application.process.binary") == "pacat"]

    time.sleep(1.0)
    assert app_sinks() == ["rtupscale"]
    cfg = yaml.safe_load(config.read_text())
    cfg["latency"]["playback_buffer_ms"] = 15
    config.write_text(yaml.safe_dump(cfg))
    d.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "virtual sink 'rtupscale' kept" not in d.log_text():
        time.sleep(0.1)
    time.sleep(1.0)
    log = d.log_text()
    assert "reopening the audio path" in log and "virtual sink 'rtupscale' kept" in log, log[-2000:]
    assert app_sinks() == ["rtupscale"]
    # and it processes again (blocks are counted per opening of the audio path, and the server
    # may make the daemon reopen once more right after: see the recovery log lines)
    deadline = time.monotonic() + 10
    last = d.status()["blocks"]
    while time.monotonic() < deadline:
        time.sleep(0.3)
        st = d.status()
        if st["state"] == "running" and st["blocks"] > last:
            break
        last = st["blocks"]
    assert st["state"] == "running" and st["blocks"] > last, st
    assert app_sinks() == ["rtupscale"]
    assert d.stop() == 0
    assert "rtupscale" not in [s["name"] for s in sound_server.sinks()]  # removed at the stop


def test_bad_device_is_a_one_line_error_listing_devices(sound_server, make_config):
    config = make_config(audio={"playback": "no-such-dac"})
    out = cli(sound_server, "run", "--config", str(config))
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = [l for l in out.stderr.splitlines() if l.strip() and not l.startswith("ALSA lib")]
    err = [l for l in lines if "no-such-dac" in l]
    assert len(err) == 1, out.stderr
    assert "dac" in err[0] and "dac192" in err[0] and "audio.playback" in err[0], err[0]
    assert "rtupscale" not in [s["name"] for s in sound_server.sinks()]  # nothing left behind


def test_devices_lists_rates_and_the_4x_verdict(sound_server, make_config):
    config = make_config()
    out = cli(sound_server, "devices", "--config", str(config))
    assert out.returncode == 0, out.stderr
    if sound_server.name == "pipewire":
        # the graph rate decides, not the sinks' formats (which follow whatever ran last)
        assert "PipeWire graph clock: clock.rate 48000, allowed-rates 44100 48000 88200 96000 176400 192000" in out.stdout, out.stdout
        for sink in ("dac", "dac192"):
            assert any(line.split()[1:2] == [sink] and "takes 176400 Hz unresampled (the graph can run at it)" in line
                       for line in out.stdout.splitlines()), out.stdout
        return
    assert "dac  [float32le 2ch 176400Hz]  takes 176400 Hz unresampled" in out.stdout, out.stdout
    assert "dac192  [float32le 2ch 192000Hz]  runs at 192000 Hz: PulseAudio would resample 176400 -> 192000" in out.stdout


def test_server_killed_and_restarted_mid_stream(sound_server, make_config, daemon_factory, tmp_path):
    """Runs last in this module: it kills the session's server (and brings it back)."""
    config = make_config()
    d = daemon_factory(config, keep_alive=False)
    time.sleep(1.0)
    sound_server.kill()
    time.sleep(1.5)
    sound_server.start()
    t_back = time.monotonic()
    deadline = t_back + 15
    recovered = None
    while time.monotonic() < deadline:
        try:
            st = d.status()
            if st["state"] == "running" and st["recoveries"] >= 1:
                b0 = st["blocks"]
                time.sleep(0.3)
                if d.status()["blocks"] > b0:
                    recovered = time.monotonic() - t_back
                    break
        except Exception:
            pass
        time.sleep(0.1)
    assert recovered is not None, d.log_text()[-3000:]
    print(f"playing again {recovered:.2f} s after the server came back")
    assert recovered <= 5.0
    assert "rtupscale" in [s["name"] for s in sound_server.sinks()]  # virtual sink re-created
    # and audio flows again through it
    wav = tmp_path / "sine.wav"
    sf.write(wav, sine(3.0, RATE), RATE, subtype="FLOAT")
    rec = record(sound_server, tmp_path / "rec.npz", 4.5)
    paplay(sound_server, wav).wait(20)
    finish(rec)
    b = recorded(tmp_path / "rec.npz")["b"]
    assert np.abs(b).max() > 0.3
    assert "recovered after" in d.log_text()
