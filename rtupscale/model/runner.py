"""ONNX Runtime sessions for contract models: providers, carried state, I/O binding.

:class:`ModelRunner` owns one session for one model file (checked against the contract on
load). :meth:`ModelRunner.stream` makes a :class:`StatefulStream` or :class:`WindowedStream`:
the per-channel-count, per-block-size object the engine calls once per block. A stream
allocates every buffer once and binds them with IOBinding, so a block costs one copy in,
one ``run_with_iobinding`` and no allocation. Carried state ping-pongs between two buffer
sets: binding A reads set 0 and writes set 1, binding B the reverse.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from rtupscale import FACTOR
from rtupscale.dsp.crossfade import crossfade, fade_in_curve
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
    "install the CUDA 13 and cuDNN 9 runtime libraries: `pip install 'rtupscale[cuda]'` "
    "(NVIDIA's wheels) or system CUDA 13 + cuDNN 9, with an NVIDIA driver >= 580"
)


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA execution provider cannot load here, in one line; None if it can.

    ``get_available_providers()`` lists CUDA whenever the package was built with it, even
    where its libraries are missing, so this loads the provider library to find out.
    """
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"
    capi = Path(ort.__file__).parent / "capi"
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None and importlib.util.find_spec("nvidia") is not None:
        # NVIDIA's pip wheels (the `cuda` extra) are not on the loader's path: load them.
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                preload()
            except Exception:  # noqa: BLE001 - what is missing is diagnosed just below
                pass
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError as e:
        missing = str(e).split(":")[0]
        return f"CUDA libraries cannot be loaded ({missing}): {CUDA_HELP}"
    return None


CUDA_OPTIONS = {"use_tf32": "0"}
"""TF32 off: on an H200 the CUDA provider's default (TF32 matmuls) put an 11M-parameter
model 1.0e-3 away from the CPU's output over 100 blocks; full float32 keeps the GPU and the
CPU (and streaming and offline) within the contract's 1e-4 (1.9e-6 measured). The cost was
not measurable there: block 256 p99 0.248 ms without TF32, 0.250 ms with it (CUDA graphs)."""

REST_FRAMES = 96000
"""A stateful stream starts, and resets, at its model's rest state: the state after at least
this many frames of digital silence (2 s at 48 kHz) run from zeros in the stream's own
blocks (see :meth:`StatefulStream.reset`). A model whose state is only input history (an
FIR) rests at zeros; a recurrent one rests where silence leaves it, which is also where a
running stream's state sits before a song. Started from zeros instead, a recurrent state
can take seconds to join the path that any audio history leads to: measured on
``rtupscale-restore-v2-hop64``, 6.2 dB (SNR over 50 ms) 3.5 s into a signal between a zero
start and a start after 5 s of silence or 2 s of noise, while those two agree to 138 dB."""


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


