"""The sound server (PulseAudio, or PipeWire through pipewire-pulse), driven with ``pactl``.

Why ``pactl`` and not libpulse bindings: it is installed wherever either server is, its JSON
output (``pactl -f json``, PulseAudio >= 16) is stable, and none of this runs on the audio
path: it is called at start, on reload, on recovery and when ``status`` asks for the rate
check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

PACTL_TIMEOUT_S = 5.0
"""A sound server that does not answer ``pactl`` within this many seconds counts as down."""


class SoundServerError(RuntimeError):
    """The sound server is missing, down, or refused a command."""


@dataclass(frozen=True)
class ServerInfo:
    name: str  # "pulseaudio", or "PulseAudio (on PipeWire 0.3.65)"
    version: str
    default_sink: str
    default_source: str

    @property
    def is_pipewire(self) -> bool:
        return "pipewire" in self.name.lower()


@dataclass(frozen=True)
class SampleSpec:
    """A parsed ``float32le 2ch 176400Hz``."""

    format: str
    channels: int
    rate: int

    @classmethod
    def parse(cls, text: str) -> "SampleSpec":
        m = re.fullmatch(r"\s*(\S+)\s+(\d+)ch\s+(\d+)Hz\s*", text)
        if not m:
            raise SoundServerError(f"cannot parse sample specification {text!r}")
        return cls(m.group(1), int(m.group(2)), int(m.group(3)))

    def __str__(self) -> str:
        return f"{self.format} {self.channels}ch {self.rate}Hz"


@dataclass(frozen=True)
class ServerDevice:
    """A sink or a source of the sound server."""

    index: int
    name: str
    description: str
    spec: SampleSpec
    driver: str
    monitor_of: str | None = None  # for a source: the sink it monitors

    @property
    def is_null_sink(self) -> bool:
        return "null-sink" in self.driver


@dataclass(frozen=True)
class StreamRoute:
    """What the server does with one of our streams (a sink input or a source output)."""

    index: int
    device: str  # sink or source name
    stream_spec: SampleSpec
    device_spec: SampleSpec
    resample_method: str  # "copy" when nothing is resampled

    @property
    def resampled(self) -> bool:
        return self.stream_spec.rate != self.device_spec.rate or self.resample_method not in (
            "copy",
            "n/a",
            "",
        )


def pactl_path() -> str | None:
    return shutil.which("pactl")


def _pactl(*args: str, json_out: bool = True) -> object:
    exe = pactl_path()
    if exe is None:
        raise SoundServerError("pactl not found: install pulseaudio-utils (or pipewire-pulse)")
    cmd = [exe, *(["-f", "json"] if json_out else []), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PACTL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SoundServerError(f"sound server did not answer `{' '.join(cmd)}` in {PACTL_TIMEOUT_S:g} s") from exc
    if proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise SoundServerError(f"`pactl {' '.join(args)}` failed: {msg[-1] if msg else proc.returncode}")
    if not json_out:
        return proc.stdout
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise SoundServerError(f"`pactl {' '.join(args)}`: output is not JSON (pactl older than 16?)") from exc


def server_info() -> ServerInfo:
    """Raises SoundServerError when no server answers."""
    d = _pactl("info")
    assert isinstance(d, dict)
    return ServerInfo(
        name=str(d.get("server_name", "")),
        version=str(d.get("server_version", "")),
        default_sink=str(d.get("default_sink_name") or ""),
        default_source=str(d.get("default_source_name") or ""),
    )


def _devices(kind: str) -> list[ServerDevice]:
    rows = _pactl("list", kind)
    assert isinstance(rows, list)
    out = []
    for r in rows:
        monitor_of = None
        if kind == "sources":
            m = r.get("monitor_source")  # for a source: the sink it monitors
            monitor_of = m if m and m != "n/a" else None
        out.append(
            ServerDevice(
                index=int(r["index"]),
                name=str(r["name"]),
                description=str(r.get("description", "")),
                spec=SampleSpec.parse(r["sample_specification"]),
                driver=str(r.get("driver", "")),
                monitor_of=monitor_of,
            )
        )
    return out


def list_sinks() -> list[ServerDevice]:
    return _devices("sinks")


def list_sources() -> list[ServerDevice]:
    return _devices("sources")


def load_null_sink(name: str, rate: int, channels: int) -> int:
    """Create a virtual sink ``name`` (float32, ``rate`` Hz); returns its module index."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SoundServerError(f"virtual sink name {name!r}: allowed are letters, digits, _ . -")
    out = _pactl(
        "load-module",
        "module-null-sink",
        f"sink_name={name}",
        f"rate={rate}",
        f"channels={channels}",
        "format=float32le",
        f"sink_properties=device.description=rtupscale-input-{rate}Hz",
        json_out=False,
    )
    try:
        return int(str(out).strip())
    except ValueError as exc:
        raise SoundServerError(f"load-module module-null-sink: unexpected answer {out!r}") from exc


