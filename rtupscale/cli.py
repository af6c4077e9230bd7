"""The ``rtupscale`` command: one subcommand per job.

Exit codes: 0 success, 1 failure while working (a bug: with its traceback), 2 a user error
(bad config, model, file, device, argument), 130 interrupted, 128 + N ended by signal N.
User errors are one line on stderr that names the thing and what is allowed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from rtupscale import __version__
from rtupscale.app import check_config_model, default_config_path, load_config_or_exit, load_runner, print_config_errors  # noqa: F401

log = logging.getLogger("rtupscale")

EXIT_OK, EXIT_FAIL, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (exit 2), like every
    other user error."""

    def error(self, message: str):  # noqa: D401 (argparse's name)
        self.exit(EXIT_USER, f"{self.prog}: {message} (see {self.prog} --help)\n")


def block_size_arg(text: str) -> int:
    """``--block-size``: an integer in the config's range for ``latency.block_size``."""
    from rtupscale.config import BLOCK_SIZE_RANGE

    lo, hi = BLOCK_SIZE_RANGE
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise argparse.ArgumentTypeError(f"expected an integer from {lo} to {hi}, got {text[:80]!r}")
    return value


def cmd_check_config(args) -> int:
    from rtupscale.config import ConfigError, load_config

    path = args.path or default_config_path()
    if path is None:
        print("rtupscale check-config: no config file given or found (./config.yaml)", file=sys.stderr)
        return EXIT_USER
    try:
        cfg = load_config(path)
    except ConfigError as e:
        print_config_errors(e)
        return EXIT_USER
    problem = check_config_model(path, cfg)
    if problem is not None:
        print(problem, file=sys.stderr)
        return EXIT_USER
    print(f"{path}: config is valid")
    return EXIT_OK


def cmd_check_model(args) -> int:
    import numpy as np

    from rtupscale.model.runner import ModelRunner

    runner = ModelRunner(args.path, provider=args.provider, threads=1)
    c = runner.contract
    block = args.block_size or 4 * c.block_multiple
    c.check_block_size(block)
    # Streaming over blocks must equal one call over the whole signal.
    rng = np.random.default_rng(0)
    n_blocks = 16
    x = (0.25 * rng.standard_normal((2, n_blocks * block))).astype(np.float32)
    stream = runner.stream(2, block)
    y_stream = np.concatenate([stream.process(x[:, i * block:(i + 1) * block]).copy() for i in range(n_blocks)], axis=1)
    if c.kind == "stateful":
        y_once = runner.stream(2, n_blocks * block).process(x).copy()
        diff = float(np.abs(y_stream - y_once).max())
        verdict = "ok" if diff <= 1e-4 else "FAILS (state is not fully carried)"
        print(f"streaming (block {block}) vs one call: max abs difference {diff:.2e}: {verdict}")
    else:
        diff = 0.0
    print(f"{runner.path}: contract {c.kind}, rates {','.join(map(str, c.sample_rates))} Hz, "
          f"block multiple {c.block_multiple}, latency {runner.latency} frames, provider {runner.provider}")
    return EXIT_OK if diff <= 1e-4 else EXIT_FAIL


def cmd_upscale(args) -> int:
    from rtupscale.fileio import FILE_BLOCK, check_output, upscale_file

    config = load_config_or_exit(args.config)
    if Path(args.input).is_dir():
        return _upscale_library(args, config)
    if args.ray is not None:
        print(f"rtupscale upscale: --ray converts folders; {args.input} is not one", file=sys.stderr)
        return EXIT_USER
    check_output(Path(args.input), Path(args.output), args.bits, args.force)  # before the model loads
    runner = load_runner(config, args.model, args.provider, args.block_size or FILE_BLOCK)
    result = upscale_file(
        args.input,
        args.output,
        config,
        runner=runner,
        block_size=args.block_size,
        bits=args.bits,
        resample=args.resample,
        progress=False if args.no_progress else None,
        force=args.force,
    )
    extra = f" (resampled from {result.resampled_from} Hz)" if result.resampled_from else ""
    print(
        f"{args.output}: {result.output_frames} frames at {result.output_rate} Hz, {result.channels} ch, "
        f"from {result.input_frames} at {result.input_rate} Hz{extra}; model {result.model}, "
        f"latency {result.latency} frames compensated",
        file=sys.stderr,
    )
    return EXIT_OK


