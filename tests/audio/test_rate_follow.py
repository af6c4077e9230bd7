"""``audio.rate: auto`` on each real server: a 48 kHz app on the virtual sink brings the sink
to 48000 and the playback to 192000; a 44.1 kHz app after it brings them back; the app stays
on ``rtupscale`` through the switch and its sound reaches the DAC."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest

from tests.audio.pulse_harness import noise_signal, wait_until

pytestmark = pytest.mark.pulse


def _play(server, path, rate: int, media: str, log=subprocess.DEVNULL) -> subprocess.Popen:
    """A PulseAudio-protocol app playing ``path`` (float32 stereo) to ``rtupscale`` at ``rate``;
    with ``log`` (a file), pacat reports its stream's events there, underruns among them."""
    return subprocess.Popen(
        ["pacat", "--playback", "--raw", "--format=float32le", f"--rate={rate}", "--channels=2",
         "--latency-msec=20", f"--property=media.name={media}", "-d", "rtupscale", str(path)]
        + (["-v"] if log is not subprocess.DEVNULL else []),
        env=server.env, stdout=subprocess.DEVNULL, stderr=log,
    )


def _app_sink(server, media: str) -> str | None:
    try:
        names = {s["index"]: s["name"] for s in server.sinks()}
        inputs = server.sink_inputs()
    except Exception:
        return None
    sink = next((names.get(i["sink"]) for i in inputs if i["properties"].get("media.name") == media), None)
    if sink != "rtupscale":  # what plays where, for the failure message
        print([(i["index"], i["properties"].get("media.name"), names.get(i["sink"]), i["sample_specification"])
               for i in inputs])
    return sink


def _sink_rate(server, name: str) -> int | None:
    for s in server.sinks():
        if s["name"] == name:
            return int(s["sample_specification"].split()[-1].removesuffix("Hz"))
    return None


def _at(d, rate: int):
    """The daemon's status once it runs at ``rate`` in and 4x out (a status taken while the
    path is being remade has no capture yet)."""
    st = d.status()
    ok = st.get("capture", {}).get("rate") == rate and st.get("playback", {}).get("rate") == 4 * rate
    return st if ok else None