def restart_sink_clock(name: str) -> None:
    """Suspend sink ``name`` and resume it at once: a PulseAudio null sink restarts its clock
    on resume, and renders from then on in blocks of the latency its streams ask for.

    A null sink just loaded has rendered its first 2 s (its largest latency) in one go and
    sleeps until they have played: a stream moved onto it in that time gets no data for up
    to 2 s. Restarted once a low-latency stream (the daemon's capture of its monitor) is
    connected, it renders at once (measured: 1.8 s -> 0.02 s from a move to the first
    sound on the monitor).
    """
    _pactl("suspend-sink", name, "1", json_out=False)
    _pactl("suspend-sink", name, "0", json_out=False)


def unload_module(index: int) -> None:
    _pactl("unload-module", str(index), json_out=False)


def null_sink_module(name: str) -> int | None:
    """Index of the module-null-sink whose sink is ``name``, if one is loaded.

    (``pactl -f json list modules`` has no module index in PulseAudio 16: the short text
    listing, ``INDEX<TAB>NAME<TAB>ARGUMENT``, has.)
    """
    text = str(_pactl("list", "modules", "short", json_out=False))
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[1] == "module-null-sink" and re.search(
            rf"(^|\s)sink_name={re.escape(name)}(\s|$)", parts[2]
        ):
            return int(parts[0])
    return None


def _own_streams(kind: str, pid: int) -> list[dict]:
    rows = _pactl("list", kind)
    assert isinstance(rows, list)
    return [r for r in rows if str(r.get("properties", {}).get("application.process.id")) == str(pid)]


def playback_route(pid: int | None = None) -> StreamRoute | None:
    """How the server carries this process's playback stream to its sink (None: no stream)."""
    pid = os.getpid() if pid is None else pid
    streams = _own_streams("sink-inputs", pid)
    if not streams:
        return None
    sinks = {str(s.index): s for s in list_sinks()}
    r = streams[-1]
    sink = sinks.get(str(r.get("sink")))
    if sink is None:
        return None
    return StreamRoute(
        index=int(r["index"]),
        device=sink.name,
        stream_spec=SampleSpec.parse(r["sample_specification"]),
        device_spec=sink.spec,
        resample_method=str(r.get("resample_method", "")),
    )


def capture_route(pid: int | None = None) -> StreamRoute | None:
    """How the server carries the source to this process's capture stream (None: no stream)."""
    pid = os.getpid() if pid is None else pid
    streams = _own_streams("source-outputs", pid)
    if not streams:
        return None
    sources = {str(s.index): s for s in list_sources()}
    r = streams[-1]
    src = sources.get(str(r.get("source")))
    if src is None:
        return None
    return StreamRoute(
        index=int(r["index"]),
        device=src.name,
        stream_spec=SampleSpec.parse(r["sample_specification"]),
        device_spec=src.spec,
        resample_method=str(r.get("resample_method", "")),
    )


@dataclass(frozen=True)
class AppStream:
    """An app's playback stream (a sink input): where it plays, and who it is."""

    index: int
    sink: str  # the sink's name
    app: str  # application.name (else the binary's name)
    pid: int | None
    media: str  # media.name
    node: str  # node.name on PipeWire (pw-cat's, pipewire-pulse's), else ""
    rate: int = 0  # the app's own rate (its stream's sample spec; 0: not listed)
    corked: bool = False  # paused by the app


