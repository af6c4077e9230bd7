"""File mode: a file in, its 4x-rate restoration out, through the same engine as the daemon.

The output is aligned with the input: the engine's latency is compensated (output frame
``4n`` is input frame ``n``) and the output has exactly 4x the input's frames. It is
written to a temporary file beside OUTPUT and renamed at the end, so a failure or Ctrl-C
never leaves a half-written OUTPUT.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from rtupscale import FACTOR
from rtupscale.config import Config
from rtupscale.dsp.dither import tpdf_dither
from rtupscale.engine import Engine
from rtupscale.errors import UserError

log = logging.getLogger("rtupscale.file")

INPUT_FORMATS = "WAV, FLAC, MP3, OGG"
OUTPUT_FORMATS = {".flac": "FLAC", ".wav": "WAV"}
SUBTYPES = {"16": ("PCM_16", 16), "24": ("PCM_24", 24), "float": ("FLOAT", None)}
BYPASS_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)


class FileModeError(UserError):
    """A user-facing file-mode problem; its message is one line."""


@dataclass
class UpscaleResult:
    input_rate: int
    output_rate: int
    channels: int
    input_frames: int
    output_frames: int
    latency: int
    model: str
    provider: str
    resampled_from: int | None = None


def _open_input(path: Path) -> sf.SoundFile:
    if not path.exists():
        raise FileModeError(f"{path}: no such file")
    try:
        return sf.SoundFile(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        raise FileModeError(f"{path}: cannot read it as audio ({e}); readable formats: {INPUT_FORMATS}") from None


def _check_output(inp: Path, out: Path, subtype_key: str) -> tuple[str, str, int | None]:
    ext = out.suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise FileModeError(f"{out}: unsupported output extension {ext or '(none)'!r}; use .flac or .wav")
    if subtype_key not in SUBTYPES:
        raise FileModeError(f"bit depth {subtype_key!r}: expected one of {', '.join(SUBTYPES)}")
    subtype, bits = SUBTYPES[subtype_key]
    if ext == ".flac" and bits is None:
        raise FileModeError("FLAC holds integer samples only: use --bits 16 or 24, or a .wav output for float")
    if out.exists() and inp.exists() and os.path.samefile(out, inp):
        raise FileModeError(f"{out}: refusing to overwrite the input file")
    if out.resolve() == inp.resolve():
        raise FileModeError(f"{out}: refusing to overwrite the input file")
    if not out.resolve().parent.is_dir():
        raise FileModeError(f"{out}: the folder {out.resolve().parent} does not exist")
    return OUTPUT_FORMATS[ext], subtype, bits


def _choose_rate(rate: int, accepted: tuple[int, ...]) -> int:
    """The accepted rate to resample to: same family (44.1k or 48k multiples) if possible."""
    family = [r for r in accepted if (r % 11025 == 0) == (rate % 11025 == 0)]
    pool = family or list(accepted)
    return min(pool, key=lambda r: (abs(r - rate), r))


def upscale_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    config: Config,
    runner=None,
    block_size: int | None = None,
    bits: str = "24",
    resample: bool = False,
    progress: bool | None = None,
) -> UpscaleResult:
    """Upscale one file. ``runner`` is a loaded ModelRunner or None (bypass path only).

    Raises:
        FileModeError: unreadable input, unsupported rate or output format, overwrite of
            the input; the message is one line that says what is allowed.
    """
    import soxr
    from tqdm import tqdm

    inp, out = Path(input_path), Path(output_path)
    fmt, subtype, out_bits = _check_output(inp, out, bits)
    src = _open_input(inp)
    with src:
        rate, channels, frames = src.samplerate, src.channels, src.frames
        resampled_from = None
        if runner is not None:
            accepted = runner.contract.sample_rates
            if rate not in accepted:
                if not resample:
                    raise FileModeError(
                        f"{inp}: {rate} Hz is not accepted by the model; it accepts "
                        f"{', '.join(map(str, accepted))} Hz (add --resample to convert the input first)"
                    )
                resampled_from, rate = rate, _choose_rate(rate, accepted)
        elif rate not in BYPASS_RATES:
            if not resample:
                raise FileModeError(
                    f"{inp}: {rate} Hz is not supported; supported: {', '.join(map(str, BYPASS_RATES))} Hz "
                    "(add --resample to convert the input first)"
                )
            resampled_from, rate = rate, _choose_rate(rate, (44100, 48000))
        if frames <= 0:
            raise FileModeError(f"{inp}: no audio frames")

        n = block_size or config.latency.block_size
        if runner is not None:
            try:
                runner.contract.check_block_size(n)
            except ValueError as e:
                raise FileModeError(str(e)) from None
        engine = Engine(channels, rate, n, runner, config.latency.crossfade_ms, config.output.ceiling_dbfs)
        lat = engine.latency
        if resampled_from is not None:
            frames = int(round(frames * rate / resampled_from))
            resampler = soxr.ResampleStream(resampled_from, rate, channels, dtype="float32", quality="VHQ")
            log.info("resampling the input from %d Hz to %d Hz (soxr VHQ)", resampled_from, rate)
        else:
            resampler = None

        rng = np.random.default_rng(0)  # dither is reproducible run to run
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial" + out.suffix, dir=out.resolve().parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with sf.SoundFile(str(tmp), "w", samplerate=FACTOR * rate, channels=channels, format=fmt, subtype=subtype) as dst:
                pending = np.zeros((0, channels), np.float32)  # input frames read, not yet processed
                to_skip = FACTOR * lat  # latency compensation: drop the first 4 * latency output frames
                to_write = FACTOR * frames
                block = np.zeros((channels, n), np.float32)
                show = sys.stderr.isatty() if progress is None else progress
                with tqdm(total=frames, unit="frame", unit_scale=True, disable=not show, desc=inp.name) as bar:
                    eof = False
                    while to_write > 0:
                        while len(pending) < n and not eof:
                            chunk = src.read(65536, dtype="float32", always_2d=True)
                            eof = len(chunk) == 0
                            if resampler is not None:
                                chunk = resampler.resample_chunk(chunk, last=eof)
                            if len(chunk):
                                pending = np.concatenate([pending, chunk])
                        take = min(n, len(pending))
                        block[:, :take] = pending[:take].T
                        block[:, take:] = 0.0  # past the end: silence flushes the latency
                        pending = pending[take:]
                        y = engine.process(block)
                        start = min(to_skip, y.shape[1])
                        to_skip -= start
                        y = y[:, start:start + to_write]
                        if y.shape[1]:
                            y = y.T
                            if out_bits is not None:
                                if config.output.dither:
                                    y = tpdf_dither(y, out_bits, rng)
                                y = np.clip(y, -1.0, 1.0 - 2.0 ** (1 - out_bits))
                            dst.write(y)
                            to_write -= y.shape[0]
                        bar.update(take)
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    counters = engine.counters
    if counters.guard_events:
        log.warning("the model misbehaved on %d blocks; they were replaced by the bypass path", counters.guard_events)
    if counters.limited_samples:
        log.info("the soft clipper touched %d output samples (ceiling %.1f dBFS)", counters.limited_samples, config.output.ceiling_dbfs)
    return UpscaleResult(
        input_rate=rate,
        output_rate=FACTOR * rate,
        channels=channels,
        input_frames=frames,
        output_frames=FACTOR * frames,
        latency=lat,
        model=runner.name if runner is not None else "none (bypass)",
        provider=runner.provider if runner is not None else "-",
        resampled_from=resampled_from,
    )