def _monitor_rms(server, monitor: str = "dac.monitor", seconds: float = 1.0) -> float:
    """RMS of what a sink's monitor plays over ``seconds`` (after the recorder's first 0.2 s)."""
    rec = subprocess.Popen(
        ["parec", "--raw", "--format=float32le", "--rate=48000", "--channels=2", "--latency-msec=20", "-d", monitor],
        env=server.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    want = int(48000 * (seconds + 0.2)) * 8
    data = b""
    deadline = time.monotonic() + seconds + 3.0
    try:
        os.set_blocking(rec.stdout.fileno(), False)
        while len(data) < want and time.monotonic() < deadline:
            chunk = rec.stdout.read(65536)
            if chunk:
                data += chunk
            else:
                time.sleep(0.02)
    finally:
        rec.kill()
        rec.wait()
    x = np.frombuffer(data[int(48000 * 0.2) * 8: len(data) // 8 * 8], np.float32)
    return float(np.sqrt(np.mean(x ** 2))) if x.size > 1000 else 0.0


def test_rate_auto_follows_a_48k_app_to_192k_and_back(sound_server, make_config, daemon_factory, tmp_path):
    server = sound_server
    d = daemon_factory(make_config(audio={"rate": "auto"}, model={"path": "none"}), keep_alive=False)
    st = d.status()
    assert st["capture"]["rate"] == 44100 and st["capture"]["follows_apps"], st["capture"]
    paths = {}
    for rate in (48000, 44100):
        paths[rate] = tmp_path / f"noise{rate}.raw"
        noise_signal(30.0, rate, seed=rate).astype(np.float32).tofile(paths[rate])
    app48 = _play(server, paths[48000], 48000, "music48")
    try:
        st = wait_until(lambda: _at(d, 48000), 10.0, "the daemon at 48000 in, 192000 out")
        assert st["capture"]["rate_switches"] == 1 and st["state"] == "running", st
        assert _sink_rate(server, "rtupscale") == 48000
        wait_until(lambda: _app_sink(server, "music48") == "rtupscale", 5.0, "the 48 kHz app back on rtupscale")
        wait_until(lambda: _sink_rate(server, "rtupscale-switching") is None, 5.0, "the silent parking sink removed")
        ours = [i for i in server.sink_inputs() if i["properties"].get("media.name") == "rtupscale playback"]
        assert ours and ours[0]["sample_specification"].endswith(" 192000Hz"), ours
        if server.name == "pipewire":
            wait_until(lambda: server.node_rate("dac") == 192000, 5.0, "the DAC node at 192000")
        rms = wait_until(lambda: _monitor_rms(server), 8.0, "the app's sound at the DAC after the switch")
        assert rms > 0.01, rms
    finally:
        app48.kill()
        app48.wait()
    app44 = _play(server, paths[44100], 44100, "music44")
    try:
        st = wait_until(lambda: _at(d, 44100), 10.0, "the daemon back at 44100 in, 176400 out")
        assert st["capture"]["rate_switches"] == 2, st
        wait_until(lambda: _app_sink(server, "music44") == "rtupscale", 5.0, "the 44.1 kHz app on rtupscale")
        assert _sink_rate(server, "rtupscale") == 44100
    finally:
        app44.kill()
        app44.wait()
    log = d.log_text()
    assert "play at 48000 Hz: remaking it at 48000 Hz (playback at 192000 Hz)" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]


def test_a_rate_switch_fades_out_and_in_without_a_click(sound_server, make_config, daemon_factory, tmp_path):
    """A tone through a switch to 48 kHz, recorded at the DAC: the output fades out, pauses
    and fades back in; no sample-to-sample step exceeds the tone's own (a cut or an onset
    of a 0.5 tone is a step many times larger). On PipeWire the recording of the DAC's
    monitor at 176.4 kHz holds the DAC's graph there, so our 192 kHz stream is resampled
    after the switch (and the daemon does not reopen to change that: see
    test_live_pipewire's recording test).

    A short gap away from the switch is the app's own when pacat reported as many underruns
    of its stream: its 20 ms buffer ran dry on the way to our virtual sink, before the daemon
    (a plain pacat to a null sink at 48 kHz, no daemon, did it too: 3 mid-stream underruns in
    8 runs of 6 s, docs/measurements/2026-12-07-steal.md)."""
    server = sound_server
    d = daemon_factory(make_config(audio={"rate": "auto"}, model={"path": "none"}), keep_alive=False)
    tone = tmp_path / "tone48.raw"
    t = np.arange(int(12.0 * 48000)) / 48000
    np.repeat(0.5 * np.sin(2 * np.pi * 997.0 * t)[:, None], 2, axis=1).astype(np.float32).tofile(tone)
    rec_path = tmp_path / "dac.raw"
    with open(rec_path, "wb") as out:
        rec = subprocess.Popen(["parec", "--raw", "--format=float32le", "--rate=176400", "--channels=2",
                                "--latency-msec=20", "-d", "dac.monitor"], env=server.env, stdout=out,
                               stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        xruns_before = d.status()["xruns"]["total"]  # a start into a sink that ran ahead drops silence
        app_log = open(tmp_path / "pacat.log", "w")
        app = _play(server, tone, 48000, "tone48", log=app_log)
        try:
            wait_until(lambda: _at(d, 48000), 10.0, "the daemon at 48000 in, 192000 out")
            time.sleep(4.0)
        finally:
            app.kill()
            app.wait()
            app_log.close()
            time.sleep(0.3)
            rec.kill()
            rec.wait()
    y = np.fromfile(rec_path, np.float32).reshape(-1, 2)[:, 0].astype(np.float64)
    loud = np.flatnonzero(np.abs(y) > 0.05)
    assert loud.size > 2 * 176400, "the tone did not reach the DAC for two seconds"
    y = y[loud[0]:loud[-1] - int(0.05 * 176400)]  # the end is the app's own: killed mid-tone
    # the pause of the switch: the longest stretch without the tone
    quiet = np.abs(y) < 0.01
    edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(np.int8), [0]])))
    runs = sorted(zip(edges[::2], edges[1::2]), key=lambda r: r[1] - r[0])
    pause_at = runs[-1] if runs else (0, 0)
    pause = (pause_at[1] - pause_at[0]) / 176400
    print(f"{server.name}: the switch paused the tone at the DAC for {pause:.3f} s, from {pause_at[0] / 176400:.3f} s; "
          f"quiet runs over 1 ms: {[(round(a / 176400, 4), round((b - a) / 176400, 4)) for a, b in runs if b - a > 176]}")
    # PulseAudio: a stream moved to a new null sink would wait up to about 2 s for the sink's
    # first render (../shared/audio, trap 1) if the daemon did not restart the sink's clock
    assert pause <= 1.0, pause
    own = 0.5 * 2 * np.sin(np.pi * 997.0 / 176400)
    steps = np.abs(np.diff(y))
    worst = int(np.argmax(steps))
    print(f"largest step {steps[worst]:.4f} at {worst / 176400:.3f} s (the tone's own: {own:.4f})")
    xruns = d.status()["xruns"]
    if steps[worst] > 2.5 * own and xruns["total"] > xruns_before:
        # an underflow or a gap at the DAC (this shared machine under load) is a step of its
        # own, counted as such; the switch itself is what this test is about
        pytest.xfail(f"a counted glitch ({xruns}, {xruns['total'] - xruns_before} since the app started) during the recording")
    cuts = np.flatnonzero(steps > 2.5 * own)
    margin = int(0.05 * 176400)
    gaps = [(a, b) for a, b in runs if b - a > 176 and (a, b) != tuple(pause_at)]
    app_underruns = (tmp_path / "pacat.log").read_text(errors="replace").count("Stream underrun")
    if cuts.size and gaps and len(gaps) <= app_underruns \
            and not np.any((cuts >= pause_at[0] - margin) & (cuts <= pause_at[1] + margin)):
        pytest.xfail(f"the app's own underruns: {len(gaps)} gaps at the DAC away from the switch (at "
                     f"{[round(float(a) / 176400, 3) for a, _ in gaps]} s), pacat reported {app_underruns} underruns of its stream")
    if cuts.size and server.name == "pipewire" and not np.any((cuts >= pause_at[0] - margin) & (cuts <= pause_at[1] + margin)):
        # PipeWire: the DAC's graph went on without our stream for a quantum, away from the
        # switch, and the daemon's gap check did not find it (it finds most, not all:
        # docs/measurements/2026-12-05-pipewire.md; issue #17)
        pytest.xfail(f"PipeWire: {cuts.size} cuts at the DAC away from the switch (at {np.round(cuts[:8] / 176400, 3)} s; "
                     f"the pause from {pause_at[0] / 176400:.3f} to {pause_at[1] / 176400:.3f} s), none counted")
    # a cut or an onset of the 0.5 tone steps by 0.1 or more (6x the tone's own); the DAC's
    # resampler (PulseAudio: our 192 kHz into its 176.4 kHz) adds a little at a stream's start
    assert steps[worst] <= 2.5 * own, (steps[worst], own)
