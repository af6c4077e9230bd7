"""Which rate really reaches the DAC, and whether the capture source changed its rate."""

from __future__ import annotations

import logging
import os

from rtupscale.audio.pulse import device_node as server_device_node
from rtupscale.live.server import SoundServerClient

log = logging.getLogger("rtupscale.daemon")


def check_playback_rate(session, server: SoundServerClient) -> None:
    """Find the rate that reaches the DAC; log it and keep it in ``session.routing`` (for
    ``status``), with the fix where the server resamples."""
    r = session.routing
    if session.playback_ep.server_name is None:
        r.playback_route = f"direct to PortAudio device, {r.out_rate} Hz"
        r.dac_rate, r.resampled = r.out_rate, False
        log.info("rate check: %s", r.playback_route)
        return
    try:
        route = server.playback_route()
        croute = server.capture_route()
    except server.SoundServerError as e:
        log.warning("rate check failed: %s", e)
        return
    if croute is not None:
        r.capture_route = f"{croute.device} [{croute.device_spec}] -> stream [{croute.stream_spec}], resample {croute.resample_method or 'n/a'}"
    if route is None:
        log.warning("rate check: our playback stream is not listed by the server")
        return
    # worked out in locals and set together at the end: status reads them from another
    # thread, and must not see a new rate with the old (or no) advice
    dac_rate, resampled = route.device_spec.rate, route.resampled
    text = f"stream [{route.stream_spec}] -> {route.device} [{route.device_spec}], resample method {route.resample_method or 'n/a'}"
    info = session.server
    advice = ""
    if info is not None and info.is_pipewire:
        # The sink's format follows the graph, and "resample method" is always "PipeWire": the
        # rate the DAC's node runs at says what reaches the DAC (the clock settings only say
        # what the graph may run at).
        try:
            nodes = server.pipewire_nodes()
        except server.SoundServerError as e:
            nodes = []
            text += f"; PipeWire DAC node unknown ({e})"
        node = server_device_node(nodes, route.device)
        _pipewire_quanta(r, nodes, node.rate if node is not None and node.rate else r.out_rate, session.rate)
        try:
            clock = server.pipewire_clock()
        except server.SoundServerError as e:
            clock = None
            text += f"; PipeWire clock settings unknown ({e})"
        rate, how, advice = server.pipewire_verdict(node, clock, r.out_rate, route.device_spec.rate)
        if rate is not None:
            dac_rate = rate
        resampled = dac_rate != r.out_rate
        text += f"; {how}"
    if resampled and not advice:
        advice = server.resampling_advice(info, r.out_rate, dac_rate) if info else ""
    if not resampled:
        advice = ""
    r.playback_route, r.advice, r.dac_rate, r.resampled = text, advice, dac_rate, resampled
    if resampled:
        log.warning("rate check: %s: the DAC gets %d Hz, not %d Hz (RESAMPLED). %s", text, dac_rate, r.out_rate, advice)
    else:
        log.info("rate check: %s: %d Hz reaches the DAC", text, dac_rate)


def _pipewire_quanta(r, nodes, dac_rate: int, capture_rate: int) -> None:
    """The graph quanta our two streams ask for (their ``node.latency``), for the latency
    report (see ``Session._pipewire_latency``)."""
    from rtupscale.audio.pulse import pipewire_quantum_s

    pid = os.getpid()
    for n in nodes:
        if n.pid != pid:
            continue
        if n.media_class == "Stream/Output/Audio":
            r.quantum_out_s = pipewire_quantum_s(n.latency, dac_rate)
        elif n.media_class == "Stream/Input/Audio":
            r.quantum_in_s = pipewire_quantum_s(n.latency, capture_rate)


def capture_rate_change(session, server: SoundServerClient, capture_setting: str) -> int | None:
    """The new rate of a chosen capture source that switched between 44.1 and 48 kHz, else
    None (``audio.capture: auto`` captures our own sink, whose rate we set)."""
    ep = session.capture_ep
    if not ep.server_name or capture_setting == "auto":
        return None
    try:
        src = [x for x in server.list_sources() if x.name == ep.server_name]
    except server.SoundServerError:
        return None  # the stall watchdog handles a server that went away
    if src and src[0].spec.rate in (44100, 48000) and src[0].spec.rate != session.rate:
        return src[0].spec.rate
    return None
