"""The model contract: metadata schema and graph check (see docs/model-contract.md).

This module is the only thing the runtime and ``tools/`` share. It reads a model's
``metadata_props`` into a typed :class:`ModelContract` and checks the graph's inputs and
outputs against it. Every mismatch raises :class:`ModelError` with one line naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from rtupscale import FACTOR
from rtupscale.errors import UserError

CONTRACT_VERSION = 1
AUDIO_IN = "audio_in"
AUDIO_OUT = "audio_out"
STATE_IN_PREFIX = "state_in_"
STATE_OUT_PREFIX = "state_out_"
KINDS = ("stateful", "windowed")
CHANNELS_AXIS = "channels"
_PREFIX = "rtupscale."
MAX_BLOCK_MULTIPLE = 16384
"""The largest block multiple a model may declare: the largest block the config allows."""
MAX_LATENCY = 10 * 48000
"""The largest latency (input samples) a model may declare: 10 s at 48 kHz."""
MAX_WINDOW = 1 << 20
"""The largest window (input samples) a windowed model may declare."""
MAX_STATE_VALUES = 1 << 24
"""The most values (per channel) one state tensor may declare: 64 MB of float32."""


class ModelError(UserError, ValueError):
    """A model file that cannot be used: missing, corrupt, or not matching the contract."""


@dataclass(frozen=True)
class StateSpec:
    """One carried state tensor: ``input`` is fed, ``output`` is read back after each block.

    ``shape`` holds ``None`` at the channel (batch) axis, ints elsewhere.
    """

    input: str
    output: str
    shape: tuple[int | None, ...]

    def concrete_shape(self, channels: int) -> tuple[int, ...]:
        return tuple(channels if d is None else d for d in self.shape)


@dataclass(frozen=True)
class ModelContract:
    """Everything the runtime knows about a model, read from its metadata."""

    kind: str
    sample_rates: tuple[int, ...]
    factor: int
    block_multiple: int
    latency: int
    """Algorithmic latency of the model itself, input samples."""
    states: tuple[StateSpec, ...] = ()
    window: int = 0
    overlap: int = 0
    name: str = ""
    description: str = ""

    @property
    def total_latency(self) -> int:
        """Latency the runtime sees, input samples (windowed models add their overlap)."""
        return self.latency + (self.overlap if self.kind == "windowed" else 0)

    def check_rate(self, rate: int) -> None:
        if rate not in self.sample_rates:
            allowed = ", ".join(str(r) for r in self.sample_rates)
            raise ModelError(f"the model does not accept {rate} Hz input; it accepts {allowed} Hz")

    def check_block_size(self, block_size: int) -> None:
        if block_size <= 0 or block_size % self.block_multiple:
            raise ModelError(
                f"block size {block_size} is not a multiple of the model's block multiple "
                f"{self.block_multiple} (e.g. {self._nearest_blocks(block_size)})"
            )

    def _nearest_blocks(self, n: int) -> str:
        m = self.block_multiple
        lo = max(m, (n // m) * m)
        return f"{lo} or {lo + m}" if lo != n else str(lo)


def _int(meta: Mapping[str, str], key: str, minimum: int, maximum: int | None = None) -> int:
    raw = meta.get(_PREFIX + key)
    if raw is None:
        raise ModelError(f"metadata {_PREFIX}{key} is missing")
    try:
        value = int(raw[:40])
    except ValueError:
        raise ModelError(f"metadata {_PREFIX}{key}: {raw[:80]!r} is not an integer") from None
    if value < minimum:
        raise ModelError(f"metadata {_PREFIX}{key}: {value} is below the minimum {minimum}")
    if maximum is not None and value > maximum:
        raise ModelError(f"metadata {_PREFIX}{key}: {value} is above the maximum {maximum}")
    return value


def _parse_states(raw: str | None) -> tuple[StateSpec, ...]:
    key = _PREFIX + "state"
    if raw is None:
        raise ModelError(f"metadata {key} is missing (required for stateful models)")
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ModelError(f"metadata {key}: not valid JSON ({e.msg})") from None
    if not isinstance(items, list):
        raise ModelError(f"metadata {key}: expected a JSON list of {{in, out, shape}}")
    specs = []
    for i, item in enumerate(items):
        where = f"metadata {key}[{i}]"
        if not isinstance(item, dict) or set(item) != {"in", "out", "shape"}:
            raise ModelError(f"{where}: expected an object with exactly the keys in, out, shape")
        s_in, s_out, shape = item["in"], item["out"], item["shape"]
        if not (isinstance(s_in, str) and s_in.startswith(STATE_IN_PREFIX) and len(s_in) > len(STATE_IN_PREFIX)):
            raise ModelError(f"{where}.in: {s_in!r} must be named {STATE_IN_PREFIX}<name>")
        if s_out != STATE_OUT_PREFIX + s_in[len(STATE_IN_PREFIX):]:
            raise ModelError(f"{where}.out: {s_out!r} must be {STATE_OUT_PREFIX + s_in[len(STATE_IN_PREFIX):]!r}")
        if (
            not isinstance(shape, list)
            or shape.count(CHANNELS_AXIS) != 1
            or not all(d == CHANNELS_AXIS or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape)
        ):
            raise ModelError(
                f"{where}.shape: {shape!r} must list positive integers and {CHANNELS_AXIS!r} exactly once"
            )
        values = 1
        for d in shape:
            values *= 1 if d == CHANNELS_AXIS else d
        if values > MAX_STATE_VALUES:
            raise ModelError(f"{where}.shape: {values} values per channel; at most {MAX_STATE_VALUES}")
        specs.append(StateSpec(s_in, s_out, tuple(None if d == CHANNELS_AXIS else d for d in shape)))
    names = [s.input for s in specs]
    if len(set(names)) != len(names):
        raise ModelError(f"metadata {key}: a state name appears twice")
    return tuple(specs)


def parse_metadata(meta: Mapping[str, str]) -> ModelContract:
    """Build a ModelContract from ``metadata_props``. Raises ModelError on any problem."""
    version = meta.get(_PREFIX + "contract")
    if version is None:
        raise ModelError(f"metadata {_PREFIX}contract is missing: not an rtupscale model")
    if version != str(CONTRACT_VERSION):
        raise ModelError(f"metadata {_PREFIX}contract: version {version!r}; this runtime reads version {CONTRACT_VERSION}")
    kind = meta.get(_PREFIX + "kind")
    if kind not in KINDS:
        raise ModelError(f"metadata {_PREFIX}kind: {kind!r}; expected one of {', '.join(KINDS)}")
    raw_rates = meta.get(_PREFIX + "sample_rates", "")
    try:
        rates = tuple(int(r) for r in raw_rates.split(",") if r.strip())
    except ValueError:
        raise ModelError(f"metadata {_PREFIX}sample_rates: {raw_rates!r} is not a comma-separated list of Hz") from None
    if not rates or any(r <= 0 for r in rates):
        raise ModelError(f"metadata {_PREFIX}sample_rates: {raw_rates!r}; expected e.g. '44100,48000'")
    factor = _int(meta, "factor", 1)
    if factor != FACTOR:
        raise ModelError(f"metadata {_PREFIX}factor: {factor}; this runtime supports only {FACTOR}")
    block_multiple = _int(meta, "block_multiple", 1, MAX_BLOCK_MULTIPLE)
    latency = _int(meta, "latency", 0, MAX_LATENCY)
    states: tuple[StateSpec, ...] = ()
    window = overlap = 0
    if kind == "stateful":
        states = _parse_states(meta.get(_PREFIX + "state"))
    else:
        window = _int(meta, "window", 1, MAX_WINDOW)
        overlap = _int(meta, "overlap", 0, MAX_WINDOW)
        if overlap * 2 > window:
            raise ModelError(f"metadata {_PREFIX}overlap: {overlap} is more than half the window {window}")
        if window - overlap != block_multiple:
            raise ModelError(
                f"metadata {_PREFIX}block_multiple: {block_multiple}; a windowed model's must be "
                f"window - overlap = {window - overlap}"
            )
    return ModelContract(
        kind=kind,
        sample_rates=rates,
        factor=factor,
        block_multiple=block_multiple,
        latency=latency,
        states=states,
        window=window,
        overlap=overlap,
        name=meta.get(_PREFIX + "name", ""),
        description=meta.get(_PREFIX + "description", ""),
    )


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output as onnxruntime reports it."""

    name: str
    type: str
    shape: tuple[Any, ...]  # int for static dims, str or None for dynamic ones


