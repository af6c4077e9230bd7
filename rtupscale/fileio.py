"""File mode: a file in, its 4x-rate restoration out, through the same engine as the daemon.

The output is aligned with the input: the engine's latency is compensated (output frame
``4n`` is input frame ``n``) and the output has exactly 4x the input's frames. It is
written to a temporary file beside OUTPUT (created with the umask's mode) and renamed at
the end, so a failure, Ctrl-C, SIGTERM or SIGHUP never leaves a half-written OUTPUT or
the temporary file. An existing OUTPUT is replaced only with ``force``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from rtupscale import FACTOR
from rtupscale.config import BLOCK_SIZE_RANGE, Config
from rtupscale.dsp.dither import tpdf_dither
from rtupscale.engine import Engine
from rtupscale.errors import Terminated, UserError

log = logging.getLogger("rtupscale.file")

INPUT_FORMATS = "WAV, FLAC, MP3, OGG"
OUTPUT_FORMATS = {".flac": "FLAC", ".wav": "WAV"}
SUBTYPES = {"16": ("PCM_16", 16), "24": ("PCM_24", 24), "float": ("FLOAT", None)}
BYPASS_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
FILE_BLOCK = 16384
"""Input frames per engine block in file mode unless a block size is given. Latency does
not matter here, and a block this long costs the model about 0.017 x its duration where
one of 256 frames costs 0.03 x (the per-call overhead). The guard works per block: a
block the model spoils falls back to the plain path whole (0.37 s at 44.1 kHz)."""
FLAC_COMPRESSION = 0.5
"""libsndfile's FLAC compression (0..1 for levels 0..8): level 4. Measured on 60 s of
176.4 kHz 24-bit stereo: 0.37 s to encode against 0.49 s at the default level 5, for a
file 1.3 % larger."""
DISK_FULL_BYTES = 1 << 16
"""A write that fails with less free space than this left on the output's device is
reported as a full disk (libsndfile's own message is only "System error")."""


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


def check_output(inp: Path, out: Path, subtype_key: str, force: bool = False) -> tuple[str, str, int | None]:
    """The output's (format, subtype, bits); FileModeError if OUTPUT cannot be written as
    asked (extension, bit depth, the input itself, a folder, exists without ``force``)."""
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
    if out.is_dir():
        raise FileModeError(f"{out}: is a folder; give an output file name ending in .flac or .wav")
    if (out.exists() or out.is_symlink()) and not force:
        raise FileModeError(f"{out}: already exists; add --force to replace it")
    return OUTPUT_FORMATS[ext], subtype, bits


def _create_temp(out: Path) -> Path:
    """A new empty file beside ``out`` (hidden, ``.NAME.XXXXXXXX.partial.EXT``), created with
    mode 0666 less the umask, as any new file. One line naming the folder if it cannot be."""
    folder = out.resolve().parent
    for _ in range(100):
        tmp = folder / f".{out.name}.{secrets.token_hex(4)}.partial{out.suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        except FileExistsError:
            continue
        except OSError as e:
            raise FileModeError(f"{out}: cannot create a file in {folder} ({e.strerror})") from None
        return tmp
    raise FileModeError(f"{out}: cannot create a temporary file in {folder}")  # pragma: no cover


def _write_error(out: Path, err: Exception) -> FileModeError:
    """The one-line error for a failed write to ``out``'s temporary file (full disk,
    read-only or vanished folder, I/O error)."""
    folder = out.resolve().parent
    try:
        st = os.statvfs(folder)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    code = getattr(err, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < DISK_FULL_BYTES):
        return FileModeError(f"{out}: the disk is full ({folder} has {free or 0} bytes free); nothing was written")
    reason = getattr(err, "strerror", None) or str(err).strip() or type(err).__name__
    return FileModeError(f"{out}: cannot write ({reason[:200]}); nothing was written")


@contextlib.contextmanager
def _terminating_signals_raise():
    """SIGTERM and SIGHUP raise :class:`Terminated` in the main thread while the block runs
    (as SIGINT raises KeyboardInterrupt), so the temporary file is removed on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(signum)

    old = {sig: signal.signal(sig, raise_terminated) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _temp_output(out: Path):
    """A temporary file beside ``out``, renamed to ``out`` when the block succeeds and
    removed whatever else happens (errors, Ctrl-C, SIGTERM, SIGHUP)."""
    with _terminating_signals_raise():
        tmp = None
        try:
            with _signals_held():  # a signal can no longer land between creating and naming it
                tmp = _create_temp(out)
            yield tmp
            try:
                os.replace(tmp, out)
            except OSError as e:
                raise FileModeError(f"{out}: cannot replace it ({e.strerror})") from None
        except BaseException:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def _signals_held():
    """SIGINT, SIGTERM and SIGHUP wait (blocked, not lost) until the block ends."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _read_chunk(src: sf.SoundFile, inp: Path, done: int) -> np.ndarray:
    """The next frames of ``src`` (``[frames, channels]``, empty at the end); one line
    naming the file where it cannot be decoded (damaged or truncated)."""
    try:
        return src.read(65536, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise FileModeError(
            f"{inp}: cannot decode past frame {done} of {src.frames} ({str(e).strip()[:120]}): "
            "the file is damaged or truncated"
        ) from None


def file_block_size(runner=None) -> int:
    """The engine block file mode uses when none is given: :data:`FILE_BLOCK`, down to a
    multiple of the model's block multiple."""
    if runner is None:
        return FILE_BLOCK
    m = runner.contract.block_multiple
    return max(m, FILE_BLOCK // m * m)


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
    force: bool = False,
    label: str | None = None,
) -> UpscaleResult:
    """Upscale one file. ``runner`` is a loaded ModelRunner or None (bypass path only).
    ``progress``: a bar on stderr (None: when stderr is a terminal); with ``label`` (a
    file of a batch) the bar is named so, sits under the batch's bar and is removed at the end.

    NaN or infinite input samples are replaced by 0 (and counted in a warning); an input
    that ends before the length its header gives (a truncated MP3) is completed with
    silence, with a warning naming the missing duration.

    Raises:
        FileModeError: unreadable, damaged or truncated input, unsupported rate or output
            format, an existing output without ``force``, overwrite of the input, a
            folder that cannot be written or a full disk; one line that names the file.
        Terminated: SIGTERM or SIGHUP arrived (the temporary file is removed).
    """
    import soxr
    from tqdm import tqdm

    inp, out = Path(input_path), Path(output_path)
    fmt, subtype, out_bits = check_output(inp, out, bits, force)
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

        n = block_size or file_block_size(runner)
        lo, hi = BLOCK_SIZE_RANGE
        if not lo <= n <= hi:
            raise FileModeError(f"block size {n}: expected an integer from {lo} to {hi}")
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
        src_frames, src_read, eof = src.frames, 0, False
        with _temp_output(out) as tmp:
            try:
                dst = sf.SoundFile(str(tmp), "w", samplerate=FACTOR * rate, channels=channels, format=fmt, subtype=subtype,
                                   compression_level=FLAC_COMPRESSION if fmt == "FLAC" else None)
            except (sf.LibsndfileError, RuntimeError, OSError) as e:
                raise _write_error(out, e) from None
            try:
                pending = np.zeros((0, channels), np.float32)  # input frames read, not yet processed
                to_skip = FACTOR * lat  # latency compensation: drop the first 4 * latency output frames
                to_write = FACTOR * frames
                block = np.zeros((channels, n), np.float32)
                show = sys.stderr.isatty() if progress is None else progress
                with tqdm(total=frames, unit="frame", unit_scale=True, disable=not show, desc=label or inp.name,
                          position=1 if label else None, leave=label is None) as bar:
                    while to_write > 0:
                        while len(pending) < n and not eof:
                            chunk = _read_chunk(src, inp, src_read)
                            src_read += len(chunk)
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
                            try:
                                dst.write(y)
                            except (sf.LibsndfileError, RuntimeError, OSError) as e:
                                raise _write_error(out, e) from None
                            to_write -= y.shape[0]
                        bar.update(take)
            except BaseException:
                with contextlib.suppress(Exception):
                    dst.close()
                raise
            try:
                dst.close()  # flushes the encoder: a full disk may show only here
            except (sf.LibsndfileError, RuntimeError, OSError) as e:
                raise _write_error(out, e) from None
        if eof and src_read < src_frames:
            missing = src_frames - src_read
            log.warning(
                "%s: the audio ends %.2f s (%d frames) before the length its header gives (%d frames): "
                "the file is truncated; the rest of the output is silence",
                inp, missing / src.samplerate, missing, src_frames,
            )
    counters = engine.counters
    if counters.nonfinite_inputs:
        log.warning("%s: %d samples are NaN or infinite; they were replaced by 0", inp, counters.nonfinite_inputs)
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
