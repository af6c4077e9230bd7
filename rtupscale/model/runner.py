"""ONNX Runtime sessions for contract models: providers, carried state, I/O binding.

:class:`ModelRunner` owns one session for one model file (checked against the contract on
load). :meth:`ModelRunner.stream` makes a :class:`StatefulStream` or :class:`WindowedStream`:
the per-channel-count, per-block-size object the engine calls once per block. A stream
allocates every buffer once and binds them with IOBinding, so a block costs one copy in,
one ``run_with_iobinding`` and no allocation. Carried state ping-pongs between two buffer
sets: binding A reads set 0 and writes set 1, binding B the reverse.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rtupscale import FACTOR
from rtupscale.dsp.crossfade import fade_in_curve
from rtupscale.model.contract import (
    AUDIO_IN,
    AUDIO_OUT,
    ModelContract,
    ModelError,
    TensorInfo,
    check_graph,
    check_model_path,
    parse_metadata,
)

log = logging.getLogger("rtupscale.model")

CUDA_HELP = (
    "install the CUDA 13 runtime and cuDNN 9 libraries (system CUDA, or "
    "`pip install nvidia-cublas nvidia-cudnn-cu13 nvidia-cuda-runtime`) and an NVIDIA driver >= 580"
)


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA execution provider cannot load here, in one line; None if it can.

    ``get_available_providers()`` lists CUDA whenever the package was built with it, even
    where its libraries are missing, so this loads the provider library to find out.
    """
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
    capi = Path(ort.__file__).parent / "capi"
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError as e:
        missing = str(e).split(":")[0]
        return f"CUDA libraries cannot be loaded ({missing}): {CUDA_HELP}"
    return None


def _session_options(threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    cores = os.cpu_count() or 1
    opts.intra_op_num_threads = max(1, min(threads, cores))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads steal the core the audio threads need.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def _create_session(path: Path, provider: str, threads: int) -> tuple[ort.InferenceSession, str]:
    """Create the session on the provider asked for; returns it and the provider really used."""
    if provider not in ("auto", "cuda", "cpu"):
        raise ValueError(f"provider {provider!r}: expected auto, cuda or cpu")
    opts = _session_options(threads)
    providers: list = ["CPUExecutionProvider"]
    if provider in ("auto", "cuda"):
        reason = cuda_unavailable_reason()
        if reason is None:
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif provider == "cuda":
            log.warning("model.provider is cuda but CUDA is unavailable, running on the CPU: %s", reason)
        else:
            log.info("model.provider auto: using the CPU (%s)", reason)
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: not a loadable ONNX model ({first[:200]})") from None
    used = session.get_providers()[0]
    if providers[0] == "CUDAExecutionProvider" and used != "CUDAExecutionProvider":
        log.warning("CUDA provider did not load for %s, running on the CPU", path)
    return session, ("cuda" if used == "CUDAExecutionProvider" else "cpu")


class ModelRunner:
    """One model file, loaded and checked against the contract.

    Args:
        path: the ``.onnx`` file.
        provider: ``auto``, ``cuda`` or ``cpu`` (CUDA falls back to the CPU with a log line).
        threads: intra-op threads on the CPU, capped at the number of cores.

    Raises:
        ModelError: missing or corrupt file, metadata or graph not matching the contract.
    """

    def __init__(self, path: str | os.PathLike, provider: str = "cpu", threads: int = 1):
        self.path = check_model_path(path)
        self.session, self.provider = _create_session(self.path, provider, threads)
        meta = self.session.get_modelmeta().custom_metadata_map
        try:
            self.contract: ModelContract = parse_metadata(meta)
            check_graph(
                self.contract,
                [TensorInfo(t.name, t.type, tuple(t.shape)) for t in self.session.get_inputs()],
                [TensorInfo(t.name, t.type, tuple(t.shape)) for t in self.session.get_outputs()],
            )
        except ModelError as e:
            raise ModelError(f"{self.path}: {e}") from None

    @property
    def name(self) -> str:
        return self.contract.name or self.path.stem

    @property
    def latency(self) -> int:
        """Latency of a stream of this model, input samples."""
        return self.contract.total_latency

    def stream(self, channels: int, block_size: int) -> "StatefulStream | WindowedStream":
        """A stream for ``channels`` channels and blocks of exactly ``block_size`` frames."""
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.contract.check_block_size(block_size)
        if self.contract.kind == "stateful":
            return StatefulStream(self, channels, block_size)
        return WindowedStream(self, channels, block_size)


def _bind(io: ort.IOBinding, name: str, arr: np.ndarray, output: bool) -> None:
    """Bind a preallocated C-contiguous float32 host array by pointer (no copy)."""
    assert arr.flags.c_contiguous and arr.dtype == np.float32
    fn = io.bind_output if output else io.bind_input
    fn(name, "cpu", 0, np.float32, list(arr.shape), arr.ctypes.data)


@dataclass
class StateSnapshot:
    """A copy of a stream's carried state, keyed by state input name."""

    tensors: dict[str, np.ndarray]


class StatefulStream:
    """Runs a stateful model block by block with its state carried (ping-pong buffers).

    Shape:
        ``process(block [channels, N]) -> [channels, 4N]`` (a view, overwritten next call).
    """

    def __init__(self, runner: ModelRunner, channels: int, block_size: int):
        self.runner = runner
        self.channels = channels
        self.block_size = block_size
        self.latency = runner.contract.total_latency
        c = runner.contract
        self._in = np.zeros((channels, block_size), np.float32)
        self._out = np.zeros((channels, FACTOR * block_size), np.float32)
        # _state[k][i]: buffer set k of state i. Binding k reads set k and writes set 1-k.
        self._state = [[np.zeros(s.concrete_shape(channels), np.float32) for s in c.states] for _ in range(2)]
        self._bindings = []
        for k in range(2):
            io = runner.session.io_binding()
            _bind(io, AUDIO_IN, self._in, output=False)
            _bind(io, AUDIO_OUT, self._out, output=True)
            for i, s in enumerate(c.states):
                _bind(io, s.input, self._state[k][i], output=False)
                _bind(io, s.output, self._state[1 - k][i], output=True)
            self._bindings.append(io)
        self._phase = 0
        self._probe()

    def _probe(self) -> None:
        """One run on silence, to fail now (not in the audio path) if shapes disagree."""
        try:
            self.process(self._in)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"{self.runner.path}: the model fails on a [{self.channels}, {self.block_size}] block "
                f"(expected audio_out [{self.channels}, {FACTOR * self.block_size}] and states as declared): {msg[:200]}"
            ) from None
        self.reset()

    def reset(self) -> None:
        """Zero the carried state (the caller crossfades around it)."""
        for buf in self._state[self._phase]:
            buf.fill(0.0)

    def snapshot(self) -> StateSnapshot:
        c = self.runner.contract
        return StateSnapshot({s.input: self._state[self._phase][i].copy() for i, s in enumerate(c.states)})

    def restore(self, snap: StateSnapshot) -> None:
        for i, s in enumerate(self.runner.contract.states):
            np.copyto(self._state[self._phase][i], snap.tensors[s.input])

    def process(self, block: np.ndarray) -> np.ndarray:
        np.copyto(self._in, block)
        self.runner.session.run_with_iobinding(self._bindings[self._phase])
        self._phase ^= 1
        return self._out