def _spec_rate(text) -> int:
    try:
        return SampleSpec.parse(str(text)).rate
    except SoundServerError:
        return 0


def list_app_streams() -> list[AppStream]:
    """Every playback stream on the server, with the name of the sink it plays to."""
    rows = _pactl("list", "sink-inputs")
    assert isinstance(rows, list)
    sinks = {str(s.index): s.name for s in list_sinks()}
    out = []
    for r in rows:
        p = r.get("properties", {}) or {}
        pid = p.get("application.process.id")
        out.append(AppStream(
            index=int(r["index"]), sink=sinks.get(str(r.get("sink")), ""),
            app=str(p.get("application.name") or p.get("application.process.binary") or ""),
            pid=int(pid) if str(pid or "").isdigit() else None,
            media=str(p.get("media.name", "")), node=str(p.get("node.name", "")),
            rate=_spec_rate(r.get("sample_specification")), corked=bool(r.get("corked", False)),
        ))
    return out


def list_monitor_readers(sink: str) -> list[AppStream]:
    """The recording streams on ``sink``'s monitor (a recorder, a level meter, a visualiser),
    each as an :class:`AppStream` whose ``sink`` is ``sink``. On PipeWire they run in the
    sink's graph and hold its rate as a player does."""
    monitors = {str(src.index) for src in list_sources() if src.monitor_of == sink}
    if not monitors:
        return []
    rows = _pactl("list", "source-outputs")
    assert isinstance(rows, list)
    out = []
    for r in rows:
        if str(r.get("source")) not in monitors:
            continue
        p = r.get("properties", {}) or {}
        pid = p.get("application.process.id")
        out.append(AppStream(
            index=int(r["index"]), sink=sink,
            app=str(p.get("application.name") or p.get("application.process.binary") or ""),
            pid=int(pid) if str(pid or "").isdigit() else None,
            media=str(p.get("media.name", "")), node=str(p.get("node.name", "")),
            rate=_spec_rate(r.get("sample_specification")), corked=bool(r.get("corked", False)),
        ))
    return out


def move_app_stream(index: int, sink: str) -> None:
    """Move playback stream ``index`` to sink ``sink``."""
    _pactl("move-sink-input", str(index), sink, json_out=False)


@dataclass(frozen=True)
class StreamLatency:
    """The server's own account of our streams' latencies, s (None: no such stream)."""

    capture_buffer: float | None  # source output: data waiting in the server for us
    source: float | None  # the source's latency (for a monitor: how far ahead the sink renders)
    playback_buffer: float | None  # sink input: our data queued in the server
    sink: float | None  # the sink's latency (to the DAC, or to the null sink's clock)


def stream_latencies(pid: int | None = None) -> StreamLatency:
    pid = os.getpid() if pid is None else pid
    out = _own_streams("sink-inputs", pid)
    inp = _own_streams("source-outputs", pid)

    def us(rows: list[dict], key: str) -> float | None:
        if not rows or key not in rows[-1]:
            return None
        return float(rows[-1][key]) / 1e6

    return StreamLatency(
        capture_buffer=us(inp, "buffer_latency_usec"),
        source=us(inp, "source_latency_usec"),
        playback_buffer=us(out, "buffer_latency_usec"),
        sink=us(out, "sink_latency_usec"),
    )


@dataclass(frozen=True)
class PipeWireClock:
    """PipeWire's graph clock settings (``pw-metadata -n settings``).

    pipewire-pulse reports a sink's own format (a null sink made at 176400 Hz says 176400),
    but the graph that drives it runs at one rate for every node: ``clock.force-rate`` when
    set, else the rate the first stream asks for if it is among ``clock.allowed-rates``,
    else ``clock.rate`` (48000 by default), and every stream at another rate is resampled.
    """

    rate: int
    allowed: tuple[int, ...]
    force_rate: int

    @classmethod
    def parse(cls, text: str) -> "PipeWireClock":
        values = dict(re.findall(r"key:'([^']+)' value:'([^']*)'", text))
        if "clock.rate" not in values:
            raise SoundServerError("pw-metadata -n settings lists no clock.rate")
        rate = int(values["clock.rate"])
        allowed = tuple(int(v) for v in re.findall(r"\d+", values.get("clock.allowed-rates", ""))) or (rate,)
        return cls(rate, allowed, int(values.get("clock.force-rate", "0") or 0))

    def __str__(self) -> str:
        force = f", force-rate {self.force_rate}" if self.force_rate else ""
        return f"clock.rate {self.rate}, allowed-rates {' '.join(map(str, self.allowed))}{force}"

    def graph_rate(self, wanted: int) -> int:
        """The rate the graph runs at for a stream that wants ``wanted`` (best case: the
        graph switches only while no other stream holds it at another rate)."""
        if self.force_rate:
            return self.force_rate
        return wanted if wanted in self.allowed else self.rate


