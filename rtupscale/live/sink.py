"""The virtual sink the daemon captures from (``audio.capture: auto``), and its lock.

A sink is claimed by a ``flock`` on ``rtupscale-sink-NAME.lock`` in ``$XDG_RUNTIME_DIR``
(else beside the control socket), held from its creation until its removal: a sink whose
lock another live process holds is never unloaded or reused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rtupscale.audio.devices import DeviceError
from rtupscale.live.server import SoundServerClient
from rtupscale.lockfile import LockError, LockHeld, OwnerLock

log = logging.getLogger("rtupscale.daemon")


class VirtualSink:
    """The virtual sink this daemon owns, kept across reopens of the audio path.

    Args:
        server: the sound-server client (:mod:`rtupscale.audio.pulse`, or a fake).
        lock_folder: where the lock goes when ``$XDG_RUNTIME_DIR`` is not set.
    """

    def __init__(self, server: SoundServerClient, lock_folder: Path | str = "/tmp"):
        self.server = server
        self.lock_folder = Path(lock_folder)
        self.owned: tuple[int, str, int, int] | None = None
        """The sink this daemon loaded: (module, name, rate, channels)."""
        self.lock: OwnerLock | None = None
        self.fresh = False
        """Loaded by the last :meth:`ensure`, and its clock not restarted yet (:meth:`start_clock`)."""

    def claim(self, name: str) -> None:
        """Hold the lock on sink ``name``.

        Raises:
            DeviceError: another running daemon owns a sink of this name.
        """
        folder = os.environ.get("XDG_RUNTIME_DIR") or str(self.lock_folder)
        path = os.path.join(folder, f"rtupscale-sink-{name}.lock")
        if self.lock is not None and self.lock.path == Path(path):
            return
        lock = OwnerLock(path)
        try:
            lock.acquire()
        except LockHeld as e:
            who = f"pid {e.pid}" if e.pid else "another process"
            raise DeviceError(
                f"audio.virtual_sink: the sink {name!r} belongs to another running rtupscale daemon ({who}); "
                "stop it, or give this one another virtual_sink"
            ) from None
        except LockError as e:
            raise DeviceError(f"audio.virtual_sink: {e}") from None
        self.release_claim()
        self.lock = lock

    def release_claim(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def ensure(self, name: str, rate: int, channels: int) -> int:
        """Claim sink ``name`` and make sure it is loaded at ``rate`` and ``channels``;
        returns its module index. Our own sink from a previous session is kept, and so is one
        a daemon that died left at the same rate and channels, so the apps playing to it stay
        on it (a new sink of the same name would not get them back: the server moves them to
        its fallback sink when a sink goes)."""
        self.claim(name)  # raises DeviceError if another live daemon owns it
        loaded = self.server.null_sink_module(name)
        self.fresh = False
        if loaded is not None and self.owned == (loaded, name, rate, channels):
            log.info("virtual sink %r kept (module %d)", name, loaded)
            return loaded
        if loaded is not None and self.owned is None:
            # no live daemon holds its lock: one that crashed or was killed left it. At the
            # same rate and channels it is taken over as it is, with the apps playing to it.
            spec = next((d.spec for d in self.server.list_sinks() if d.name == name), None)
            if spec is not None and (spec.rate, spec.channels) == (rate, channels):
                self.owned = (loaded, name, rate, channels)
                log.info("virtual sink %r (module %d) was left by an rtupscale that is gone: taken over, "
                         "with the apps playing to it", name, loaded)
                return loaded
        if loaded is not None:
            log.warning("a virtual sink %r is already loaded (module %d) at another rate or channel count, and no "
                        "running rtupscale owns it: replacing it", name, loaded)
            self.server.unload_module(loaded)
        module = self.server.load_null_sink(name, rate, channels)
        self.owned = (module, name, rate, channels)
        self.fresh = True
        log.info("virtual sink %r created at %d Hz, %d ch (module %d): set it as the output of your apps", name, rate, channels, module)
        return module

    def start_clock(self) -> None:
        """On PulseAudio, restart the clock of the sink :meth:`ensure` just loaded, once the
        capture of its monitor is connected: a new null sink otherwise gives a stream moved
        onto it no data for up to 2 s (:func:`rtupscale.audio.pulse.restart_sink_clock`).
        Nothing plays on it yet, so nothing is cut. Once per sink; a failure is logged."""
        if not self.fresh or self.owned is None:
            return
        self.fresh = False
        try:
            self.server.restart_sink_clock(self.owned[1])
        except self.server.SoundServerError as e:
            log.info("virtual sink %r: its clock was not restarted (%s): apps moved to it may wait up to 2 s "
                     "for their first sound", self.owned[1], e)

    def remove(self) -> None:
        """Unload the sink this daemon loaded, if it is still there, and drop its lock."""
        if self.owned is None:
            self.release_claim()
            return
        module, name = self.owned[:2]
        self.owned = None
        try:
            # a server that restarted in between numbers its modules afresh: unload only ours
            if self.server.null_sink_module(name) != module:
                log.info("virtual sink %r (module %d) is gone already", name, module)
                return
            self.server.unload_module(module)
            log.info("virtual sink removed (module %d)", module)
        except self.server.SoundServerError as e:
            log.info("virtual sink not removed: %s", e)
        finally:
            self.release_claim()
