"""The streaming engine: one block in, four times as many frames out.

The same engine serves the live daemon and the file mode; it knows nothing of devices,
files or ONNX (a model arrives as a stream object from :mod:`rtupscale.model.runner`).

Per block::

    bypass path:  delay line -> Interpolator (x4 polyphase FIR) ----------+
                                                                          +-> mix -> soft clip -> out
    model path:   stream.process (state carried) -> delay line -> guard --+

Both paths are delayed to the engine's latency, so they are aligned sample for sample and
can be mixed. While the model alone is heard (gain 1, no fade), the interpolator does not
run: it only takes each block into its history, so it is ready the moment it is needed.
The mix gain ``g`` (0 = bypass, 1 = model) only ever moves along a
raised-cosine curve of ``crossfade_ms``: bypass on/off, a state reset and a model swap
all fade the model out to the bypass path, do their work while ``g == 0``, let the model
warm up on real input, and fade it back in. A reversal mid-fade just turns around on the
curve, so there is no step. The model keeps running while bypassed, so A/B switching is
instant and its state stays continuous.

The input is checked like the output: NaN or infinite input samples are replaced by 0 in
place (and counted) before either path sees them, so no state and no output ever holds
one. The guard replaces a block whose model output is NaN/Inf or beyond ``GUARD_LIMIT`` by the
bypass path, resets the state, and fades the model back in after its warm-up.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rtupscale import FACTOR
from rtupscale.dsp import interp
from rtupscale.dsp.crossfade import crossfade, fade_in_curve
from rtupscale.dsp.limiter import SoftClipper

if TYPE_CHECKING:  # pragma: no cover
    from rtupscale.config import Config
    from rtupscale.model.runner import ModelRunner, StatefulStream, WindowedStream

GUARD_LIMIT = 4.0
"""Model output beyond +-4.0 (+12 dBFS) is treated as runaway, like NaN or Inf."""


@dataclass
class EngineCounters:
    """Event counters, readable by callers (status, tests). Plain ints, updated per block."""

    blocks: int = 0
    model_blocks: int = 0
    """Blocks in which the model path contributed to the output (g > 0)."""
    guard_events: int = 0
    """Blocks whose model output was NaN/Inf/runaway and replaced by the bypass path."""
    resets: int = 0
    """State resets (requested, or after a guard event)."""
    swaps: int = 0
    limited_samples: int = 0
    """Output samples the soft clipper touched."""
    nonfinite_inputs: int = 0
    """Input samples that were NaN or infinite, replaced by 0."""

    def snapshot(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class DelayLine:
    """Fixed delay of ``delay`` frames for blocks of exactly ``frames`` frames.

    Shape:
        ``process(x [channels, frames]) -> [channels, frames]`` (a view, overwritten next call).
    """

    def __init__(self, channels: int, frames: int, delay: int):
        if delay < 0:
            raise ValueError(f"delay must be >= 0, got {delay}")
        self.delay, self.frames = delay, frames
        self._buf = np.zeros((channels, delay + frames), np.float32)
        self._out = np.zeros((channels, frames), np.float32)

    def reset(self) -> None:
        self._buf.fill(0.0)

    def process(self, x: np.ndarray) -> np.ndarray:
        if self.delay == 0:
            return x
        d, n = self.delay, self.frames
        self._buf[:, d:] = x
        np.copyto(self._out, self._buf[:, :n])  # the oldest n frames
        self._buf[:, :d] = self._buf[:, n:n + d]  # keep the newest d
        return self._out


class Engine:
    """Fixed-size block processing with state carry, bypass, guard, crossfades and limiter.

    Args:
        channels: channels per block (the model's batch axis).
        base_rate: input rate, Hz; checked against the model's accepted rates.
        block_size: input frames per block; a multiple of the model's block multiple.
        runner: the loaded model, or None for the bypass path only.
        crossfade_ms: length of every crossfade, ms.
        ceiling_dbfs: no output sample reaches this level.
        min_latency: reserve at least this much latency (input frames), so that a model with
            more latency than the first one can be swapped in later.

    Shape:
        ``process(block [channels, block_size]) -> [channels, 4 * block_size]``.
        Output frame ``4 * (n + latency)`` corresponds to input frame ``n``.
    """

    def __init__(
        self,
        channels: int,
        base_rate: int,
        block_size: int,
        runner: "ModelRunner | None" = None,
        crossfade_ms: float = 20.0,
        ceiling_dbfs: float = -0.3,
        min_latency: int = 0,
    ):
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        if base_rate <= 0:
            raise ValueError(f"base_rate must be positive, got {base_rate}")
        if crossfade_ms <= 0:
            raise ValueError(f"crossfade_ms must be > 0, got {crossfade_ms}")
        self.channels, self.base_rate, self.block_size = channels, base_rate, block_size
        self.out_rate = FACTOR * base_rate
        self.crossfade_ms = crossfade_ms
        self.counters = EngineCounters()
        model_latency = 0
        if runner is not None:
            runner.contract.check_rate(base_rate)
            runner.contract.check_block_size(block_size)
            model_latency = runner.latency
        self.latency = max(interp.LATENCY, model_latency, min_latency)
        """Latency of the engine's output, input frames (both paths are aligned to it)."""
        n_out = FACTOR * block_size
        # The bypass path delays its input, not its output (a delay commutes with the
        # filter: the same samples), so that while the model alone is heard the
        # interpolator only keeps its history (Interpolator.push) instead of running.
        self._bypass_delay = DelayLine(channels, block_size, self.latency - interp.LATENCY)
        self._interp = interp.Interpolator(channels, block_size)
        self._limiter = SoftClipper(ceiling_dbfs)
        # The mix gain follows gains[k], k in 0..F (0 = bypass, F = model).
        self._fade_len = max(1, round(crossfade_ms * 1e-3 * self.out_rate))
        self._gains = np.concatenate([[0.0], fade_in_curve(self._fade_len - 1) if self._fade_len > 1 else [], [1.0]]).astype(np.float32)
        self._steps = np.arange(1, n_out + 1)
        self._k_idx = np.zeros(n_out, np.intp)
        self._g = np.zeros(n_out, np.float32)
        self._out = np.zeros((channels, n_out), np.float32)
        self._finite = np.zeros((channels, block_size), np.bool_)
        self._k = 0
        self._bypass = False
        self._pending: tuple | None = None
        self._runner = runner
        self._stream = None
        self._model_delay: DelayLine | None = None
        self._warmup = 0
        if runner is not None:
            self._install(runner, runner.stream(channels, block_size))
            # A fresh (zero) state is the state after silence, which is what precedes the
            # first block: start on the model path at once, no warm-up, no fade.
            self._warmup = 0
            self._k = self._fade_len

    # -- control (any thread: each call is one attribute assignment) -----------------
    @property
    def runner(self) -> "ModelRunner | None":
        return self._runner

    @property
    def bypass(self) -> bool:
        return self._bypass

    @property
    def model_gain(self) -> float:
        """Current mix gain of the model path (0 bypass .. 1 model)."""
        return float(self._gains[self._k])

    def set_bypass(self, on: bool) -> None:
        """Switch to the plain upsampler (on) or back to the model (off), crossfaded."""
        self._bypass = bool(on)

    def start_on_bypass(self) -> None:
        """Go to the plain path at once and fade the model in after a fresh warm-up: for a
        replacement engine, after it was primed and before its first audible block, taking
        over from one whose model has faded out."""
        self._k = 0
        if self._stream is not None:
            self._start_warmup()

    def request_reset(self) -> None:
        """Reset the model state (after an xrun, say): fade out, reset, warm up, fade in."""
        if self._pending is None and self._stream is not None:
            self._pending = ("reset",)

    def can_swap(self, runner: "ModelRunner | None") -> str | None:
        """Why ``runner`` cannot be swapped into this engine, or None if it can."""
        if runner is None:
            return None
        c = runner.contract
        if self.base_rate not in c.sample_rates:
            return f"the model does not accept {self.base_rate} Hz"
        if self.block_size % c.block_multiple:
            return f"block size {self.block_size} is not a multiple of the model's {c.block_multiple}"
        if runner.latency > self.latency:
            return f"the model's latency {runner.latency} exceeds the engine's {self.latency} frames"
        return None

    def swap_runner(self, runner: "ModelRunner | None") -> None:
        """Replace the model (or remove it: None) under a crossfade.

        The new stream is built here, in the caller's thread; the audio thread picks it up
        at its next block. Raises ValueError if the engine cannot take the model.
        """
        why = self.can_swap(runner)
        if why:
            raise ValueError(why)
        stream = runner.stream(self.channels, self.block_size) if runner is not None else None
        self._pending = ("swap", runner, stream)

    # -- the audio path (the worker thread only) --------------------------------------
    def _install(self, runner, stream) -> None:
        self._runner, self._stream = runner, stream
        if stream is None:
            self._model_delay = None
            return
        self._model_delay = DelayLine(self.channels, FACTOR * self.block_size, FACTOR * (self.latency - stream.latency))
        self._start_warmup()

    def _start_warmup(self) -> None:
        """Blocks to run a fresh state on real input before fading it in: its latency, the
        interpolator's history and a margin, so the start-up transient stays unheard."""
        frames = 2 * self.latency + interp.LATENCY + 64
        self._warmup = math.ceil(frames / self.block_size)

    def _run_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending[0] == "reset":
            self.counters.resets += 1
            self._stream.reset()
            self._model_delay.reset()
            self._start_warmup()
        else:
            self.counters.swaps += 1
            self._install(pending[1], pending[2])

    def _zero_nonfinite(self, block: np.ndarray) -> None:
        """Replace NaN/Inf samples of ``block`` by 0, in place, and count them. One
        ``isfinite`` into a preallocated mask per block; nothing allocated when all are finite."""
        finite = self._finite
        np.isfinite(block, out=finite)
        if finite.all():
            return
        self.counters.nonfinite_inputs += block.size - int(np.count_nonzero(finite))
        np.logical_not(finite, out=finite)
        np.copyto(block, 0.0, where=finite)

    def process(self, block: np.ndarray) -> np.ndarray:
        """Process one block; NaN/Inf samples in ``block`` are set to 0 in place. Returns a
        view into the engine's output buffer."""
        assert block.shape == (self.channels, self.block_size), block.shape
        self._zero_nonfinite(block)
        delayed = self._bypass_delay.process(block)
        mo = None
        if self._stream is not None:
            mo = self._model_delay.process(self._stream.process(block))
            hi, lo = mo.max(), mo.min()
            if not (hi <= GUARD_LIMIT and lo >= -GUARD_LIMIT):  # NaN fails both comparisons
                self.counters.guard_events += 1
                self.counters.resets += 1
                mo = None
                self._k = 0
                self._stream.reset()
                self._model_delay.reset()
                self._start_warmup()
        want_model = (
            mo is not None and not self._bypass and self._pending is None and self._warmup == 0
        )
        k0 = self._k
        if mo is not None and k0 == self._fade_len and want_model:
            self._interp.push(delayed)  # the bypass path is unheard: keep its history only
            np.copyto(self._out, mo)
        else:
            byp = self._interp.process(delayed)
            if mo is None or (k0 == 0 and not want_model):
                np.copyto(self._out, byp)
            else:
                direction = 1 if want_model else -1
                np.multiply(self._steps, direction, out=self._k_idx)
                self._k_idx += k0
                np.clip(self._k_idx, 0, self._fade_len, out=self._k_idx)
                np.take(self._gains, self._k_idx, out=self._g)
                self._k = int(self._k_idx[-1])
                crossfade(byp, mo, self._g, self._out)
        if mo is not None and (k0 > 0 or self._k > 0):
            self.counters.model_blocks += 1
        if self._k == 0 and self._pending is not None:
            self._run_pending()
        elif self._warmup > 0 and mo is not None:
            self._warmup -= 1
        self.counters.limited_samples += self._limiter.process(self._out)
        self.counters.blocks += 1
        return self._out


def build_engine(
    config: "Config",
    channels: int,
    base_rate: int,
    runner: "ModelRunner | None" = None,
    block_size: int | None = None,
) -> Engine:
    """An engine with the config's block size, crossfade and ceiling."""
    return Engine(
        channels=channels,
        base_rate=base_rate,
        block_size=block_size or config.latency.block_size,
        runner=runner,
        crossfade_ms=config.latency.crossfade_ms,
        ceiling_dbfs=config.output.ceiling_dbfs,
    )
