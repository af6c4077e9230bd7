"""The daemon on PipeWire (PipeWire + WirePlumber + pipewire-pulse, started by the fixture):
what only PipeWire does. The tests meant for both servers are in test_live_pulse.py
(``sound_server``)."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.audio.test_live_pulse import OUT_RATE, cli

pytestmark = pytest.mark.pulse


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout:g} s (last: {last})")


def _verdict_agrees_with_the_node(server, d, rate: int, timeout: float = 5.0) -> dict:
    """``status`` says ``rate`` reaches the DAC, and so does the DAC node itself (pw-dump)."""
    def agree():
        st = d.status()
        pb = st["playback"]
        return st if pb["dac_rate"] == rate and pb["resampled"] == (rate != OUT_RATE) else None

    st = _wait(agree, timeout, f"status saying {rate} Hz reaches the DAC")
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


def test_a_48k_stream_holding_the_dac_at_start_is_reported_as_resampled(pipewire_server, make_config, daemon_factory):
    """Another app plays to the DAC at 48 kHz when the daemon starts: the graph runs at 48000
    (the old check read 176400 off ``clock.allowed-rates``). Status says RESAMPLED and why.
    When the app leaves, PipeWire keeps the graph at 48000 for as long as our stream plays:
    the daemon reopens its playback and the x4 rate reaches the DAC again."""
    server = pipewire_server
    other = subprocess.Popen(["pw-cat", "--playback", "--rate", "48000", "--channels", "2", "--format", "f32",
                              "--target", "dac", "-"], stdin=subprocess.PIPE, env=server.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: server.node_rate("dac") == 48000, 5, "the 48 kHz app driving the DAC")
        d = daemon_factory(make_config(model={"path": "none"}))
        st = _verdict_agrees_with_the_node(server, d, 48000)
        assert "another stream holds the DAC's graph at 48000 Hz" in st["playback"]["advice"], st["playback"]
        assert "the DAC's graph is held by pw-cat" in d.log_text()
    finally:
        other.kill()
        other.wait()
    st = _verdict_agrees_with_the_node(server, d, OUT_RATE, timeout=8.0)
    assert "with only our stream on it: reopening the playback" in d.log_text()
    assert st["state"] == "running" and st["recoveries"] == 1, st