def _create_session(
    path: Path, provider: str, threads: int, cuda_graph: bool = True
) -> tuple[ort.InferenceSession, str, bool]:
    """Create the session on the provider asked for.

    Returns the session, the provider really used (``cuda`` or ``cpu``) and whether CUDA
    graphs are enabled. A model that CUDA graphs cannot capture (some node placed on the
    CPU) falls back to plain CUDA with a log line.
    """
    if provider not in ("auto", "cuda", "cpu"):
        raise ValueError(f"provider {provider!r}: expected auto, cuda or cpu")
    opts = _session_options(threads)
    want_cuda = False
    if provider in ("auto", "cuda"):
        reason = cuda_unavailable_reason()
        if reason is None:
            want_cuda = True
        elif provider == "cuda":
            log.warning("model.provider is cuda but CUDA is unavailable, running on the CPU: %s", reason)
        else:
            log.info("model.provider auto: using the CPU (%s)", reason)
    attempts: list[tuple[list, bool]] = []
    if want_cuda:
        if cuda_graph:
            attempts.append(([("CUDAExecutionProvider", {**CUDA_OPTIONS, "enable_cuda_graph": "1"}), "CPUExecutionProvider"], True))
        attempts.append(([("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"], False))
    attempts.append((["CPUExecutionProvider"], False))
    last_error = None
    for providers, graph in attempts:
        try:
            session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types
            last_error = e
            if providers[0] != "CPUExecutionProvider":
                log.warning("%s: %s failed (%s); trying without", path, "CUDA graphs" if graph else "CUDA",
                            str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__)
                continue
            break
        used = session.get_providers()[0]
        if want_cuda and used != "CUDAExecutionProvider":
            log.warning("CUDA provider did not load for %s, running on the CPU", path)
        return session, ("cuda" if used == "CUDAExecutionProvider" else "cpu"), graph and used == "CUDAExecutionProvider"
    first = str(last_error).strip().splitlines()[0] if last_error and str(last_error).strip() else type(last_error).__name__
    raise ModelError(f"{path}: not a loadable ONNX model ({first[:200]})")


class ModelRunner:
    """One model file, loaded and checked against the contract.

    Args:
        path: the ``.onnx`` file.
        provider: ``auto``, ``cuda`` or ``cpu`` (CUDA falls back to the CPU with a log line).
        threads: intra-op threads on the CPU, capped at the number of cores.
        cuda_graph: on CUDA, capture each stream's run as CUDA graphs (two per stream,
            one per ping-pong phase) so that a block costs one graph launch.

    Raises:
        ModelError: missing or corrupt file, metadata or graph not matching the contract.
    """

    def __init__(self, path: str | os.PathLike, provider: str = "cpu", threads: int = 1, cuda_graph: bool = True):
        self.path = check_model_path(path)
        self.session, self.provider, self.cuda_graph = _create_session(self.path, provider, threads, cuda_graph)
        self._graph_ids = 0
        self._rest_states: dict[tuple[int, int], StateSnapshot] = {}
        """Rest states already computed, by (channels, block size): file mode makes a
        stream per file, and on the CPU the silence run gives the same state every time."""
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

    def next_graph_ids(self) -> tuple[int, int]:
        """Two fresh CUDA graph ids (one per ping-pong binding) for a new stream."""
        self._graph_ids += 2
        return self._graph_ids - 1, self._graph_ids

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


class DeviceBuffer:
    """A float32 tensor where the model runs, with a host mirror, allocated once.

    On the CPU the OrtValue wraps the host array itself (no copies). On CUDA it is device
    memory: ``upload`` and ``download`` copy between it and the host array. The OrtValue's
    address never changes, which is what IOBinding and CUDA graphs need.
    """

    def __init__(self, shape: tuple[int, ...], device: str):
        self.host = np.zeros(shape, np.float32)
        self.device = device
        if device == "cpu":
            self.value = ort.OrtValue.ortvalue_from_numpy(self.host)
        else:
            self.value = ort.OrtValue.ortvalue_from_shape_and_type(list(shape), np.float32, device, 0)
            self.value.update_inplace(self.host)

    def upload(self) -> None:
        """Host array -> tensor."""
        if self.device != "cpu":
            self.value.update_inplace(self.host)

    def download(self) -> np.ndarray:
        """Tensor -> host array (returned)."""
        if self.device != "cpu":
            np.copyto(self.host, self.value.numpy())
        return self.host

    def zero(self) -> None:
        self.host.fill(0.0)
        self.upload()


@dataclass
class StateSnapshot:
    """A copy of a stream's carried state, keyed by state input name."""

    tensors: dict[str, np.ndarray]


class StatefulStream:
    """Runs a stateful model block by block with its state carried.

    The state lives where the model runs (device memory on CUDA) in two buffer sets:
    binding A reads set 0 and writes set 1, binding B the reverse (ping-pong), so no state
    is copied between blocks. On CUDA with graphs, each binding is captured once as its own
    graph (RunOptions ``gpu_graph_id``); a reset rewrites the state buffers in place, which
    keeps the captured addresses valid, so nothing is re-captured.

    Shape:
        ``process(block [channels, N]) -> [channels, 4N]`` (a view, overwritten next call).
    """

    def __init__(self, runner: ModelRunner, channels: int, block_size: int):
        self.runner = runner
        self.channels = channels
        self.block_size = block_size
        self.latency = runner.contract.total_latency
        c = runner.contract
        dev = runner.provider  # "cpu" or "cuda"
        self._audio_in = DeviceBuffer((channels, block_size), dev)
        self._audio_out = DeviceBuffer((channels, FACTOR * block_size), dev)
        self._state = [[DeviceBuffer(s.concrete_shape(channels), dev) for s in c.states] for _ in range(2)]
        self._bindings = []
        self._run_options = []
        graph_ids = runner.next_graph_ids() if runner.cuda_graph else (None, None)
        for k in range(2):
            io = runner.session.io_binding()
            io.bind_ortvalue_input(AUDIO_IN, self._audio_in.value)
            io.bind_ortvalue_output(AUDIO_OUT, self._audio_out.value)
            for i, s in enumerate(c.states):
                io.bind_ortvalue_input(s.input, self._state[k][i].value)
                io.bind_ortvalue_output(s.output, self._state[1 - k][i].value)
            self._bindings.append(io)
            ro = ort.RunOptions()
            if graph_ids[k] is not None:
                ro.add_run_config_entry("gpu_graph_id", str(graph_ids[k]))
            self._run_options.append(ro)
        self._phase = 0
        self.rest_frames = -(-REST_FRAMES // block_size) * block_size
        """Frames of silence that lead from zeros to the rest state (a whole number of blocks)."""
        self._rest: StateSnapshot | None = None
        self._probe()

    def _probe(self) -> None:
        """Runs on silence from zeros, to fail now (not in the audio path) if shapes
        disagree (on CUDA with graphs this also captures both graphs), and on to the rest
        state (:data:`REST_FRAMES`), which it keeps for :meth:`reset`. On the CPU a rest
        state this runner has computed before for this shape is reused after one block
        (it is the same computation, so the same state)."""
        for buf in self._state[self._phase]:
            buf.zero()
        self._audio_in.host[:] = 0.0
        key = (self.channels, self.block_size)
        known = self.runner._rest_states.get(key) if self.runner.provider == "cpu" else None
        blocks = 1 if known is not None else self.rest_frames // self.block_size
        try:
            for _ in range(blocks):
                # ORT captures a CUDA graph after a few plain runs per graph id
                self.process(self._audio_in.host)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelError(
                f"{self.runner.path}: the model fails on a [{self.channels}, {self.block_size}] block "
                f"(expected audio_out [{self.channels}, {FACTOR * self.block_size}] and states as declared): {msg[:200]}"
            ) from None
        if known is not None:
            self.restore(known)
            self._rest = known
        else:
            self._rest = self.runner._rest_states[key] = self.snapshot()

    def reset(self) -> None:
        """Back to the rest state (see :data:`REST_FRAMES`; the caller crossfades around it)."""
        self.restore(self._rest)

    def snapshot(self) -> StateSnapshot:
        c = self.runner.contract
        return StateSnapshot({s.input: self._state[self._phase][i].download().copy() for i, s in enumerate(c.states)})

    def restore(self, snap: StateSnapshot) -> None:
        for i, s in enumerate(self.runner.contract.states):
            buf = self._state[self._phase][i]
            np.copyto(buf.host, snap.tensors[s.input])
            buf.upload()

    def process(self, block: np.ndarray) -> np.ndarray:
        if block is not self._audio_in.host:
            np.copyto(self._audio_in.host, block)
        self._audio_in.upload()
        self.runner.session.run_with_iobinding(self._bindings[self._phase], self._run_options[self._phase])
        self._phase ^= 1
        return self._audio_out.download()


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
        io = runner.session.io_binding()
        _bind(io, AUDIO_IN, self._in, output=False)
        _bind(io, AUDIO_OUT, self._y, output=True)
        self._io = io
        self._run_options = ort.RunOptions()
        if runner.cuda_graph:  # host-bound windows are not graph-capturable: run them plainly
            self._run_options.add_run_config_entry("gpu_graph_id", "-1")
        try:
            runner.session.run_with_iobinding(io, self._run_options)
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
            self.runner.session.run_with_iobinding(self._io, self._run_options)
            out = self._out[:, FACTOR * k * hop:FACTOR * (k + 1) * hop]
            head = FACTOR * o
            crossfade(self._tail, self._y[:, :head], self._fade_in, out[:, :head])
            out[:, head:] = self._y[:, head:FACTOR * hop]
            self._tail[:] = self._y[:, FACTOR * hop:]
        return self._out


def time_blocks(stream, blocks: int = 200, warmup: int = 20, seed: int = 0) -> np.ndarray:
    """Seconds per ``stream.process`` call on noise, after ``warmup`` untimed calls."""
    import time

    rng = np.random.default_rng(seed)
    x = (0.1 * rng.standard_normal((stream.channels, stream.block_size))).astype(np.float32)
    for _ in range(warmup):
        stream.process(x)
    times = np.empty(blocks)
    for i in range(blocks):
        t0 = time.perf_counter()
        stream.process(x)
        times[i] = time.perf_counter() - t0
    return times


def select_runner(
    path: str | os.PathLike,
    provider: str,
    threads: int = 1,
    channels: int = 2,
    block_size: int | None = None,
    cuda_graph: bool = True,
) -> ModelRunner:
    """Load a model on the provider asked for; ``auto`` measures and picks.

    ``auto`` takes CUDA only where it really loads and, timed on a short warm-up at this
    channel count and block size, beats the CPU (p99 per block); it logs both figures.
    """
    if provider != "auto":
        return ModelRunner(path, provider, threads, cuda_graph)
    reason = cuda_unavailable_reason()
    cpu = ModelRunner(path, "cpu", threads)
    if reason is not None:
        log.info("model.provider auto: CPU (%s)", reason)
        return cpu
    gpu = ModelRunner(path, "cuda", threads, cuda_graph)
    if gpu.provider != "cuda":
        return cpu
    block = block_size or 4 * cpu.contract.block_multiple
    t_cpu = time_blocks(cpu.stream(channels, block), blocks=100)
    t_gpu = time_blocks(gpu.stream(channels, block), blocks=100)
    p_cpu, p_gpu = (float(np.percentile(t, 99)) * 1e3 for t in (t_cpu, t_gpu))
    choice = gpu if p_gpu < p_cpu else cpu
    log.info(
        "model.provider auto: block %d x %d ch, p99 per block CUDA%s %.3f ms, CPU (%d thread%s) %.3f ms: choosing %s",
        block, channels, " graphs" if gpu.cuda_graph else "", p_gpu, threads, "" if threads == 1 else "s", p_cpu,
        choice.provider.upper(),
    )
    return choice
