"""Routing on each real server: ``routing.all_apps`` takes every app's stream (new ones too,
excluded ones not) and gives them back on exit; the playback follows the default sink; a
daemon that was killed leaves its sink, and the next one takes it over with its apps."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.audio.pulse_harness import wait_until

pytestmark = pytest.mark.pulse


def _app(server, name: str, sink: str) -> subprocess.Popen:
    """A PulseAudio-protocol app called ``name`` playing silence to ``sink``."""
    zero = open("/dev/zero", "rb")
    try:
        return subprocess.Popen(
            ["pacat", "--playback", "--raw", "--format=float32le", "--rate=44100", "--channels=2",
             "--latency-msec=40", f"--client-name={name}", f"--property=application.name={name}", "-d", sink],
            stdin=zero, env=server.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finally:
        zero.close()


def _where(server) -> dict[str, str]:
    """application.name (media.name for our own stream) -> the sink it plays to."""
    try:
        names = {s["index"]: s["name"] for s in server.sinks()}
        out = {}
        for i in server.sink_inputs():
            p = i["properties"]
            key = "ours" if p.get("media.name") == "rtupscale playback" else p.get("application.name", "?")
            out[key] = names.get(i["sink"], "?")
        return out
    except Exception:
        return {}


def _stop_all(procs):
    for p in procs:
        p.kill()
        p.wait()


def test_all_apps_takes_the_apps_follows_the_default_sink_and_gives_them_back(sound_server, make_config, daemon_factory):
    server = sound_server
    apps = [_app(server, "player", "dac"), _app(server, "Firefox", "dac")]
    try:
        wait_until(lambda: _where(server).get("player") == "dac" and _where(server).get("Firefox") == "dac", 5, "the apps on dac")
        d = daemon_factory(make_config(routing={"all_apps": True, "exclude": ["firefox"]}, model={"path": "none"}),
                           keep_alive=False)
        wait_until(lambda: _where(server).get("player") == "rtupscale", 5, "the player moved to rtupscale")
        assert _where(server)["Firefox"] == "dac", "an excluded app was moved"
        apps.append(_app(server, "game", "dac"))
        t0 = time.monotonic()
        wait_until(lambda: _where(server).get("game") == "rtupscale", 5, "a new app moved to rtupscale")
        print(f"a new app was on rtupscale {time.monotonic() - t0:.2f} s after it started")
        assert _where(server)["ours"] == "dac"
        # headphones appear and become the default: the playback follows; the apps stay ours
        server.pactl("set-default-sink", "dac192")
        try:
            wait_until(lambda: _where(server).get("ours") == "dac192", 5, "our playback on the new default sink")
            where = _where(server)
            assert where["player"] == "rtupscale" and where["game"] == "rtupscale", where
            if server.name == "pulseaudio":  # WirePlumber may move our stream to the new default itself
                assert "the default sink is now dac192" in d.log_text()
        finally:
            server.pactl("set-default-sink", "dac")
        wait_until(lambda: _where(server).get("ours") == "dac", 5, "our playback back on dac")
        assert d.status()["state"] == "running"
        assert d.stop() == 0
        where = wait_until(lambda: (w := _where(server)).get("player") == "dac" and w.get("game") == "dac" and w, 5,
                      "the apps back on dac after the daemon stopped")
        assert where["Firefox"] == "dac", where
        log = d.log_text()
        assert "moved player" in log and "back to dac" in log, log[-3000:]
        # the user's default sink is what it was
        assert server.pactl("get-default-sink").stdout.strip() == "dac"
    finally:
        _stop_all(apps)


def test_a_killed_daemons_sink_and_its_apps_are_taken_over_by_the_next(sound_server, make_config, daemon_factory):
    server = sound_server
    config = make_config(model={"path": "none"})
    first = daemon_factory(config, keep_alive=False)
    apps = [_app(server, "player", "rtupscale")]
    try:
        wait_until(lambda: _where(server).get("player") == "rtupscale", 5, "the player on rtupscale")
        first.signal(signal.SIGKILL)
        first.proc.wait(5)
        time.sleep(0.5)
        assert _where(server).get("player") == "rtupscale", "the sink went with the daemon"
        second = daemon_factory(config, keep_alive=False)
        assert "was left by an rtupscale that is gone: taken over" in second.log_text(), second.log_text()[-2000:]
        assert _where(server).get("player") == "rtupscale", _where(server)
        assert second.status()["state"] == "running"
    finally:
        _stop_all(apps)
