"""Loading what a command needs: the config (or its one-line errors, exit 2) and the model.

Below the CLI: the daemon, the control client, the service installer, ``devices`` and
``bench`` load their config here, not through :mod:`rtupscale.cli`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("rtupscale")

EXIT_USER = 2


def default_config_path() -> str | None:
    """``./config.yaml`` if present, else ``$XDG_CONFIG_HOME/rtupscale/config.yaml`` if present."""
    here = Path("config.yaml")
    if here.is_file():
        return str(here)
    xdg = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "rtupscale" / "config.yaml"
    return str(xdg) if xdg.is_file() else None


def load_config_or_exit(path: str | None):
    """The config at ``path`` (or the default one, or built-in defaults); exit 2 on errors."""
    from rtupscale.config import Config, ConfigError, load_config

    path = path or default_config_path()
    if path is None:
        log.info("no config file found (./config.yaml, ~/.config/rtupscale/config.yaml): using defaults")
        return Config()
    try:
        return load_config(path)
    except ConfigError as e:
        print_config_errors(e)
        raise SystemExit(EXIT_USER) from None


def print_config_errors(e) -> None:
    """One line per problem of a ConfigError, each starting with the file's name once."""
    for err in e.errors:
        print(f"{e.source}: {err}" if not err.startswith(e.source) else err, file=sys.stderr)


def load_runner(config, model: str | None = None, provider: str | None = None, block_size: int | None = None):
    """The ModelRunner the config (or ``--model``/``--provider``) asks for, or None for bypass."""
    from rtupscale.model.runner import select_runner

    if model is not None:
        path = None if model.strip().lower() == "none" else Path(model)
    else:
        path = config.model_path()
    if path is None:
        print("rtupscale: model.path is none: running the bypass path only (plain x4 upsampler)", file=sys.stderr)
        return None
    runner = select_runner(
        path,
        provider or config.model.provider,
        threads=config.model.threads,
        channels=config.audio.channels,
        block_size=block_size or config.latency.block_size,
        cuda_graph=config.model.cuda_graph,
    )
    log.info("model %s (%s), provider %s, latency %d frames", runner.name, runner.path, runner.provider, runner.latency)
    return runner


def check_config_model(path: str, cfg) -> str | None:
    """Why the config's model cannot run with its block size, in one line; None if it can.

    Loads the model through the contract checks (on the CPU) and checks
    ``latency.block_size`` against its block multiple and ``audio.rate`` against its rates
    where the capture rate is the config's (``audio.capture: auto``)."""
    from rtupscale.model.contract import ModelError
    from rtupscale.model.runner import ModelRunner

    mp = cfg.model_path()
    if mp is None:
        return None
    try:
        runner = ModelRunner(mp, provider="cpu", threads=1)
    except ModelError as e:
        return f"{path}: model.path: {e}"
    try:
        runner.contract.check_block_size(cfg.latency.block_size)
    except ModelError as e:
        return f"{path}: latency.block_size: {e}"
    if cfg.audio.capture == "auto":
        from rtupscale.config import BASE_RATES

        try:  # auto may open at either rate
            for rate in (BASE_RATES if cfg.audio.follows_rate else (cfg.audio.base_rate,)):
                runner.contract.check_rate(rate)
        except ModelError as e:
            return f"{path}: audio.rate: {e}"
    return None