def pipewire_clock() -> PipeWireClock:
    """Raises SoundServerError when ``pw-metadata`` is missing or does not answer."""
    exe = shutil.which("pw-metadata")
    if exe is None:
        raise SoundServerError("pw-metadata not found (install pipewire-bin) to read PipeWire's graph rate")
    try:
        proc = subprocess.run([exe, "-n", "settings", "0"], capture_output=True, text=True, timeout=PACTL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SoundServerError(f"pw-metadata did not answer in {PACTL_TIMEOUT_S:g} s") from exc
    return PipeWireClock.parse(proc.stdout)


@dataclass(frozen=True)
class PipeWireNode:
    """A PipeWire node as ``pw-dump`` shows it: the rate it really runs at.

    A device node (a sound card's sink, or a null sink) drives its own graph: the rate of its
    negotiated ``Format`` is the rate that reaches the DAC, whatever ``clock.allowed-rates``
    would allow (the graph switches only while nothing else holds it, and ``clock.force-rate``
    pins it). ``pactl`` shows the same rate in the sink's sample spec, but only this says
    whether it is running."""

    id: int
    name: str
    state: str  # "running", "idle", "suspended", ...
    rate: int | None  # of its negotiated Format (None: no format yet)
    driver: bool
    latency: str | None = None  # node.latency, "FRAMES/RATE", as a stream asked for it
    pid: int | None = None  # application.process.id (a client's stream)
    media_class: str = ""  # "Audio/Sink", "Stream/Output/Audio", ...

    @property
    def running(self) -> bool:
        return self.state == "running"


def parse_pw_dump(objects: list | str) -> list[PipeWireNode]:
    """The nodes of a ``pw-dump``: its JSON list, or its text, which may hold several lists
    (pw-dump appends the changes it saw while dumping; later ones win, an object with
    ``info: null`` is gone). Names are not unique: our virtual sink and both our streams
    are all called ``rtupscale`` (see :func:`device_node`)."""
    if isinstance(objects, str):
        dec, text, pos, merged = json.JSONDecoder(), objects, 0, []
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            chunk, pos = dec.raw_decode(text, pos)
            merged.extend(chunk)
        objects = merged
    by_id: dict[int, dict] = {}
    for o in objects:
        by_id[int(o["id"])] = o
    out = []
    for o in by_id.values():
        if o.get("type") != "PipeWire:Interface:Node" or not o.get("info"):
            continue
        info = o["info"]
        props = info.get("props") or {}
        name = props.get("node.name")
        if not name:
            continue
        fmt = (info.get("params") or {}).get("Format") or []
        rate = fmt[0].get("rate") if fmt and isinstance(fmt[0], dict) else None
        out.append(PipeWireNode(
            id=int(o["id"]), name=str(name), state=str(info.get("state", "")),
            rate=int(rate) if isinstance(rate, int) else None,
            driver=bool(props.get("node.driver", False)), latency=props.get("node.latency"),
            pid=int(props["application.process.id"]) if str(props.get("application.process.id", "")).isdigit() else None,
            media_class=str(props.get("media.class", "")),
        ))
    return out


def device_node(nodes: list[PipeWireNode], name: str) -> PipeWireNode | None:
    """The sink node called ``name`` (not a stream of that name)."""
    return next((n for n in nodes if n.name == name and n.media_class.startswith("Audio/")), None)


def pipewire_quantum_s(node_latency: str | None, graph_rate: int) -> float:
    """The graph quantum a stream's ``node.latency`` ("FRAMES/RATE") gives at ``graph_rate``, s:
    PipeWire runs the graph in the largest power of two of frames not above the smallest
    latency its streams ask for (0 when unknown)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", node_latency or "")
    if not m or not graph_rate or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        return 0.0
    frames = int(m.group(1)) * graph_rate / int(m.group(2))
    return float(1 << max(0, int(frames).bit_length() - 1)) / graph_rate


def pipewire_nodes() -> list[PipeWireNode]:
    """Every PipeWire node (``pw-dump``, once: called when the server says a sink
    changed, never on a timer). Raises SoundServerError when ``pw-dump`` is missing or fails."""
    exe = shutil.which("pw-dump")
    if exe is None:
        raise SoundServerError("pw-dump not found (install pipewire-bin) to read the rate PipeWire's DAC node runs at")
    try:
        proc = subprocess.run([exe], capture_output=True, text=True, timeout=PACTL_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SoundServerError(f"pw-dump did not answer in {PACTL_TIMEOUT_S:g} s") from exc
    if proc.returncode != 0:
        raise SoundServerError(f"pw-dump failed: {(proc.stderr or '').strip()[-200:]}")
    try:
        return parse_pw_dump(proc.stdout)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise SoundServerError(f"pw-dump: unexpected output ({exc})") from exc


def pipewire_verdict(node: PipeWireNode | None, clock: PipeWireClock | None, wanted_rate: int,
                     sink_rate: int | None = None) -> tuple[int | None, str, str]:
    """What reaches a PipeWire DAC node: ``(rate, how it was found, fix)``; ``fix`` is empty
    when ``wanted_rate`` reaches it. The node's running rate decides; without the node
    (pw-dump failed), the sink's format as pipewire-pulse reports it (``sink_rate``: it
    follows the node's); only a node that does not run falls back to what the clock settings
    predict."""
    if node is not None and node.running and node.rate:
        rate, how = node.rate, f"DAC node {node.name} runs at {node.rate} Hz"
    elif node is None and sink_rate:
        rate, how = sink_rate, f"the DAC sink's format says {sink_rate} Hz"
    elif clock is not None:
        rate, how = clock.graph_rate(wanted_rate), f"DAC node not running; the clock settings predict {clock.graph_rate(wanted_rate)} Hz"
    else:
        return None, "DAC node not running and the clock settings unknown", ""
    if clock is not None:
        how += f" ({clock})"
    if rate == wanted_rate:
        return rate, how, ""
    if clock is not None and clock.force_rate and clock.force_rate != wanted_rate:
        fix = (f"PipeWire's clock.force-rate pins the graph at {clock.force_rate} Hz: "
               f"`pw-metadata -n settings 0 clock.force-rate 0` lets it run at {wanted_rate} Hz")
    elif clock is not None and wanted_rate in clock.allowed:
        fix = (f"another stream holds the DAC's graph at {rate} Hz (PipeWire switches the graph rate only while "
               f"nothing else plays on it): stop it or send it to the rtupscale sink; the graph then runs at {wanted_rate} Hz")
    else:
        fix = ""
    return rate, how, fix


def resampling_advice(info: ServerInfo, wanted_rate: int, device_rate: int) -> str:
    """One line telling the user what to change so that ``wanted_rate`` reaches the DAC."""
    if info.is_pipewire:
        return (
            f"PipeWire runs its graph at {device_rate} Hz and resamples our {wanted_rate} Hz: add "
            f"{wanted_rate} to default.clock.allowed-rates (e.g. ~/.config/pipewire/pipewire.conf.d/"
            f"rtupscale.conf: context.properties = {{ default.clock.allowed-rates = "
            f"[ 44100 48000 176400 192000 ] }}) and restart PipeWire"
        )
    return (
        f"PulseAudio runs the DAC sink at {device_rate} Hz and resamples our {wanted_rate} Hz: set "
        f"'avoid-resampling = yes' and 'alternate-sample-rate = {wanted_rate}' in "
        f"~/.config/pulse/daemon.conf (the DAC must accept {wanted_rate} Hz), or set "
        f"audio.playback to a raw ALSA device (hw:...)"
    )
