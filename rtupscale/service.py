"""systemd: the user unit (``rtupscale install-service``) and sd_notify (READY, WATCHDOG);
PipeWire: the drop-in that lets the graph run at the x4 rates (``--pipewire-rates``).

sd_notify is a datagram to ``$NOTIFY_SOCKET``; no libsystemd needed.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from pathlib import Path

UNIT_NAME = "rtupscale.service"
WATCHDOG_SEC = 10
PIPEWIRE_DROPIN = "50-rtupscale-rates.conf"
# The base rates, their doubles, and the x4 output rates: without the last two in
# default.clock.allowed-rates, PipeWire runs its graph at 48 kHz and resamples our stream down.
PIPEWIRE_RATES = (44100, 48000, 88200, 96000, 176400, 192000)


def sd_notify(message: str) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd; False when not run by systemd."""
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
        return True
    except OSError:
        return False


def watchdog_interval_s() -> float | None:
    """The watchdog period systemd asks for (``WATCHDOG_USEC``), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None


def unit_text(exec_start: list[str], working_dir: str | None = None) -> str:
    """The unit file: Type=notify (READY when audio runs), a watchdog the daemon feeds only
    while its worker is alive, restart on failure, reload by SIGHUP."""
    cmd = " ".join(shlex.quote(a) for a in exec_start)
    wd = f"WorkingDirectory={working_dir}\n" if working_dir else ""
    return f"""[Unit]
Description=rtupscale: real-time AI audio upscaler (x4 rate)
After=pipewire-pulse.service pulseaudio.service sound.target
Wants=sound.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={cmd}
ExecReload=/bin/kill -HUP $MAINPID
Environment=PYTHONUNBUFFERED=1
{wd}Restart=on-failure
RestartSec=2
WatchdogSec={WATCHDOG_SEC}
TimeoutStopSec=10
KillSignal=SIGTERM

[Install]
WantedBy=default.target
"""


def unit_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "systemd" / "user" / UNIT_NAME


def pipewire_dropin_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "pipewire" / "pipewire.conf.d" / PIPEWIRE_DROPIN


def pipewire_dropin_text(rates: tuple[int, ...] = PIPEWIRE_RATES) -> str:
    """A ``pipewire.conf.d`` drop-in that sets ``default.clock.allowed-rates``."""
    return ("# Written by `rtupscale install-service --pipewire-rates`: let PipeWire's graph run at\n"
            "# rtupscale's x4 output rates instead of resampling them to 48 kHz.\n"
            "context.properties = {\n"
            f"    default.clock.allowed-rates = [ {' '.join(str(r) for r in rates)} ]\n"
            "}\n")


def install_pipewire_dropin(force: bool) -> int:
    """Write the rates drop-in; exit 2 (one line) if another file of that name is there and
    ``force`` is not given."""
    path, text = pipewire_dropin_path(), pipewire_dropin_text()
    if path.exists() and path.read_text() != text and not force:
        print(f"rtupscale install-service: {path} exists with other content; add --force to overwrite it",
              file=sys.stderr)
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path} (default.clock.allowed-rates = {' '.join(map(str, PIPEWIRE_RATES))})")
    print("PipeWire reads it when it starts: systemctl --user restart pipewire pipewire-pulse wireplumber")
    return 0


def install_service_command(config_path: str | None, force: bool, pipewire_rates: bool = False) -> int:
    """Write the user unit and, with ``pipewire_rates``, the PipeWire rates drop-in; exit 2
    (one line) if either exists (the drop-in: with other content) and ``force`` is not given."""
    from rtupscale.app import default_config_path, load_config_or_exit

    cfg_path = config_path or default_config_path()
    load_config_or_exit(cfg_path)  # a broken config is reported now, not at boot
    script = Path(sys.executable).parent / "rtupscale"  # the console script of this install
    exe = [str(script), "run"] if script.exists() else [sys.executable, "-m", "rtupscale.cli", "run"]
    if cfg_path:
        exe += ["--config", str(Path(cfg_path).resolve())]
    path = unit_path()
    if path.exists() and not force:
        print(f"rtupscale install-service: {path} exists; add --force to overwrite it", file=sys.stderr)
        return 2
    if pipewire_rates and install_pipewire_dropin(force) != 0:
        return 2
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text(exe))
    print(f"wrote {path}")
    print("enable and start it with:")
    print("  systemctl --user daemon-reload")
    print(f"  systemctl --user enable --now {UNIT_NAME}")
    print(f"logs: journalctl --user -u {UNIT_NAME} -f; reload the config: systemctl --user reload {UNIT_NAME}")
    if not pipewire_rates and not pipewire_dropin_path().exists():
        print(f"on PipeWire: add --pipewire-rates to also write {pipewire_dropin_path()}, which lets the graph run "
              "at 176.4/192 kHz (without default.clock.allowed-rates holding them, PipeWire resamples to 48 kHz)")
    return 0
