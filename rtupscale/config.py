"""Typed configuration: load, validate, diff.

Every section is a frozen dataclass. Loading rejects unknown keys, wrong types and
out-of-range values; each problem becomes one line that names the key, e.g.
``latency.blok_size: unknown key``. All problems are collected, not just the first.
The model's own parameters (rates, hop, latency, state) live in the model's metadata,
never here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from rtupscale.errors import UserError

BASE_RATES = (44100, 48000)
RATE_AUTO = "auto"
MAX_LIST_ITEMS = 256
BLOCK_SIZE_RANGE = (16, 16384)
"""Allowed input frames per block (``latency.block_size`` and ``--block-size``)."""
MAX_CONFIG_BYTES = 1 << 20
"""A config file larger than this (1 MiB) is refused unread: the shipped one is 6 kB."""
MAX_YAML_NODES = 10_000
"""A config whose YAML holds more nodes (scalars, lists, mappings) than this is refused."""
MAX_ECHO_CHARS = 80
"""A value quoted in an error is cut to this many characters."""
PROVIDERS = ("auto", "cuda", "cpu")
BACKENDS = ("auto", "pulse", "portaudio")


class ConfigError(UserError, ValueError):
    """Raised with every problem found; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str], source: str = "config"):
        self.errors = list(errors)
        self.source = source
        super().__init__(f"{source}: " + "; ".join(self.errors))


@dataclass(frozen=True)
class AudioConfig:
    capture: str = "auto"
    """``auto``: the monitor of the virtual sink the daemon creates; else a device name substring or index."""
    playback: str = "default"
    """``default``: the sound server's default sink; else a device name substring or index."""
    virtual_sink: str = "rtupscale"
    """Name of the virtual sink the daemon creates for ``capture: auto``."""
    rate: int | str = 44100
    """Base rate of the virtual sink, Hz (44100 or 48000; playback runs at 4x), or ``auto``:
    the virtual sink follows the rate its apps play at (it starts at 44100)."""
    channels: int = 2
    backend: str = "auto"
    """How the streams reach the devices: ``pulse`` (native libpulse streams, for devices on
    a PulseAudio or pipewire-pulse server), ``portaudio`` (PortAudio, through ALSA's pulse
    plugin for server devices), ``auto`` (``pulse`` where both devices are on the server)."""

    @property
    def follows_rate(self) -> bool:
        """``rate: auto``: the virtual sink follows its apps' rate."""
        return self.rate == RATE_AUTO

    @property
    def base_rate(self) -> int:
        """The rate to open at: ``rate``, or 44100 for ``auto`` (until an app says otherwise)."""
        return BASE_RATES[0] if self.rate == RATE_AUTO else int(self.rate)


@dataclass(frozen=True)
class LatencyConfig:
    block_size: int = 256
    """Input frames per block; a multiple of the model's block multiple."""
    prefill_ms: float = 2.0
    """Output held in the playback ring, ms: the hand-off from the worker's blocks to the
    native stream's requests (the server's queue is the cushion there); on PortAudio the
    cushion against the device's periods."""
    crossfade_ms: float = 20.0
    """Length of every crossfade (bypass toggle, state reset, model swap), ms."""
    capture_buffer_ms: float = 4.0
    """The capture device's buffer, ms: the server's capture fragment (``pulse`` backend), or
    PortAudio's suggested input latency."""
    playback_buffer_ms: float = 27.0
    """The playback device's buffer, ms: our stream's queue in the server (``pulse``
    backend; it covers stalls of the server and of the worker), or PortAudio's suggested
    output latency."""
    keep_cpus_awake: bool = False
    """Keep every CPU out of its idle halt while running (one ``SCHED_IDLE`` spinner per
    CPU; see :mod:`rtupscale.audio.cpuawake`): fewer late wake-ups where an idle CPU is
    slow to wake (virtual machines), for the power of CPUs that never idle."""


@dataclass(frozen=True)
class ModelConfig:
    path: str = "none"
    """Path to the .onnx model (relative paths are relative to the config file), or ``none``."""
    provider: str = "auto"
    """``auto``, ``cuda`` or ``cpu``."""
    threads: int = 1
    """ONNX Runtime intra-op threads on the CPU (capped at the number of cores)."""
    cuda_graph: bool = True
    """On CUDA, run each block as a captured CUDA graph (much lower per-block overhead)."""


@dataclass(frozen=True)
class OutputConfig:
    ceiling_dbfs: float = -0.3
    """No output sample exceeds this level (soft clip above ``ceiling - 1 dB``)."""
    dither: bool = True
    """TPDF dither when writing integer samples (file mode)."""