class WindowedStream:
    """Runs a stateless windowed model with overlap-add.

    Consecutive windows of ``window`` input frames lie ``hop = window - overlap`` apart.
    Each window emits ``4 * hop`` output frames: the first ``4 * overlap`` are the tail
    kept from the previous window crossfaded into this window's head, the rest this
    window alone. That adds ``overlap`` input frames of latency.
    """

    def __init__(self, runner: ModelRunner, channels: int, block_size: int):
        c = runner.contract
        self.runner = runner
        self.channels = channels
        self.block_size = block_size
        self.latency = c.total_latency
        self._window, self._overlap, self._hop = c.window, c.overlap, c.window - c.overlap
        self._hist = np.zeros((channels, c.window + block_size), np.float32)
        self._in = np.zeros((channels, c.window), np.float32)
        self._y = np.zeros((channels, FACTOR * c.window), np.float32)
        self._tail = np.zeros((channels, FACTOR * c.overlap), np.float32)
        self._out = np.zeros((channels, FACTOR * block_size), np.float32)
        # Amplitude-complementary: the windows carry the same (correlated) signal.
        self._fade_in = fade_in_curve(FACTOR * c.overlap, power=False).astype(np.float32)
        self._fade_out = (1.0 - self._fade_in).astype(np.float32)
        io = runner.session.io_binding()
        _bind(io, AUDIO_IN, self._in, output=False)
        _bind(io, AUDIO_OUT, self._y, output=True)
        self._io = io
        try:
            runner.session.run_with_iobinding(io)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(f"{runner.path}: the model fails on a [{channels}, {c.window}] window: {msg[:200]}") from None
        self.reset()

    def reset(self) -> None:
        self._hist.fill(0.0)
        self._tail.fill(0.0)

    def snapshot(self) -> StateSnapshot:
        return StateSnapshot({"history": self._hist.copy(), "tail": self._tail.copy()})

    def restore(self, snap: StateSnapshot) -> None:
        np.copyto(self._hist, snap.tensors["history"])
        np.copyto(self._tail, snap.tensors["tail"])

    def process(self, block: np.ndarray) -> np.ndarray:
        w, o, hop, n = self._window, self._overlap, self._hop, self.block_size
        self._hist[:, :w] = self._hist[:, n:n + w]
        self._hist[:, w:] = block
        for k in range(n // hop):
            end = w + (k + 1) * hop  # the window ends after the k-th hop of this block
            np.copyto(self._in, self._hist[:, end - w:end])
            self.runner.session.run_with_iobinding(self._io)
            out = self._out[:, FACTOR * k * hop:FACTOR * (k + 1) * hop]
            head = FACTOR * o
            np.multiply(self._tail, self._fade_out, out=out[:, :head])
            out[:, :head] += self._y[:, :head] * self._fade_in
            out[:, head:] = self._y[:, head:FACTOR * hop]
            self._tail[:] = self._y[:, FACTOR * hop:]
        return self._out
