"""systemd integration: the user unit and sd_notify."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pytest

from rtupscale import service


def test_install_service_writes_a_unit_systemd_accepts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.chdir(tmp_path)
    assert service.install_service_command(None, force=False) == 0
    unit = tmp_path / "cfg" / "systemd" / "user" / "rtupscale.service"
    text = unit.read_text()
    for line in ("Type=notify", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID", f"WatchdogSec={service.WATCHDOG_SEC}"):
        assert line in text, line
    exec_start = next(l for l in text.splitlines() if l.startswith("ExecStart="))
    assert exec_start.endswith(" run"), exec_start
    out = capsys.readouterr().out
    assert "systemctl --user enable --now rtupscale.service" in out
    # a second install refuses without --force (one line, exit 2), and overwrites with it
    assert service.install_service_command(None, force=False) == 2
    assert "exists; add --force" in capsys.readouterr().err
    assert service.install_service_command(None, force=True) == 0
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed: the unit was written but not verified")
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_install_service_refuses_a_broken_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("latency:\n  blok_size: 3\n")
    with pytest.raises(SystemExit) as e:
        service.install_service_command(str(bad), force=False)
    assert e.value.code == 2
    assert not (tmp_path / "cfg" / "systemd" / "user" / "rtupscale.service").exists()


def test_sd_notify_sends_to_the_notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert service.sd_notify("READY=1\nSTATUS=running")
    assert s.recv(1024) == b"READY=1\nSTATUS=running"
    s.close()
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert service.sd_notify("READY=1") is False


def test_watchdog_interval(monkeypatch):
    import os

    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert service.watchdog_interval_s() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert service.watchdog_interval_s() is None


def test_pipewire_rates_dropin_is_offered_then_written_and_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    dropin = tmp_path / "cfg" / "pipewire" / "pipewire.conf.d" / service.PIPEWIRE_DROPIN
    assert service.install_service_command(None, force=False) == 0
    assert not dropin.exists()
    assert "add --pipewire-rates to also write" in capsys.readouterr().out  # offered, not done
    assert service.install_service_command(None, force=True, pipewire_rates=True) == 0
    text = dropin.read_text()
    assert "default.clock.allowed-rates = [ 44100 48000 88200 96000 176400 192000 ]" in text
    out = capsys.readouterr().out
    assert "systemctl --user restart pipewire" in out and "add --pipewire-rates" not in out
    # the same file again is fine; a user's own file of that name is kept without --force
    assert service.install_service_command(None, force=True, pipewire_rates=True) == 0
    dropin.write_text("context.properties = { default.clock.allowed-rates = [ 48000 ] }\n")
    (tmp_path / "cfg" / "systemd" / "user" / service.UNIT_NAME).unlink()
    assert service.install_service_command(None, force=False, pipewire_rates=True) == 2
    assert "exists with other content; add --force" in capsys.readouterr().err
    assert "48000 ]" in dropin.read_text()
    assert service.install_service_command(None, force=True, pipewire_rates=True) == 0
    assert dropin.read_text() == text
