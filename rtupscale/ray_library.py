"""Library mode on a Ray cluster: the same conversion, on actors that keep the model loaded.

Each actor takes one CPU of the cluster (and, where the cluster has GPUs and the model may
run on one, one actor per GPU takes that GPU too), calls the picklable ``runner_loader()`` once
(one ONNX Runtime session for the whole batch, as a local worker does) and converts files
with :func:`rtupscale.library._convert`, the function local mode runs; so the outputs are
those of local mode, sample for sample. The driver only hands out paths: the source tree,
the destination and the model must be at the same paths on every node (a shared or
network file system), and rtupscale (same version) installed on every node.

Needs the ``ray`` extra: ``pip install 'rtupscale[ray]'``.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

from rtupscale import __version__
from rtupscale.errors import UserError

log = logging.getLogger("rtupscale.ray")

CONNECT_TIMEOUT_S = 5.0


class RayModeError(UserError):
    """Ray is missing, the cluster cannot be reached, or it runs another rtupscale."""


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` of a Ray head (its GCS port, 6379 by default) as (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayModeError(f"--ray {address!r}: expected HOST:PORT of a running Ray head, e.g. 10.0.0.5:6379")
    return host.strip("[]"), int(port)


def connect(address: str, runtime_env: dict | None = None):
    """The ``ray`` module, connected to the cluster at ``address`` (checked reachable first:
    ``ray.init`` itself retries an unreachable head for minutes). ``runtime_env``: Ray's,
    e.g. ``{"py_modules": [folder]}`` to ship a package the nodes do not have installed."""
    host, port = parse_address(address)
    try:
        import ray
    except ImportError:
        raise RayModeError("Ray is not installed: pip install 'rtupscale[ray]'") from None
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise RayModeError(f"--ray {address}: no Ray head answers there ({e.strerror or e}); "
                           "start one with `ray start --head --port PORT` or give its HOST:PORT") from None
    ray.init(address=f"{host}:{port}", log_to_driver=False, logging_level=logging.WARNING,
             configure_logging=False, runtime_env=runtime_env)
    return ray


def _actor_class(ray):
    @ray.remote(num_cpus=1)
    class Converter:
        """One worker: the model loaded once, then one file per call."""

        def __init__(self, runner_loader, config):
            from rtupscale.library import _init_worker

            _init_worker(runner_loader, config)

        def version(self) -> str:
            import rtupscale

            return rtupscale.__version__

        def provider(self) -> str:
            """Where this actor's model runs: ``cuda``, ``cpu``, or ``none`` (bypass)."""
            from rtupscale.library import _worker

            runner = _worker.get("runner")
            return "none" if runner is None else str(runner.provider)

        def convert(self, inp: str, out: str, fmt: str, bits: str, resample: bool):
            from rtupscale.library import _convert

            return _convert(Path(inp), Path(out), fmt, bits, resample)

    return Converter


def ray_results(address: str, todo: list[tuple[Path, Path]], fmt: str, bits: str, resample: bool, config,
                actors: int | None, runner_loader, use_gpus: bool = False, report: dict | None = None):
    """Convert ``todo`` on the cluster; yields ``(input, seconds, None | reason)`` as files end,
    like the local pool. ``actors``: how many to start (None: one per CPU of the cluster).
    With ``use_gpus``, as many of them as the cluster has GPUs each hold one GPU (Ray hides
    the others from it), so a model on ``provider: auto`` or ``cuda`` runs there; the
    outputs then match local mode to float rounding, not sample for sample. ``report``, if
    given, gets ``actors``: each actor's ``{"gpu": bool, "provider": str}``.
    An actor that dies (its node lost) fails its file by name; the others go on."""
    ray = connect(address)
    try:
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 0))
        n = min(len(todo), actors or max(cpus, 1))
        n_gpu = min(int(resources.get("GPU", 0)), n) if use_gpus else 0
        converter = _actor_class(ray)
        pool = ([converter.options(num_gpus=1).remote(runner_loader, config) for _ in range(n_gpu)]
                + [converter.remote(runner_loader, config) for _ in range(n - n_gpu)])
        try:
            versions = set(ray.get([a.version.remote() for a in pool]))
        except ray.exceptions.RayError as e:  # the model or rtupscale failed to load on a node
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            raise RayModeError(f"--ray {address}: the workers could not start: {lines[-1][:300] if lines else e!r}") from None
        if versions != {__version__}:
            raise RayModeError(f"--ray {address}: the cluster runs rtupscale {', '.join(sorted(versions))}, "
                               f"this is {__version__}: install the same version on every node")
        providers = ray.get([a.provider.remote() for a in pool])
        if report is not None:
            report["actors"] = [{"gpu": i < n_gpu, "provider": p} for i, p in enumerate(providers)]
        log.info("ray %s: %d actors for %d files (%d holding a GPU); models on %s", address, n, len(todo), n_gpu,
                 ", ".join(providers))
        queue = list(reversed(todo))
        running = {}
        for actor in pool:
            if queue:
                inp, out = queue.pop()
                running[actor.convert.remote(str(inp), str(out), fmt, bits, resample)] = (actor, inp)
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            actor, inp = running.pop(done[0])
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayError as e:  # the actor or its node died: this file fails
                yield inp, 0.0, f"lost on the Ray cluster ({type(e).__name__})"
                actor = None
            if queue and actor is not None:
                nxt, out = queue.pop()
                running[actor.convert.remote(str(nxt), str(out), fmt, bits, resample)] = (actor, nxt)
            elif queue and not running:
                for inp, _ in reversed(queue):
                    yield inp, 0.0, "not converted: every Ray actor was lost"
                queue.clear()
    finally:
        ray.shutdown()
