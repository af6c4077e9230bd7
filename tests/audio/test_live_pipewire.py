"""The daemon on PipeWire (PipeWire + WirePlumber + pipewire-pulse, started by the fixture):
what only PipeWire does. The tests meant for both servers are in test_live_pulse.py
(``sound_server``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from rtupscale.audio import pulse
from tests.audio.pulse_harness import wait_until
from tests.audio.test_live_pulse import OUT_RATE, cli

pytestmark = pytest.mark.pulse


def _verdict_agrees_with_the_node(server, d, rate: int, timeout: float = 5.0) -> dict:
    """``status`` says ``rate`` reaches the DAC (with a fix where it is not the 4x rate), and
    so does the DAC node itself (pw-dump)."""
    def agree():
        st = d.status()
        pb = st["playback"]
        ok = pb["dac_rate"] == rate and pb["resampled"] == (rate != OUT_RATE) and bool(pb["advice"]) == (rate != OUT_RATE)
        return st if ok else None

    st = wait_until(agree, timeout, f"status saying {rate} Hz reaches the DAC")
    assert server.node_rate("dac") == rate, "the DAC node (pw-dump) runs at another rate than status says"
    return st


def test_the_rate_verdict_follows_the_graph_when_it_is_forced_to_48k(pipewire_server, make_config, daemon_factory):
    """With the graph free, 176400 Hz reaches the DAC; ``clock.force-rate 48000`` pins it at
    48000 under the running daemon: status turns to RESAMPLED with the command that lifts it
    (the check runs when the server says the sink changed), and back when it is lifted."""
    server = pipewire_server
    config = make_config(model={"path": "none"})
    d = daemon_factory(config)
    try:
        _verdict_agrees_with_the_node(server, d, OUT_RATE)
        checks = d.status()
        server.metadata("clock.force-rate", "48000")
        st = _verdict_agrees_with_the_node(server, d, 48000)
        assert "clock.force-rate 0" in st["playback"]["advice"], st["playback"]
        assert "DAC node dac runs at 48000 Hz" in st["playback"]["route"], st["playback"]
        out = cli(server, "status", "--config", str(config)).stdout
        assert "48000 Hz reaches the DAC (RESAMPLED)" in out and "fix: PipeWire's clock.force-rate" in out, out
        assert "RESAMPLED" in d.log_text()
    finally:
        server.metadata("clock.force-rate", "0")
    st = _verdict_agrees_with_the_node(server, d, OUT_RATE)
    assert st["playback"]["advice"] == ""
    assert checks["state"] == "running"


def _held_at_48k_then_freed(server, make_config, daemon_factory, holder: list[str], named: str, while_held=None):
    """``holder`` (a command) drives the DAC's graph at 48000 before the daemon starts: status
    says RESAMPLED and why, and the log names the holder (``named``, written after the
    verdict, once the streams on the DAC are listed); ``while_held(d)`` runs then. When the
    holder stops, one reopen of our playback lets the graph switch, and the x4 rate reaches
    the DAC."""
    zero = open("/dev/zero", "rb")
    p = subprocess.Popen(holder, stdin=zero, env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    zero.close()
    try:
        wait_until(lambda: server.node_rate("dac") == 48000, 5, f"{holder[0]} driving the DAC's graph at 48 kHz")
        d = daemon_factory(make_config(model={"path": "none"}))
        st = _verdict_agrees_with_the_node(server, d, 48000)
        assert "another stream holds the DAC's graph at 48000 Hz" in st["playback"]["advice"], st["playback"]
        wait_until(lambda: named in d.log_text(), 5, f"the log naming {holder[0]}")
        if while_held is not None:
            while_held(d)
    finally:
        p.kill()
        p.wait()
    st = _verdict_agrees_with_the_node(server, d, OUT_RATE, timeout=8.0)
    assert "with only our stream on it: reopening the playback" in d.log_text()
    assert st["state"] == "running" and st["recoveries"] == 1, st


def test_a_48k_stream_holding_the_dac_at_start_is_reported_as_resampled(pipewire_server, make_config, daemon_factory):
    """Another app plays to the DAC at 48 kHz when the daemon starts: the graph runs at 48000
    (the old check read 176400 off ``clock.allowed-rates``). Status says RESAMPLED and why.
    When the app leaves, PipeWire keeps the graph at 48000 for as long as our stream plays:
    the daemon reopens its playback and the x4 rate reaches the DAC again."""
    _held_at_48k_then_freed(
        pipewire_server, make_config, daemon_factory,
        ["pw-cat", "--playback", "--rate", "48000", "--channels", "2", "--format", "f32", "--target", "dac", "-"],
        "the DAC's graph is held by pw-cat (stream",
    )


def test_a_recording_of_the_dacs_monitor_holds_the_graph_without_reopens(pipewire_server, make_config, daemon_factory):
    """A recording of the DAC's monitor at 48 kHz (a level meter, a visualiser) runs in the
    DAC's graph and holds it at 48000 as a player does. The daemon names it and does not
    reopen its playback (each reopen fades out and pauses the music: before, it reopened on
    its first rate check, and again every few seconds). When the recording stops, one
    reopen lets the graph switch, and 176400 Hz reaches the DAC."""

    def no_reopen(d):
        time.sleep(3.0)  # rate checks go on (the graph stays resampled)
        assert d.status()["recoveries"] == 0 and "with only our stream on it" not in d.log_text(), d.log_text()

    _held_at_48k_then_freed(
        pipewire_server, make_config, daemon_factory,
        ["parec", "--raw", "--rate=48000", "--channels=2", "--format=float32le", "-d", "dac.monitor"],
        "the DAC's graph is held by parec (recording its monitor, stream", no_reopen,
    )


def test_an_app_on_rtupscale_is_ours_again_within_5_s_of_a_pipewire_pulse_restart(pipewire_server, make_config, daemon_factory):
    """``pw-play --target rtupscale`` (a PipeWire-native client: it outlives pipewire-pulse).
    When pipewire-pulse dies, the virtual sink goes with it and PipeWire moves the app to the
    DAC, where it plays on, not upscaled. Once pipewire-pulse is back, the daemon reopens its
    path, makes its sink again and moves the app back: within 5 s of the restart."""
    server = pipewire_server
    d = daemon_factory(make_config(model={"path": "none"}), keep_alive=False)
    zero = open("/dev/zero", "rb")
    app = subprocess.Popen(["pw-cat", "--playback", "--rate", "44100", "--channels", "2", "--format", "f32",
                            "--target", "rtupscale", "-"], stdin=zero, env=server.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    zero.close()

    def app_sink() -> str | None:
        try:
            names = {s["index"]: s["name"] for s in server.sinks()}
            # pipewire-pulse lists no process id for a native client: it is the only pw-cat
            return next((names.get(i["sink"]) for i in server.sink_inputs()
                         if i["properties"].get("application.name") == "pw-cat"), None)
        except Exception:  # the server is restarting
            return None

    try:
        wait_until(lambda: app_sink() == "rtupscale", 5, "the app on rtupscale")
        time.sleep(1.0)  # the daemon has seen it there (it refreshes on the server's stream events)
        server.kill()
        time.sleep(0.5)
        assert app.poll() is None, "the PipeWire-native app died with pipewire-pulse"
        server.start()
        t_back = time.monotonic()
        wait_until(lambda: app_sink() == "rtupscale", 5.0, "the app moved back to rtupscale after the restart")
        took = time.monotonic() - t_back
        print(f"the app was on rtupscale again {took:.2f} s after pipewire-pulse restarted")
        assert "back from dac to rtupscale" in d.log_text() or "back from" in d.log_text(), d.log_text()[-2000:]
        st = d.status()
        assert st["state"] == "running" and st["recoveries"] >= 1, st
    finally:
        app.kill()
        app.wait()


def test_a_stall_of_pipewire_pulse_is_counted_as_a_gap_at_the_dac(pipewire_server, make_config, daemon_factory):
    """pipewire-pulse stopped for 80 ms (SIGSTOP): the DAC's graph runs on and plays silence
    in our stream while the server holds our audio, and no underflow notice comes (seen: 0
    counted in the first version of this test). The daemon finds the gap in the timing
    updates (the read index left behind the clock) and counts it with its cause. Whichever
    way it is counted, it is counted: the counts are taken against those before the
    stall (a start under load may already have one)."""
    server = pipewire_server
    config = make_config(model={"path": "none"})
    d = daemon_factory(config)
    time.sleep(6.0)  # the check needs a few seconds of timing updates
    st = d.status()
    assert st["dac_gaps"]["checked"] is True, st["dac_gaps"]
    x0, g0 = st["xruns"], st["dac_gaps"]
    print("before the stall:", x0, g0)
    os.kill(server.proc.pid, signal.SIGSTOP)
    time.sleep(0.080)
    os.kill(server.proc.pid, signal.SIGCONT)
    st = wait_until(lambda: (s := d.status())["xruns"]["total"] > x0["total"] and s, 6.0, "the stall counted")
    x = {k: v - x0.get(k, 0) for k, v in st["xruns"].items()}
    g = st["dac_gaps"]
    print("after the stall:", st["xruns"], g)
    if x["dac_gaps"]:
        assert g["causes"].get("server_late", 0) - g0["causes"].get("server_late", 0) >= 1, (g0, g)
        assert 60.0 <= g["ms"] - g0["ms"] <= 120.0, (g0, g)
        assert "its data thread missed the DAC's graph cycles" in g["last"], g
        out = cli(server, "status", "--config", str(config)).stdout
        assert f"gaps at the DAC no underflow notice reported (PipeWire): {st['xruns']['dac_gaps']}," in out, out
        wait_until(lambda: "gap at the DAC: the DAC played" in d.log_text(), 3, "the log line")
    else:
        # counted another way, once: the server noticed it itself (an underflow), or it asked
        # for the held-back audio at once after the stall and emptied our playback ring
        # (seen in CI: "playback ring ran dry", playback_ring_empty 1)
        assert x["output_underflows"] + x["playback_ring_empty"] >= 1 and x["dac_gaps"] == 0, x
    assert d.status()["state"] == "running"


def test_our_playback_asks_the_dac_graph_for_quanta_of_1024_frames(pipewire_server, make_config, daemon_factory):
    """On pipewire-pulse the playback request sets the DAC graph's quantum: the default
    config's stream asks for 1024 frames at 176.4 kHz (5.8 ms), so a stall of pipewire-pulse's
    data thread shorter than that does not reach the DAC (512 frames, 2.9 ms, before: the
    server's 5.3 ms minimum request rounded down to a power of two)."""
    server = pipewire_server
    d = daemon_factory(make_config(model={"path": "none"}))
    ours = wait_until(lambda: next((n for n in server.nodes() if n.name == "rtupscale-playback" and n.latency), None),
                      5.0, "our playback node")
    assert ours.latency == f"1024/{OUT_RATE}", ours
    assert pulse.pipewire_quantum_s(ours.latency, OUT_RATE) == 1024 / OUT_RATE
    assert "(request 5.8 ms," in d.log_text()
    assert d.status()["state"] == "running"
