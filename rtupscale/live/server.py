"""The sound-server client the live daemon is given: :mod:`rtupscale.audio.pulse` (PulseAudio
and pipewire-pulse through ``pactl``), or a fake in tests."""

from __future__ import annotations

from typing import Protocol

from rtupscale.audio import pulse


class SoundServerClient(Protocol):
    """The calls the daemon makes to the sound server. Each raises ``SoundServerError`` when
    the server does not answer."""

    SoundServerError: type[Exception]

    def server_info(self) -> pulse.ServerInfo: ...

    def null_sink_module(self, name: str) -> int | None: ...

    def load_null_sink(self, name: str, rate: int, channels: int) -> int: ...

    def unload_module(self, index: int) -> None: ...

    def list_sources(self) -> list[pulse.ServerDevice]: ...

    def stream_latencies(self) -> pulse.StreamLatency: ...

    def playback_route(self) -> pulse.StreamRoute | None: ...

    def capture_route(self) -> pulse.StreamRoute | None: ...

    def pipewire_clock(self) -> pulse.PipeWireClock: ...

    def resampling_advice(self, info: pulse.ServerInfo, wanted_rate: int, device_rate: int) -> str: ...
