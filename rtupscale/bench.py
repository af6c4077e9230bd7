"""``rtupscale bench``: time per block for providers x models x block sizes.

A benchmark, not a test: it warms up, then times ``stream.process`` for a fixed wall time
per case so that the p99 is stable, and reports the median, p99 and max per block, the
real-time factor (median time over the block's duration) and the process RSS.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

from rtupscale.model.contract import ModelError
from rtupscale.model.runner import ModelRunner, cuda_unavailable_reason

log = logging.getLogger("rtupscale.bench")

DEFAULT_BLOCKS = (64, 128, 256, 512, 1024)
CHANNELS = 2


def rss_mib() -> float:
    """Resident set size of this process now, MiB (from /proc; ru_maxrss elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:  # pragma: no cover - not Linux
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_case(runner: ModelRunner, block: int, seconds: float, rate: int) -> dict:
    """Time one (runner, block) case. Returns a record (see module docstring)."""
    stream = runner.stream(CHANNELS, block)
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((CHANNELS, block))).astype(np.float32)
    warm_end = time.perf_counter() + min(0.5, seconds / 4)
    while time.perf_counter() < warm_end:
        stream.process(x)
    times = []
    end = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        stream.process(x)
        t1 = time.perf_counter()
        times.append(t1 - t0)
        if t1 > end and len(times) >= 200:
            break
    t = np.array(times) * 1e3
    block_ms = 1e3 * block / rate
    return {
        "provider": runner.provider + (" graphs" if runner.cuda_graph else ""),
        "model": runner.name,
        "block": block,
        "channels": CHANNELS,
        "blocks_timed": len(t),
        "median_ms": round(float(np.median(t)), 4),
        "p99_ms": round(float(np.percentile(t, 99)), 4),
        "max_ms": round(float(t.max()), 4),
        "block_ms": round(block_ms, 3),
        "rtf": round(float(np.median(t)) / block_ms, 4),
        "p99_rtf": round(float(np.percentile(t, 99)) / block_ms, 4),
        "rss_mib": round(rss_mib(), 1),
    }


def format_table(records: list[dict]) -> str:
    cols = ["provider", "model", "block", "median_ms", "p99_ms", "max_ms", "rtf", "p99_rtf", "rss_mib"]
    rows = [[str(r[c]) for c in cols] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i >= 2 else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))
    return "\n".join([line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows])


