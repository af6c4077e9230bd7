"""systemd: the user unit (``rtupscale install-service``) and sd_notify (READY, WATCHDOG).

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


def install_service_command(config_path: str | None, force: bool) -> int:
    """Write the user unit; exit 2 (one line) if it exists and ``force`` is not given."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text(exe))
    print(f"wrote {path}")
    print("enable and start it with:")
    print("  systemctl --user daemon-reload")
    print(f"  systemctl --user enable --now {UNIT_NAME}")
    print(f"logs: journalctl --user -u {UNIT_NAME} -f; reload the config: systemctl --user reload {UNIT_NAME}")
    return 0
