"""``rtupscale install-service --pipewire-rates`` on a real PipeWire: the drop-in it writes
is what lets the graph run at the x4 rates."""

from __future__ import annotations

import subprocess

import pytest

from rtupscale import service
from rtupscale.audio.pulse import PipeWireClock
from tests.audio.pulse_harness import PipeWireServer


def _allowed(root, monkeypatch, with_dropin: bool) -> tuple[int, ...]:
    """A PipeWire with the test DACs only (not the suite's own rates drop-in) and, if asked,
    the drop-in install-service writes into its config home: its allowed rates."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(root / "config"))
    if with_dropin:
        assert service.install_service_command(None, force=True, pipewire_rates=True) == 0
    server = PipeWireServer(root, dropins=("20-dacs.conf",))
    try:
        server.start()
        r = subprocess.run(["pw-metadata", "-n", "settings"], env=server.env, capture_output=True, text=True, timeout=10)
        return PipeWireClock.parse(r.stdout).allowed
    finally:
        server.stop()


def test_the_dropin_lets_the_graph_run_at_the_x4_rates(tmp_path, monkeypatch):
    why = PipeWireServer.missing()
    if why:
        pytest.skip(f"PipeWire: {why}")
    without = _allowed(tmp_path / "plain", monkeypatch, with_dropin=False)
    assert 176400 not in without and 192000 not in without, without  # PipeWire's default: 48 kHz only
    allowed = _allowed(tmp_path / "ours", monkeypatch, with_dropin=True)
    print("allowed rates without the drop-in:", without, "with it:", allowed)
    assert set(service.PIPEWIRE_RATES) <= set(allowed), allowed
