"""The live tests' sound servers: one private PulseAudio and one private PipeWire (with
WirePlumber and pipewire-pulse) per session (see pulse_harness).

``pulse_server`` is PulseAudio (tests of what only PulseAudio does); ``sound_server`` runs a
test once on each server (``[pulseaudio]``, ``[pipewire]``). ``make_config`` and
``daemon_factory`` use whichever of the two the test asks for."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import yaml

from tests.audio.pulse_harness import REPO, Daemon, PipeWireServer, PulseServer
from tests.audio.stall_probe import PROBE


@pytest.fixture(scope="session")
def stall_probe():
    PROBE.start()
    if PROBE.error:
        print(f"{PROBE.error}: no xrun is put down to a stall of the machine")
    yield PROBE
    PROBE.stop()


@pytest.fixture(scope="session")
def pulse_server(tmp_path_factory):
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.fail("the live tests need pulseaudio and pulseaudio-utils (apt); .ci/run installs them")
    server = PulseServer(tmp_path_factory.mktemp("pulse"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pipewire_server(tmp_path_factory):
    """PipeWire, or a skip that says why it cannot run here (the live tests on PulseAudio
    still run)."""
    why = PipeWireServer.missing()
    if why:
        pytest.skip(f"PipeWire: {why}")
    server = PipeWireServer(tmp_path_factory.mktemp("pipewire"))
    try:
        server.start()
    except RuntimeError as e:
        server.stop()
        pytest.skip(f"PipeWire does not start here: {e}")
    yield server
    server.stop()


@pytest.fixture(scope="session", params=["pulseaudio", "pipewire"])
def sound_server(request):
    """Each server in turn: the test runs once on PulseAudio, once on PipeWire."""
    return request.getfixturevalue("pulse_server" if request.param == "pulseaudio" else "pipewire_server")


def _server(request):
    """The server the test asked for (``sound_server``, ``pipewire_server`` or ``pulse_server``)."""
    for name in ("sound_server", "pipewire_server", "pulse_server"):
        if name in request.fixturenames:
            return request.getfixturevalue(name)
    return request.getfixturevalue("pulse_server")


@pytest.fixture(autouse=True)
def live_server(request):
    """Each live test starts with the session's server running: one that died after an
    earlier test's checks (a death during them fails that test) is started again, with the
    reason printed."""
    if not {"pulse_server", "sound_server", "pipewire_server"} & set(request.fixturenames):
        yield
        return
    probe = request.getfixturevalue("stall_probe")
    server = _server(request)
    why = server.died()
    if why:
        print(f"restarting the test sound server: {why}")
        server.start()
    probe.test_started = time.monotonic()
    yield
    print(f"during the test: {probe.summary(probe.test_started)}")


@pytest.fixture
def make_config(request, tmp_path):
    """Write a daemon config: the shipped config.yaml with the given overrides."""

    server = _server(request)

    def make(name: str = "config.yaml", **sections) -> object:
        cfg = yaml.safe_load((REPO / "config.yaml").read_text())
        model = cfg.setdefault("model", {})
        if model.get("path", "none") != "none":  # relative to config.yaml, which stays in the repo
            model["path"] = str((REPO / model["path"]).resolve())
        cfg.setdefault("control", {})["socket"] = str(server.runtime / f"rtupscale-{tmp_path.name}.sock")
        for section, values in sections.items():
            cfg.setdefault(section, {}).update(values)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


@pytest.fixture
def daemon_factory(request, tmp_path):
    """Start daemons (stopped, with their logs printed on failure, at the end of the test)."""
    pulse_server = _server(request)
    started: list[Daemon] = []
    keepalive: list[subprocess.Popen] = []
    zero = open("/dev/zero", "rb")

    def start(config, wait: bool = True, keep_alive: bool = True) -> Daemon:
        d = Daemon(pulse_server, config, tmp_path / f"daemon{len(started)}.log")
        d.start()
        started.append(d)
        if wait:
            d.wait_running()
            if keep_alive:
                # trap 1 of ../shared/audio: an idle null sink may hold a new stream's data for
                # up to 2 s; a low-latency client on the virtual sink keeps it rendering.
                keepalive.append(subprocess.Popen(
                    ["pacat", "--playback", "--raw", "--latency-msec=20", "-d", "rtupscale"],
                    stdin=zero, env=pulse_server.env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))
        return d

    yield start
    for p in keepalive:
        p.terminate()
        p.wait(5)
    zero.close()
    for d in started:
        d.stop()
        print(f"--- {d.logpath} ---\n{d.log_text()[-4000:]}")


LIVE_FIXTURES = {"pulse_server", "sound_server", "pipewire_server"}


def pytest_collection_modifyitems(config, items):
    """A live test gets one more try when an assertion fails (pytest-rerunfailures; the
    summary lists it as RERUN). These tests hold a real-time daemon to zero xruns and
    millisecond targets on a shared 2-core VM, where a stall of the machine fails a window
    now and then; a fault of the daemon fails both tries. Errors other than assertions
    (a server that does not start, a crash) are not retried."""
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    for item in items:
        if LIVE_FIXTURES & set(getattr(item, "fixturenames", ())) and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=1, only_rerun=["AssertionError"]))
