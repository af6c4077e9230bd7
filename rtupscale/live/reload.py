"""What a reload rebuilds: a pure plan from the running config and the new one."""

from __future__ import annotations

from dataclasses import dataclass

from rtupscale.config import diff_configs

AUDIO_PATH_KEYS = ("latency.capture_buffer_ms", "latency.playback_buffer_ms")
"""Keys outside ``audio.`` that reopen the audio path (they are the streams' buffers)."""
ENGINE_KEYS = ("latency.block_size", "latency.crossfade_ms", "output.ceiling_dbfs")
"""Keys that need a new engine (built beside the running one, switched at model gain 0)."""
SINK_KEYS = ("capture", "virtual_sink", "rate", "channels")
"""``audio.`` keys that need a new virtual sink; a reopen without them keeps the sink."""


@dataclass(frozen=True)
class ReloadPlan:
    """What changed and what to rebuild, in the order the daemon applies it."""

    changed: tuple[str, ...] = ()
    control: bool = False
    """Restart the control socket / metrics (first: a socket it cannot take changes nothing)."""
    model: bool = False
    """Load the new model (a bad model keeps the running one)."""
    reopen_audio: bool = False
    """Close and reopen the audio path with the new config."""
    keep_sink: bool = True
    """On a reopen, keep the virtual sink (and the apps playing to it)."""
    rebuild_engine: bool = False
    """A new engine and pipeline on the running audio path, under the crossfade."""
    prefill: bool = False
    """Move the drift control's target to the new ``latency.prefill_ms``."""
    cpus_awake: bool = False
    """Start or stop the idle spinners (``latency.keep_cpus_awake``)."""

    def __bool__(self) -> bool:
        return bool(self.changed)


def plan(old_config, new_config) -> ReloadPlan:
    """The plan that takes a daemon running ``old_config`` to ``new_config``.

    A model change alone is a swap under the crossfade on the running engine; the daemon
    rebuilds the engine instead where the running engine cannot take the new model
    (``Engine.can_swap``), which only the loaded model can say.
    """
    changed = tuple(diff_configs(old_config, new_config))
    if not changed:
        return ReloadPlan()
    reopen = any(k.startswith("audio.") or k in AUDIO_PATH_KEYS for k in changed)
    engine = not reopen and any(k in ENGINE_KEYS for k in changed)
    return ReloadPlan(
        changed=changed,
        control=any(k.startswith("control.") for k in changed),
        model=any(k.startswith("model.") for k in changed),
        reopen_audio=reopen,
        keep_sink=all(getattr(old_config.audio, k) == getattr(new_config.audio, k) for k in SINK_KEYS),
        rebuild_engine=engine,
        prefill=not reopen and not engine and "latency.prefill_ms" in changed,
        cpus_awake="latency.keep_cpus_awake" in changed,
    )