def _upscale_library(args, config) -> int:
    import functools
    import json

    from rtupscale.fileio import FILE_BLOCK
    from rtupscale.library import upscale_library

    if args.jobs is not None and not 1 <= args.jobs <= 256:
        print(f"rtupscale upscale: --jobs must be in 1..256, got {args.jobs}", file=sys.stderr)
        return EXIT_USER
    if args.ray is not None:
        from rtupscale.ray_library import parse_address

        parse_address(args.ray)  # a malformed address is refused before any work
    jobs = args.jobs or os.cpu_count() or 1
    loader = functools.partial(load_runner, config, args.model, args.provider, args.block_size or FILE_BLOCK)
    runner = loader() if jobs == 1 and args.ray is None else None
    progress = not (args.json or args.no_progress) and sys.stdout.isatty() and sys.stderr.isatty()
    summary = upscale_library(args.input, args.output, config, runner=runner, fmt=args.format,
                              bits=args.bits, resample=args.resample, force=args.force,
                              copy_other=args.copy_other, jobs=1 if args.ray else jobs, runner_loader=loader,
                              ray_address=args.ray, ray_actors=args.jobs, progress=progress,
                              ray_gpus=(args.provider or config.model.provider) != "cpu")
    if args.json:
        print(json.dumps({"done": len(summary.done), "skipped": len(summary.skipped),
                          "failed": [{"file": str(p), "error": why} for p, why in summary.failed],
                          "audio_hours": summary.audio_seconds / 3600, "wall_seconds": summary.wall_seconds,
                          **({"ray": summary.ray} if summary.ray else {})}))
    else:
        for path, why in summary.failed:
            print(f"rtupscale upscale: {path}: {why}", file=sys.stderr)
        print(summary.line(), file=sys.stderr)
    return EXIT_FAIL if summary.failed else EXIT_OK


def _daemon(name: str):
    """A function from the daemon's modules (imported only when a daemon command runs)."""
    import importlib

    module, func = name.rsplit(".", 1)
    return getattr(importlib.import_module(module), func)


def cmd_run(args) -> int:
    return _daemon("rtupscale.live.daemon.run_command")(args.config)


def cmd_status(args) -> int:
    return _daemon("rtupscale.live.status.status_command")(args.config, args.json)


def cmd_bypass(args) -> int:
    return _daemon("rtupscale.live.status.bypass_command")(args.config, args.state == "on")


def cmd_devices(args) -> int:
    return _daemon("rtupscale.audio.devices.devices_command")(args.config)


def cmd_install_service(args) -> int:
    return _daemon("rtupscale.service.install_service_command")(args.config, args.force, args.pipewire_rates)