def _is_dynamic(d: Any) -> bool:
    return not isinstance(d, int) or d < 0


def check_graph(contract: ModelContract, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> None:
    """Check the graph's inputs and outputs against the contract. Raises ModelError."""
    want_in = [AUDIO_IN] + [s.input for s in contract.states]
    want_out = [AUDIO_OUT] + [s.output for s in contract.states]
    got_in = {t.name: t for t in inputs}
    got_out = {t.name: t for t in outputs}
    for what, want, got in (("input", want_in, got_in), ("output", want_out, got_out)):
        missing = [n for n in want if n not in got]
        extra = [n for n in got if n not in want]
        if missing:
            raise ModelError(f"graph {what} {missing[0]!r} is missing (the metadata declares it)")
        if extra:
            raise ModelError(f"graph {what} {extra[0]!r} is not in the contract (allowed: {', '.join(want)})")
    for t in list(got_in.values()) + list(got_out.values()):
        if t.type != "tensor(float)":
            raise ModelError(f"graph tensor {t.name!r} has type {t.type}; the contract requires float32")
    for name in (AUDIO_IN, AUDIO_OUT):
        t = got_in.get(name) or got_out[name]
        if len(t.shape) != 2:
            raise ModelError(f"graph tensor {name!r} has rank {len(t.shape)}; expected [channels, frames]")
        if not _is_dynamic(t.shape[0]):
            raise ModelError(f"graph tensor {name!r}: the channel axis must be dynamic, got {t.shape[0]}")
    if contract.kind == "stateful" and not _is_dynamic(got_in[AUDIO_IN].shape[1]):
        raise ModelError(f"graph input {AUDIO_IN!r}: frames must be dynamic for a stateful model")
    if contract.kind == "windowed":
        frames = got_in[AUDIO_IN].shape[1]
        if not _is_dynamic(frames) and frames != contract.window:
            raise ModelError(f"graph input {AUDIO_IN!r} has {frames} frames; the metadata says window {contract.window}")
    for spec in contract.states:
        for name in (spec.input, spec.output):
            t = got_in.get(name) or got_out[name]
            if len(t.shape) != len(spec.shape):
                raise ModelError(f"graph tensor {name!r} has rank {len(t.shape)}; the metadata declares {len(spec.shape)}")
            for axis, (g, d) in enumerate(zip(t.shape, spec.shape)):
                if d is None and not _is_dynamic(g):
                    raise ModelError(f"graph tensor {name!r}: axis {axis} is the channel axis and must be dynamic, got {g}")
                if d is not None and not _is_dynamic(g) and g != d:
                    raise ModelError(f"graph tensor {name!r}: axis {axis} is {g}; the metadata declares {d}")


def check_model_path(path: str | Path) -> Path:
    """The path as a Path if it names an existing file; a one-line ModelError otherwise."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such model file")
    if not p.is_file():
        raise ModelError(f"{p}: not a file")
    return p
