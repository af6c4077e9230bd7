"""Library mode: upscale every audio file under a folder into a mirrored tree.

One output per audio file (same base name, ``.flac`` or ``.wav``); other files are
skipped, or copied with ``copy_other``. An output newer than its source is skipped
unless ``force``. A file that fails is reported by name and the batch goes on.
Each file is written by :func:`rtupscale.fileio.upscale_file` (temporary file, then rename).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from rtupscale.fileio import UpscaleResult, upscale_file
from rtupscale.tags import read_tags, write_flac_tags

log = logging.getLogger("rtupscale.library")

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".aif", ".aiff", ".mp3", ".ogg", ".oga", ".opus", ".m4a", ".mp4", ".aac"})
PYAV_EXTENSIONS = frozenset({".m4a", ".mp4", ".aac", ".opus"})
"""Decoded with PyAV (libavcodec applies the encoder delay and padding), not libsndfile."""


def decode_with_pyav(path: Path, wav: Path) -> None:
    """Decode ``path`` to a float WAV ``wav`` at its own rate; [frames, channels] as libavcodec gives it."""
    import av
    import numpy as np
    import soundfile as sf

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [f.to_ndarray() for f in container.decode(stream)]
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        # the container's duration (the M4A edit list) excludes the encoder's trailing padding
        length = round(stream.duration * stream.time_base * rate) if stream.duration else None
    if not chunks:
        raise ValueError(f"{path}: no audio decoded")
    data = np.concatenate(chunks, axis=1) if chunks[0].shape[0] == channels else np.concatenate(
        [c.reshape(-1, channels).T for c in chunks], axis=1)  # planar [ch, n] or packed [1, n*ch]
    if length is not None and 0 < length <= data.shape[1]:
        data = data[:, :length]
    data = _to_float(data)
    sf.write(wav, data.T, rate, subtype="FLOAT")


def _to_float(data):
    """Samples as float32 at full scale 1.0: decoders of lossless codecs (ALAC, FLAC in
    MP4) give integers (s16, or s32 holding 24 bits at the top), lossy ones floats."""
    import numpy as np

    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(data.dtype, np.integer):
        return data.astype(np.float32) / float(2 ** (8 * data.dtype.itemsize - 1))
    return data.astype(np.float32)


OTHER_COPIED = frozenset({".jpg", ".jpeg", ".png", ".cue"})


@dataclass
class LibrarySummary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    copied: list[Path] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    ray: dict = field(default_factory=dict)
    """Ray mode: ``actors``, each actor's ``{"gpu": bool, "provider": str}``."""

    def line(self) -> str:
        rtf = self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0
        return (f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed; "
                f"{self.audio_seconds / 3600:.3f} h of audio at {rtf:.1f}x real time")


def plan(src: Path, dest: Path, fmt: str = "flac") -> list[tuple[Path, Path]]:
    """(input, output) pairs for every audio file under ``src``, sorted, outputs mirrored under ``dest``."""
    pairs = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        if path.suffix.lower() in AUDIO_EXTENSIONS:
            pairs.append((path, (dest / path.relative_to(src)).with_suffix(f".{fmt}")))
    return pairs


def _up_to_date(inp: Path, out: Path) -> bool:
    return out.exists() and out.stat().st_mtime >= inp.stat().st_mtime


_worker: dict = {}
"""This worker process's model session and config, loaded once by :func:`_init_worker`."""


def _init_worker(runner_loader, config) -> None:
    _worker["runner"] = runner_loader() if runner_loader is not None else None
    _worker["config"] = config


def _convert(inp: Path, out: Path, fmt: str, bits: str, resample: bool, config=None, runner=None,
             per_file_bar: bool = False):
    """(input, seconds of audio, None) when done, (input, 0.0, one-line reason) when it failed.
    Without ``config``, this worker's (see :func:`_init_worker`)."""
    if config is None:
        config, runner = _worker["config"], _worker["runner"]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if inp.suffix.lower() in PYAV_EXTENSIONS:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                wav = Path(tmp) / "decoded.wav"
                decode_with_pyav(inp, wav)
                result: UpscaleResult = upscale_file(wav, out, config, runner=runner, bits=bits, resample=resample,
                                                     progress=per_file_bar, force=True, label=inp.name)
        else:
            result = upscale_file(inp, out, config, runner=runner, bits=bits, resample=resample,
                                  progress=per_file_bar, force=True, label=inp.name)
        if fmt == "flac":
            tags, pictures = read_tags(inp)
            write_flac_tags(out, tags, pictures, f"x4 by rtupscale, model {result.model}")
    except Exception as e:  # one bad file must not stop the batch; it is named in the summary
        return inp, 0.0, (str(e).splitlines()[0] if str(e) else type(e).__name__)
    return inp, result.input_frames / result.input_rate, None