@dataclass(frozen=True)
class RoutingConfig:
    all_apps: bool = False
    """Move every app's playback stream to the virtual sink, new ones too, and put each back
    on its sink when the daemon stops (``audio.capture: auto`` only)."""
    exclude: tuple[str, ...] = ()
    """Apps ``all_apps`` leaves alone: application names (``application.name``, else the
    binary's name), matched whole and ignoring case."""


@dataclass(frozen=True)
class ControlConfig:
    socket: str = "auto"
    """Control socket path; ``auto`` = ``$XDG_RUNTIME_DIR/rtupscale.sock``."""
    metrics_port: int = 0
    """Prometheus metrics on 127.0.0.1:PORT; 0 = off."""


@dataclass(frozen=True)
class Config:
    audio: AudioConfig = field(default_factory=AudioConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    source: str = ""
    """The file this config was loaded from ("" for defaults)."""

    def model_path(self) -> Path | None:
        """The model path resolved against the config file's folder; None for ``none``."""
        if self.model.path.strip().lower() == "none":
            return None
        p = Path(os.path.expanduser(self.model.path))
        if not p.is_absolute() and self.source:
            p = Path(self.source).resolve().parent / p
        return p


# Range checks: key -> (predicate, description of what is allowed).
_CHECKS: dict[str, tuple[Any, str]] = {
    "audio.rate": (lambda v: v in BASE_RATES or v == RATE_AUTO, f"one of {', '.join(map(str, BASE_RATES))}, {RATE_AUTO}"),
    "audio.channels": (lambda v: 1 <= v <= 32, "an integer from 1 to 32"),
    "audio.capture": (lambda v: v.strip() != "", "a non-empty string"),
    "audio.playback": (lambda v: v.strip() != "", "a non-empty string"),
    "audio.virtual_sink": (
        lambda v: v != "" and all(c.isalnum() or c in "_-." for c in v),
        "a sink name of letters, digits, '_', '-', '.'",
    ),
    "audio.backend": (lambda v: v in BACKENDS, f"one of {', '.join(BACKENDS)}"),
    "latency.block_size": (
        lambda v: BLOCK_SIZE_RANGE[0] <= v <= BLOCK_SIZE_RANGE[1],
        f"an integer from {BLOCK_SIZE_RANGE[0]} to {BLOCK_SIZE_RANGE[1]}",
    ),
    "latency.prefill_ms": (lambda v: 0 <= v <= 2000, "a number from 0 to 2000"),
    "latency.crossfade_ms": (lambda v: 0.5 <= v <= 1000, "a number from 0.5 to 1000"),
    "latency.capture_buffer_ms": (lambda v: 1 <= v <= 500, "a number from 1 to 500"),
    "latency.playback_buffer_ms": (lambda v: 1 <= v <= 500, "a number from 1 to 500"),
    "model.provider": (lambda v: v in PROVIDERS, f"one of {', '.join(PROVIDERS)}"),
    "model.threads": (lambda v: 1 <= v <= 256, "an integer from 1 to 256"),
    "model.path": (lambda v: v.strip() != "", "a path to an .onnx file, or none"),
    "output.ceiling_dbfs": (lambda v: -40 <= v <= 0, "a number from -40 to 0"),
    "control.metrics_port": (lambda v: v == 0 or 1024 <= v <= 65535, "0 (off) or a port from 1024 to 65535"),
    "control.socket": (lambda v: v.strip() != "", "auto, or a path"),
    "routing.exclude": (lambda v: all(0 < len(n.strip()) <= 200 for n in v), "a list of application names (1 to 200 characters each)"),
}

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               int | str: "an integer or a keyword", tuple[str, ...]: "a list of strings"}


def short_repr(value: Any, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters (an ellipsis marks the cut).

    Containers are summarised by type and length first, so that a huge nested value is
    never expanded into a string."""
    if isinstance(value, (list, dict, tuple, set)):
        return f"a {type(value).__name__} of {len(value)} items"
    text = repr(value[: limit + 1] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coerce(key: str, value: Any, typ: type, errors: list[str]) -> Any:
    """Check one scalar's type; ints are accepted where floats are expected."""
    if typ is bool:
        ok = isinstance(value, bool)
    elif typ is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif typ is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif typ == tuple[str, ...]:  # a YAML list of names
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value) and len(value) <= MAX_LIST_ITEMS
        value = tuple(value) if ok else value
    elif typ == int | str:  # a number or a keyword (audio.rate: auto)
        ok = isinstance(value, (int, str)) and not isinstance(value, bool)
    elif typ is str:
        # YAML reads a bare index (playback: 3) as an int; a device index is allowed.
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        value = str(value) if ok else value
    else:  # pragma: no cover - only the types above are used
        raise TypeError(typ)
    if not ok:
        errors.append(f"{key}: expected {_TYPE_NAMES[typ]}, got {short_repr(value)}")
        return None
    check = _CHECKS.get(key)
    if check and not check[0](value):
        errors.append(f"{key}: {short_repr(value)} is not allowed; expected {check[1]}")
        return None
    return value