def cmd_bench(args) -> int:
    if args.file:
        return _daemon("rtupscale.bench.bench_file_command")(args)
    return _daemon("rtupscale.bench.bench_command")(args)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="rtupscale", description="Real-time AI audio upscaler (x4 rate).")
    p.add_argument("--version", action="version", version=f"rtupscale {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cfg(sp):
        sp.add_argument("--config", metavar="PATH", help="config file (default: ./config.yaml, then ~/.config/rtupscale/config.yaml)")

    sp = sub.add_parser("run", help="run the live daemon in the foreground")
    cfg(sp)
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("upscale", help="upscale a file (WAV/FLAC/MP3/OGG in, FLAC/WAV at 4x the rate out)")
    sp.add_argument("input")
    sp.add_argument("output", help="output file, .flac or .wav")
    cfg(sp)
    sp.add_argument("--model", metavar="PATH", help="model file, or none (overrides model.path)")
    sp.add_argument("--block-size", type=block_size_arg, metavar="N", help="input frames per engine block, 16..16384 (default 16384: latency does not matter in a file)")
    sp.add_argument("--provider", choices=["auto", "cuda", "cpu"], help="overrides model.provider")
    sp.add_argument("--bits", choices=["16", "24", "float"], default="24", help="output sample format (default 24; float only for .wav)")
    sp.add_argument("--resample", action="store_true", help="resample an input at a rate the model does not accept (soxr VHQ)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    sp.add_argument("--force", action="store_true", help="replace an existing OUTPUT (folders: redo up-to-date outputs)")
    sp.add_argument("--format", choices=["flac", "wav"], default="flac", help="output format when INPUT is a folder")
    sp.add_argument("--jobs", type=int, metavar="N", help="folders: worker processes, one model each, 1..256 (default: cores)")
    sp.add_argument("--json", action="store_true", help="folders: print one JSON summary on stdout")
    sp.add_argument("--copy-other", action="store_true", help="folders: copy cover images and cue sheets too")
    sp.add_argument("--ray", metavar="HOST:PORT", help="folders: convert on this Ray cluster (every node sees the paths; "
                    "needs rtupscale[ray]); --jobs then counts actors (default: the cluster's CPUs)")
    sp.set_defaults(func=cmd_upscale)

    sp = sub.add_parser("check-config", help="validate a config file")
    sp.add_argument("path", nargs="?", help="config file (default: ./config.yaml)")
    sp.set_defaults(func=cmd_check_config)

    sp = sub.add_parser("check-model", help="load a model through the contract checks and test streaming")
    sp.add_argument("path")
    sp.add_argument("--block-size", type=block_size_arg, metavar="N", help="16..16384")
    sp.add_argument("--provider", choices=["auto", "cuda", "cpu"], default="cpu")
    sp.set_defaults(func=cmd_check_model)

    sp = sub.add_parser("status", help="show the running daemon's state")
    cfg(sp)
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.set_defaults(func=cmd_status)

    sp = sub.add_parser("bypass", help="switch the running daemon between the model and the plain upsampler")
    sp.add_argument("state", choices=["on", "off"])
    cfg(sp)
    sp.set_defaults(func=cmd_bypass)

    sp = sub.add_parser("devices", help="list audio devices and the rates they take")
    cfg(sp)
    sp.set_defaults(func=cmd_devices)

    sp = sub.add_parser("install-service", help="write a systemd user unit for the daemon")
    cfg(sp)
    sp.add_argument("--force", action="store_true", help="overwrite an existing unit (and drop-in)")
    sp.add_argument("--pipewire-rates", action="store_true",
                    help="also write ~/.config/pipewire/pipewire.conf.d/50-rtupscale-rates.conf, which lets "
                    "PipeWire's graph run at the x4 rates (default.clock.allowed-rates)")
    sp.set_defaults(func=cmd_install_service)

    sp = sub.add_parser("bench", help="time the model per block (providers x models x block sizes)")
    sp.add_argument("--provider", action="append", choices=["cpu", "cuda"], help="repeatable (default: cpu, and cuda if it loads)")
    sp.add_argument("--model", action="append", metavar="PATH", help="repeatable (default: the config's model)")
    sp.add_argument("--block", action="append", type=int, metavar="N", help="repeatable (default: 64 128 256 512 1024)")
    sp.add_argument("--seconds", type=float, default=3.0, help="timed run per case (default 3 s)")
    sp.add_argument("--json", action="store_true", help="print one JSON list of records")
    sp.add_argument("--file", metavar="AUDIO", help="instead: time file mode on AUDIO (one core) next to soxr's VHQ x4")
    sp.add_argument("--repeat", type=int, choices=range(1, 21), default=3, metavar="N",
                    help="with --file: runs per case, the median is reported (1..20, default 3)")
    cfg(sp)
    sp.set_defaults(func=cmd_bench)
    return p


def _stdout_gone() -> int:
    """The reader of stdout went away (``rtupscale status | head -1``): not an error.
    Points stdout at /dev/null so that the interpreter's last flush cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    from rtupscale.errors import Terminated, UserError

    args = build_parser().parse_args(argv)
    from rtupscale.logs import setup_logging

    setup_logging(args.verbose)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        return _stdout_gone()
    except Terminated as e:
        print(f"rtupscale {args.command}: stopped by {e.name}", file=sys.stderr)
        return 128 + e.signum
    except UserError as e:
        print(f"rtupscale {args.command}: {e}", file=sys.stderr)
        return EXIT_USER
    except KeyboardInterrupt:
        print(f"rtupscale {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("rtupscale."):
            print(f"rtupscale {args.command}: not available in this build ({e.name} is missing)", file=sys.stderr)
            return EXIT_USER
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
