"""Choosing the capture and playback devices, and ``rtupscale devices``.

With a sound server (PulseAudio, or PipeWire's pulse server) every device is a server sink or
source, reached from PortAudio through ALSA's ``pulse`` plugin with the stream routed by
``PULSE_SOURCE`` / ``PULSE_SINK`` (Debian's PortAudio has no PulseAudio host API). Without a
server, devices are PortAudio's own (raw ALSA ``hw:`` devices and the like).

Names in the config are matched as: an integer index (the server's index, or PortAudio's
without a server), an exact name, else a unique case-insensitive substring of a name or
description. Anything else is a :class:`DeviceError`, one line that lists the devices.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rtupscale import FACTOR
from rtupscale.audio import pulse
from rtupscale.errors import UserError

PORTAUDIO_PROBE_RATES = (44100, 48000, 88200, 96000, 176400, 192000)


class DeviceError(UserError):
    """A device in the config that does not exist, or cannot be used as asked."""


@dataclass(frozen=True)
class Endpoint:
    """Where a stream goes.

    ``server_name`` set: a sink/source of the sound server, opened as PortAudio device
    ``portaudio_device`` (ALSA ``pulse``) with ``PULSE_SINK``/``PULSE_SOURCE`` routing.
    ``server_name`` None: PortAudio device ``portaudio_device`` directly.
    """

    role: str  # "capture" or "playback"
    description: str
    portaudio_device: int | str
    server_name: str | None = None
    device_rate: int | None = None  # the rate the sink/source runs at, if known

    def __str__(self) -> str:
        rate = f" @ {self.device_rate} Hz" if self.device_rate else ""
        return f"{self.description}{rate}"


def _portaudio_devices():
    import sounddevice as sd

    return list(sd.query_devices())


def portaudio_pulse_device() -> int:
    """PortAudio's index of ALSA's ``pulse`` device (the route into the sound server)."""
    for i, d in enumerate(_portaudio_devices()):
        if d["name"] == "pulse":
            return i
    raise DeviceError(
        "PortAudio has no ALSA 'pulse' device: install libasound2-plugins (the ALSA pulse plugin)"
    )


def _match(spec: str, items: list, names) -> list:
    """Items matching ``spec``: exact name first, else case-insensitive substring."""
    exact = [it for it in items if spec in names(it)[:1]]
    if exact:
        return exact
    low = spec.lower()
    return [it for it in items if any(low in n.lower() for n in names(it))]


def _server_listing(devs: list[pulse.ServerDevice]) -> str:
    return ", ".join(f"{d.index} {d.name} ({d.spec.rate} Hz)" for d in devs) or "none"


def _portaudio_listing(role: str) -> str:
    key = "max_input_channels" if role == "capture" else "max_output_channels"
    return ", ".join(f"{i} {d['name']}" for i, d in enumerate(_portaudio_devices()) if d[key] > 0) or "none"


def resolve_playback(spec: str, virtual_sink: str, server: pulse.ServerInfo | None) -> Endpoint:
    """The DAC: ``default`` (the server's default sink, never the virtual sink), else a match."""
    key = "audio.playback"
    if server is not None:
        sinks = [s for s in pulse.list_sinks() if s.name != virtual_sink]
        if spec == "default":
            chosen = [s for s in sinks if s.name == server.default_sink]
            if not chosen:
                hw = [s for s in sinks if not s.is_null_sink] or sinks
                if not hw:
                    raise DeviceError(f"{key}: default: the sound server has no sink besides {virtual_sink!r}")
                chosen = hw[:1]
        elif spec.isdigit():
            chosen = [s for s in sinks if s.index == int(spec)]
        else:
            chosen = _match(spec, sinks, lambda s: [s.name, s.description])
        if len(chosen) != 1:
            why = "no sink matches" if not chosen else "several sinks match"
            raise DeviceError(f"{key}: {why} {spec!r}; sinks: {_server_listing(sinks)}")
        s = chosen[0]
        return Endpoint("playback", f"sink {s.name}", portaudio_pulse_device(), s.name, s.spec.rate)
    return _resolve_portaudio("playback", key, spec)


def resolve_capture(spec: str, virtual_sink: str, server: pulse.ServerInfo | None) -> Endpoint:
    """``auto``: the monitor of the virtual sink (which the daemon creates); else a match."""
    key = "audio.capture"
    if spec == "auto":
        if server is None:
            raise DeviceError(
                f"{key}: auto needs a sound server (PulseAudio or PipeWire) for its virtual sink, "
                "and none answers; start one, or name a capture device (see `rtupscale devices`)"
            )
        return Endpoint("capture", f"monitor of virtual sink {virtual_sink}", portaudio_pulse_device(), f"{virtual_sink}.monitor")
    if server is not None:
        sources = pulse.list_sources()
        if spec.isdigit():
            chosen = [s for s in sources if s.index == int(spec)]
        else:
            chosen = _match(spec, sources, lambda s: [s.name, s.description])
        if len(chosen) == 1:
            s = chosen[0]
            return Endpoint("capture", f"source {s.name}", portaudio_pulse_device(), s.name, s.spec.rate)
        if len(chosen) > 1:
            raise DeviceError(f"{key}: several sources match {spec!r}; sources: {_server_listing(sources)}")
        if spec.isdigit():
            raise DeviceError(f"{key}: no source has index {spec}; sources: {_server_listing(sources)}")
        try:
            return _resolve_portaudio("capture", key, spec)
        except DeviceError:
            raise DeviceError(
                f"{key}: no device matches {spec!r}; sources: {_server_listing(sources)}; "
                f"PortAudio: {_portaudio_listing('capture')}"
            ) from None
    return _resolve_portaudio("capture", key, spec)


def _resolve_portaudio(role: str, key: str, spec: str) -> Endpoint:
    import sounddevice as sd

    kind = "input" if role == "capture" else "output"
    try:
        dev = sd.query_devices(int(spec) if spec.isdigit() else spec, kind)
    except (ValueError, sd.PortAudioError):
        raise DeviceError(f"{key}: no {kind} device matches {spec!r}; PortAudio devices: {_portaudio_listing(role)}") from None
    return Endpoint(role, f"PortAudio device {dev['index']} {dev['name']}", int(dev["index"]), None, None)


def portaudio_rates(index: int, role: str, channels: int) -> list[int]:
    """The probe rates a PortAudio device opens at (ALSA ``pulse``/``default`` take any rate)."""
    import sounddevice as sd

    check = sd.check_input_settings if role == "capture" else sd.check_output_settings
    ok = []
    for r in PORTAUDIO_PROBE_RATES:
        try:
            check(device=index, samplerate=r, channels=channels, dtype="float32")
            ok.append(r)
        except Exception:  # PortAudioError or ValueError: the device refuses this rate
            pass
    return ok


def devices_report(rate: int, channels: int, virtual_sink: str) -> list[str]:
    """Lines for ``rtupscale devices``: server sinks and sources, then PortAudio devices."""
    lines: list[str] = []
    want = FACTOR * rate
    try:
        info = pulse.server_info()
    except pulse.SoundServerError as e:
        info = None
        lines.append(f"sound server: none ({e})")
    if info is not None:
        lines.append(f"sound server: {info.name} {info.version}; default sink {info.default_sink or '-'}")
        lines.append(f"sinks (audio.playback; {want} Hz wanted at the DAC):")
        clock = None
        if info.is_pipewire:
            try:
                clock = pulse.pipewire_clock()
                lines.append(f"PipeWire graph clock: {clock}")
            except pulse.SoundServerError as e:
                lines.append(f"PipeWire graph clock: unknown ({e})")
        for s in pulse.list_sinks():
            tags = []
            if s.name == info.default_sink:
                tags.append("default")
            if s.name == virtual_sink:
                tags.append("rtupscale's own virtual sink")
            if clock is not None:
                graph = clock.graph_rate(want)
                verdict = (f"takes {want} Hz unresampled (the graph can run at it)" if graph == want else
                           f"graph at {graph} Hz: PipeWire would resample {want} -> {graph}")
            elif info.is_pipewire:
                verdict = f"PipeWire's graph rate unknown (the sink's own format: {s.spec.rate} Hz)"
            elif s.spec.rate == want:
                verdict = f"takes {want} Hz unresampled"
            else:
                verdict = f"runs at {s.spec.rate} Hz: PulseAudio would resample {want} -> {s.spec.rate}"
            lines.append(f"  {s.index:3d}  {s.name}  [{s.spec}]  {verdict}{'  (' + ', '.join(tags) + ')' if tags else ''}")
        lines.append("sources (audio.capture):")
        for s in pulse.list_sources():
            tags = ["default"] if s.name == info.default_source else []
            if s.monitor_of:
                tags.append(f"monitor of {s.monitor_of}")
            lines.append(f"  {s.index:3d}  {s.name}  [{s.spec}]{'  (' + ', '.join(tags) + ')' if tags else ''}")
        if s_advice := _advice_line(info, want):
            lines.append(s_advice)
    lines.append("PortAudio devices (used directly when no sound server has the name):")
    try:
        devs = _portaudio_devices()
    except Exception as e:  # PortAudio failed to initialise
        lines.append(f"  none ({e})")
        devs = []
    for i, d in enumerate(devs):
        io = f"in {d['max_input_channels']}, out {d['max_output_channels']}"
        if d["name"] in ("pulse", "default") and info is not None:
            lines.append(f"  {i:3d}  {d['name']}  ({io}): any rate, through the sound server")
            continue
        role = "playback" if d["max_output_channels"] >= channels else "capture"
        rates = portaudio_rates(i, role, min(channels, max(d["max_output_channels"], d["max_input_channels"])))
        four = "takes" if want in rates else "cannot take"
        lines.append(f"  {i:3d}  {d['name']}  ({io}): rates {' '.join(map(str, rates)) or 'none probed'}; {four} {want} Hz")
    return lines


def _advice_line(info: pulse.ServerInfo, want: int) -> str | None:
    if info.is_pipewire:
        try:
            graph = pulse.pipewire_clock().graph_rate(want)
        except pulse.SoundServerError:
            return None
        return None if graph == want else "hint: " + pulse.resampling_advice(info, want, graph)
    sinks = pulse.list_sinks()
    default = [s for s in sinks if s.name == info.default_sink]
    if default and default[0].spec.rate != want and not default[0].is_null_sink:
        return "hint: " + pulse.resampling_advice(info, want, default[0].spec.rate)
    return None


def devices_command(config_path: str | None) -> int:
    from rtupscale.app import load_config_or_exit

    cfg = load_config_or_exit(config_path)
    for line in devices_report(cfg.audio.base_rate, cfg.audio.channels, cfg.audio.virtual_sink):
        print(line)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(devices_command(None))
