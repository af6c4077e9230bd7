"""Reload planning: a pure function of the running config and the new one."""

from __future__ import annotations

import dataclasses

import pytest

from rtupscale.config import Config
from rtupscale.live.reload import ReloadPlan, plan


def _with(cfg: Config, section: str, **values) -> Config:
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})


def test_no_change_is_an_empty_plan():
    p = plan(Config(), Config())
    assert p == ReloadPlan() and not p


@pytest.mark.parametrize("section, values", [
    ("latency", {"block_size": 512}),
    ("latency", {"crossfade_ms": 50.0}),
    ("output", {"ceiling_dbfs": -1.0}),
])
def test_engine_keys_rebuild_the_engine_on_the_running_audio_path(section, values):
    p = plan(Config(), _with(Config(), section, **values))
    assert p.rebuild_engine and not p.reopen_audio and not p.model and not p.control
    assert not p.prefill  # the new pipeline carries the new pre-fill


def test_prefill_alone_moves_the_target():
    p = plan(Config(), _with(Config(), "latency", prefill_ms=5.0))
    assert p.prefill and not p.rebuild_engine and not p.reopen_audio
    assert p.changed == ("latency.prefill_ms",)


def test_a_new_playback_device_reopens_and_keeps_the_virtual_sink():
    p = plan(Config(), _with(Config(), "audio", playback="USB DAC"))
    assert p.reopen_audio and p.keep_sink and not p.rebuild_engine


@pytest.mark.parametrize("values", [{"rate": 48000}, {"channels": 1}, {"virtual_sink": "other"}, {"capture": "mic"}])
def test_what_the_virtual_sink_is_made_of_replaces_it(values):
    p = plan(Config(), _with(Config(), "audio", **values))
    assert p.reopen_audio and not p.keep_sink


@pytest.mark.parametrize("key", ["capture_buffer_ms", "playback_buffer_ms"])
def test_device_buffers_reopen_the_audio_path(key):
    p = plan(Config(), _with(Config(), "latency", **{key: 40.0}))
    assert p.reopen_audio and p.keep_sink


def test_a_reopen_takes_the_engine_and_prefill_changes_with_it():
    new = _with(_with(Config(), "audio", playback="USB DAC"), "latency", block_size=512, prefill_ms=5.0)
    p = plan(Config(), new)
    assert p.reopen_audio and not p.rebuild_engine and not p.prefill


def test_model_and_control_and_cpus():
    new = _with(_with(_with(Config(), "model", path="none", threads=2), "control", metrics_port=9100),
                "latency", keep_cpus_awake=True)
    p = plan(Config(), new)
    assert p.model and p.control and p.cpus_awake and not p.reopen_audio and not p.rebuild_engine


def test_plan_does_not_touch_its_arguments():
    old, new = Config(), _with(Config(), "latency", block_size=512)
    before = (dataclasses.asdict(old), dataclasses.asdict(new))
    plan(old, new)
    assert (dataclasses.asdict(old), dataclasses.asdict(new)) == before