def _build(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{prefix}: expected a mapping of keys, got {type(data).__name__}")
        return cls()
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls) if f.name != "source"}
    for key in data:
        if key not in known:
            allowed = ", ".join(sorted(known))
            errors.append(f"{prefix + '.' if prefix else ''}{short_repr(key) if not isinstance(key, str) else key[:MAX_ECHO_CHARS]}: unknown key (allowed: {allowed})")
    kwargs = {}
    for f in fields(cls):
        if f.name == "source" or f.name not in data:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            kwargs[f.name] = _build(typ, data[f.name], key, errors)
        else:
            value = _coerce(key, data[f.name], typ, errors)
            if value is not None:
                kwargs[f.name] = value
    return cls(**kwargs)


def parse_config(data: Any, source: str = "") -> Config:
    """Build a Config from parsed YAML. Raises ConfigError listing every problem."""
    errors: list[str] = []
    cfg = _build(Config, data, "", errors)
    if errors:
        raise ConfigError(errors, source or "config")
    return dataclasses.replace(cfg, source=source)


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses aliases and counts nodes.

    Aliases (``*name``) are refused outright: a config needs none, and each one can double
    what the file expands to (a "billion laughs" of a few hundred bytes). Nodes beyond
    ``MAX_YAML_NODES`` are refused too, so no file under the size limit builds more than
    a few thousand objects."""

    def __init__(self, stream):
        super().__init__(stream)
        self._nodes = 0

    def compose_node(self, parent, index):  # noqa: D401 (PyYAML's name)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"YAML aliases (*{event.anchor[:MAX_ECHO_CHARS]}) are not allowed in the config"
                                 f" at line {event.start_mark.line + 1}; write the value out")
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise yaml.YAMLError(f"more than {MAX_YAML_NODES} YAML nodes; a config has a few dozen")
        return super().compose_node(parent, index)


def _read_text(p: Path) -> str:
    """The file's text, decoded as UTF-8; ConfigError if missing, unreadable, too large or not UTF-8."""
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError([f"{p}: no such file"], str(p)) from None
    except IsADirectoryError:
        raise ConfigError([f"{p}: is a folder, not a config file"], str(p)) from None
    except OSError as e:
        raise ConfigError([f"{p}: cannot read ({e.strerror})"], str(p)) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{p}: larger than {MAX_CONFIG_BYTES >> 20} MiB; a config is a few kB"], str(p))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise ConfigError(
            [f"{p}: not UTF-8: byte 0x{raw[e.start]:02x} at line {line}, column {column}; save the file as UTF-8"],
            str(p),
        ) from None


def _parse_yaml(text: str, p: Path) -> Any:
    """The YAML document in ``text`` (aliases refused, nodes counted); ConfigError if invalid."""
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise ConfigError([f"{p}: not valid YAML{where}: {problem[:200]}"], str(p)) from None
    except RecursionError:
        raise ConfigError([f"{p}: nested too deeply; a config has two levels"], str(p)) from None


def load_config(path: str | os.PathLike) -> Config:
    """Read and validate a YAML config file.

    The file must be UTF-8, at most ``MAX_CONFIG_BYTES``, without YAML aliases, and hold
    at least one key: an empty or comments-only file is refused (a truncated file must not
    silently mean "all defaults", model none).

    Raises:
        ConfigError: missing, unreadable, oversized or non-UTF-8 file, bad YAML, no keys,
            or any invalid key or value.
    """
    p = Path(path)
    data = _parse_yaml(_read_text(p), p)
    if data is None or data == {}:
        raise ConfigError(
            [f"{p}: the file has no keys (empty, or comments only); write at least one section, e.g. model:"],
            str(p),
        )
    return parse_config(data, str(p))


def diff_configs(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs, e.g. ``["latency.block_size"]``."""
    changed = []
    for f in fields(Config):
        if f.name == "source":
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        for g in fields(a):
            if getattr(a, g.name) != getattr(b, g.name):
                changed.append(f"{f.name}.{g.name}")
    if old.model_path() != new.model_path() and "model.path" not in changed:
        changed.append("model.path")
    return changed