def bench_command(args) -> int:
    from rtupscale.app import load_config_or_exit

    config = load_config_or_exit(args.config)
    models = args.model or []
    if not models:
        mp = config.model_path()
        if mp is None:
            print("rtupscale bench: no model (model.path is none); name one with --model", file=sys.stderr)
            return 2
        models = [str(mp)]
    providers = args.provider or (["cpu"] + (["cuda"] if cuda_unavailable_reason() is None else []))
    blocks = args.block or list(DEFAULT_BLOCKS)
    rate = config.audio.base_rate
    records = []
    for provider in providers:
        if provider == "cuda" and (why := cuda_unavailable_reason()) is not None:
            print(f"rtupscale bench: skipping cuda: {why}", file=sys.stderr)
            continue
        for model in models:
            runner = ModelRunner(Path(model), provider, config.model.threads, config.model.cuda_graph)
            if runner.provider != provider:
                print(f"rtupscale bench: {provider} did not load for {model}; skipped", file=sys.stderr)
                continue
            for block in blocks:
                try:
                    runner.contract.check_block_size(block)
                except ModelError as e:
                    print(f"rtupscale bench: skipping block {block}: {e}", file=sys.stderr)
                    continue
                rec = bench_case(runner, block, args.seconds, rate)
                records.append(rec)
                if not args.json:
                    print(f"  {rec['provider']:>12} {rec['model']:>16} block {block:5d}: median {rec['median_ms']:.3f} ms, "
                          f"p99 {rec['p99_ms']:.3f} ms, rtf {rec['rtf']:.4f}", file=sys.stderr)
    if args.json:
        print(json.dumps(records, indent=1))
    else:
        print(f"\nstereo, {rate} Hz, {config.model.threads} CPU thread(s); rtf = median time / block duration\n")
        print(format_table(records))
    return 0 if records else 1


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """``([frames, channels] float32, rate)`` of an audio file, as library mode reads it."""
    import tempfile

    import soundfile as sf

    from rtupscale.library import PYAV_EXTENSIONS, decode_with_pyav

    if path.suffix.lower() in PYAV_EXTENSIONS:
        with tempfile.TemporaryDirectory() as tmp:
            decode_with_pyav(path, Path(tmp) / "d.wav")
            return sf.read(Path(tmp) / "d.wav", dtype="float32", always_2d=True)
    return sf.read(path, dtype="float32", always_2d=True)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``fn()``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def bench_file(path: Path, config, runner, repeat: int = 3) -> list[dict]:
    """Time library mode's conversion of one file (decode, engine, FLAC 24-bit, tags) with
    ``runner`` (None: the plain path), and on the same audio soxr's VHQ x4 alone and with
    the same decode and FLAC writer. One process, one thread each; the median of
    ``repeat`` runs. ``x_per_core`` is audio seconds over CPU seconds."""
    import tempfile

    import soundfile as sf
    import soxr

    from rtupscale.fileio import FLAC_COMPRESSION, file_block_size
    from rtupscale.library import _convert

    x, rate = _decode(path)
    seconds = len(x) / rate
    records = []

    def record(name: str, runs: list[tuple[float, float]]) -> None:
        wall = float(np.median([w for w, _ in runs]))
        cpu = float(np.median([c for _, c in runs]))
        records.append({"case": name, "audio_s": round(seconds, 3), "wall_s": round(wall, 4), "cpu_s": round(cpu, 4),
                        "x_realtime": round(seconds / wall, 1), "x_per_core": round(seconds / cpu, 1)})

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.flac"

        def convert():
            _, _, why = _convert(path, out, "flac", "24", False, config, runner)
            if why is not None:
                raise RuntimeError(f"{path}: {why}")

        name = f"rtupscale file mode, {runner.name if runner else 'plain path'} -> FLAC 24"
        record(name, [_timed(convert) for _ in range(repeat)])
        if runner is not None:
            block = file_block_size(runner)
            blocks = np.zeros((x.shape[1], -(-len(x) // block) * block), np.float32)
            blocks[:, :len(x)] = x.T

            def model_only():
                stream = runner.stream(x.shape[1], block)
                for i in range(0, blocks.shape[1], block):
                    stream.process(blocks[:, i:i + block])

            record(f"  of which the model alone (block {block})", [_timed(model_only) for _ in range(repeat)])
        record("soxr VHQ x4, in memory", [_timed(lambda: soxr.resample(x, rate, 4 * rate, quality="VHQ"))
                                          for _ in range(repeat)])

        def soxr_flac():
            y = soxr.resample(_decode(path)[0], rate, 4 * rate, quality="VHQ")
            sf.write(out, y, 4 * rate, format="FLAC", subtype="PCM_24", compression_level=FLAC_COMPRESSION)

        record("soxr VHQ x4, decode + FLAC 24", [_timed(soxr_flac) for _ in range(repeat)])
    return records


def bench_file_command(args) -> int:
    from rtupscale.app import load_config_or_exit, load_runner

    config = load_config_or_exit(args.config)
    path = Path(args.file)
    if not path.is_file():
        print(f"rtupscale bench: {path}: no such file", file=sys.stderr)
        return 2
    model = (args.model or [None])[0]
    if args.provider and args.provider != ["cpu"]:
        print("rtupscale bench --file: measures one CPU core; --provider can only be cpu", file=sys.stderr)
        return 2
    import dataclasses

    config = dataclasses.replace(config, model=dataclasses.replace(config.model, threads=1))
    runner = load_runner(config, model, "cpu")
    records = bench_file(path, config, runner, repeat=args.repeat)
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    print(f"\n{path}: {records[0]['audio_s']:.1f} s of audio; median of {args.repeat} runs, one process, one thread\n")
    cols = ["case", "wall_s", "cpu_s", "x_realtime", "x_per_core"]
    rows = [[str(r[c]) for c in cols] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols)]
    for vals in [cols, ["-" * w for w in widths]] + rows:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(vals, widths))))
    return 0