def audio_seconds(path: Path) -> float:
    """The duration its header gives (0.0 where none can be read): for the progress bar's ETA."""
    import mutagen

    try:
        f = mutagen.File(path)
        return float(f.info.length) if f is not None and f.info is not None else 0.0
    except Exception:  # noqa: BLE001 - a damaged file is reported when it is converted
        return 0.0


def _local_results(todo, fmt, bits, resample, config, runner, progress):
    for inp, out in todo:
        if progress is not None:
            progress.start(inp)
        yield _convert(inp, out, fmt, bits, resample, config, runner, per_file_bar=progress is not None)


def _pool_results(todo, fmt, bits, resample, config, jobs, runner_loader):
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(jobs, initializer=_init_worker, initargs=(runner_loader, config)) as pool:
        futures = [pool.submit(_convert, inp, out, fmt, bits, resample) for inp, out in todo]
        for future in as_completed(futures):
            yield future.result()


def upscale_library(src, dest, config, runner=None, fmt: str = "flac", bits: str = "24",
                    resample: bool = False, force: bool = False, copy_other: bool = False,
                    jobs: int = 1, runner_loader=None, ray_address: str | None = None,
                    ray_actors: int | None = None, progress: bool = False, ray_gpus: bool = False) -> LibrarySummary:
    """Upscale the tree ``src`` into ``dest``; never raises for one bad file (see ``failed``).

    With ``jobs`` > 1 the files go to a process pool whose workers each call the picklable
    ``runner_loader()`` once (one model session per worker for the whole batch); else
    ``runner`` (a loaded ModelRunner, or None for bypass) does them all here. With
    ``ray_address`` (``HOST:PORT`` of a running Ray cluster) they go to Ray actors, one
    per CPU of the cluster (or ``ray_actors``), each calling ``runner_loader()`` once (with
    ``ray_gpus``, one per GPU of the cluster holds that GPU);
    every node must see ``src``, ``dest`` and the model at the same paths. ``progress``
    shows a bar on stderr (files, hours of audio, ETA; per file too with one local job).
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise NotADirectoryError(f"{src}: not a folder")
    if fmt not in ("flac", "wav"):
        raise ValueError(f"format {fmt!r}: expected flac or wav")
    if jobs < 1:
        raise ValueError(f"jobs {jobs}: expected 1 or more")
    summary = LibrarySummary()
    start = time.perf_counter()
    claimed: dict[Path, Path] = {}
    todo = []
    for inp, out in plan(src, dest, fmt):
        if out in claimed:  # song.mp3 and song.ogg side by side would write one song.flac
            summary.failed.append((inp, f"same output {out.name} as {claimed[out].name}; rename one"))
            continue
        claimed[out] = inp
        if not force and _up_to_date(inp, out):
            summary.skipped.append(inp)
        else:
            todo.append((inp, out))
    bar = None
    if progress and todo:
        from rtupscale.progress import LibraryProgress

        bar = LibraryProgress({inp: audio_seconds(inp) for inp, _ in todo})
    if not todo:
        results = iter(())
    elif ray_address is not None:
        from rtupscale.ray_library import ray_results

        results = ray_results(ray_address, todo, fmt, bits, resample, config, ray_actors, runner_loader,
                              use_gpus=ray_gpus, report=summary.ray)
    elif jobs == 1:
        results = _local_results(todo, fmt, bits, resample, config, runner, bar)
    else:
        results = _pool_results(todo, fmt, bits, resample, config, jobs, runner_loader)
    try:
        for inp, seconds, why in results:
            if why is None:
                summary.done.append(inp)
                summary.audio_seconds += seconds
            else:
                summary.failed.append((inp, why))
                log.error("%s: failed: %s", inp, why)
            if bar is not None:
                bar.finished(inp, failed=why is not None)
    finally:
        if bar is not None:
            bar.close()
    summary.done.sort()
    summary.failed.sort()
    if copy_other:
        for path in sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in OTHER_COPIED):
            target = dest / path.relative_to(src)
            if force or not _up_to_date(path, target):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                summary.copied.append(path)
    summary.wall_seconds = time.perf_counter() - start
    return summary
