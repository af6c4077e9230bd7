"""What reaches the DAC on PipeWire: its graph clock, read from ``pw-metadata -n settings``
(text as PipeWire 0.3.65 prints it), not the sink's own format that pipewire-pulse reports."""

import pytest

from rtupscale.audio import pulse

SETTINGS = """Found "settings" metadata 30
update: id:0 key:'log.level' value:'2' type:''
update: id:0 key:'clock.rate' value:'48000' type:''
update: id:0 key:'clock.allowed-rates' value:'[ 48000 ]' type:''
update: id:0 key:'clock.quantum' value:'1024' type:''
update: id:0 key:'clock.force-rate' value:'0' type:''
"""


def test_default_pipewire_resamples_the_4x_rate_to_48k():
    clock = pulse.PipeWireClock.parse(SETTINGS)
    assert (clock.rate, clock.allowed, clock.force_rate) == (48000, (48000,), 0)
    assert clock.graph_rate(176400) == 48000
    assert clock.graph_rate(48000) == 48000
    assert str(clock) == "clock.rate 48000, allowed-rates 48000"


def test_allowed_rates_let_the_graph_run_at_the_4x_rate():
    text = SETTINGS.replace("'[ 48000 ]'", "'[ 44100 48000 176400 192000 ]'")
    clock = pulse.PipeWireClock.parse(text)
    assert clock.allowed == (44100, 48000, 176400, 192000)
    assert clock.graph_rate(176400) == 176400 and clock.graph_rate(192000) == 192000
    assert clock.graph_rate(96000) == 48000


def test_force_rate_wins():
    clock = pulse.PipeWireClock.parse(SETTINGS.replace("'clock.force-rate' value:'0'", "'clock.force-rate' value:'96000'"))
    assert clock.graph_rate(176400) == 96000


def test_no_clock_rate_is_an_error():
    with pytest.raises(pulse.SoundServerError, match="clock.rate"):
        pulse.PipeWireClock.parse('Found "settings" metadata 30\n')


def test_advice_names_allowed_rates_on_pipewire():
    info = pulse.ServerInfo("PulseAudio (on PipeWire 0.3.65)", "15.0.0", "dac", "dac.monitor")
    advice = pulse.resampling_advice(info, 176400, 48000)
    assert "default.clock.allowed-rates" in advice and "176400" in advice and "48000" in advice


# -- the DAC node's running rate (pw-dump), which decides over the settings ------------------
def _dump(rate: int | None, state: str = "running") -> list:
    params = {"Format": [{"mediaType": "audio", "mediaSubtype": "raw", "format": "F32P", "rate": rate, "channels": 2}]} if rate else {}
    return [
        {"id": 28, "type": "PipeWire:Interface:Node", "info": {"state": "suspended", "props": {"node.name": "Dummy-Driver", "node.driver": True}, "params": {}}},
        {"id": 30, "type": "PipeWire:Interface:Node", "info": {"state": state, "props": {"node.name": "dac", "node.driver": True, "media.class": "Audio/Sink"}, "params": params}},
        {"id": 44, "type": "PipeWire:Interface:Node", "info": {"state": "running", "props": {
            "node.name": "dac", "media.class": "Stream/Output/Audio", "application.process.id": 626, "node.latency": "941/176400"},
            "params": {"Format": [{"rate": 176400}]}}},
        {"id": 31, "type": "PipeWire:Interface:Port", "info": {"props": {}}},
    ]


ALLOWED = pulse.PipeWireClock.parse(SETTINGS.replace("'[ 48000 ]'", "'[ 44100 48000 176400 192000 ]'"))


def test_the_running_rate_of_the_dac_node_is_read_from_pw_dump():
    nodes = pulse.parse_pw_dump(_dump(48000))
    assert sorted(n.name for n in nodes) == ["Dummy-Driver", "dac", "dac"]
    dac = pulse.device_node(nodes, "dac")  # the sink, not a stream of the same name
    assert (dac.id, dac.rate, dac.running, dac.driver) == (30, 48000, True, True)
    stream = next(n for n in nodes if n.id == 44)
    assert (stream.pid, stream.media_class, stream.latency) == (626, "Stream/Output/Audio", "941/176400")
    assert pulse.pipewire_quantum_s(stream.latency, 176400) == 512 / 176400  # the power of two below 941
    assert pulse.pipewire_quantum_s(stream.latency, 48000) == 256 / 48000
    assert pulse.pipewire_quantum_s(None, 48000) == 0.0
    assert pulse.device_node(pulse.parse_pw_dump(_dump(None, "suspended")), "dac").rate is None


def test_a_graph_held_at_48k_is_resampled_although_176k_is_allowed():
    """The old check answered 176400 here (the rate is allowed), while the DAC ran at 48000."""
    node = pulse.device_node(pulse.parse_pw_dump(_dump(48000)), "dac")
    rate, how, fix = pulse.pipewire_verdict(node, ALLOWED, 176400)
    assert rate == 48000 and "runs at 48000 Hz" in how
    assert "another stream holds" in fix and "176400" in fix


def test_force_rate_is_named_with_the_command_that_lifts_it():
    node = pulse.device_node(pulse.parse_pw_dump(_dump(48000)), "dac")
    clock = pulse.PipeWireClock.parse(SETTINGS.replace("'clock.force-rate' value:'0'", "'clock.force-rate' value:'48000'"))
    rate, _, fix = pulse.pipewire_verdict(node, clock, 176400)
    assert rate == 48000 and "clock.force-rate 0" in fix


def test_a_4x_graph_is_not_resampled_and_a_stopped_node_falls_back_to_the_settings():
    assert pulse.pipewire_verdict(pulse.device_node(pulse.parse_pw_dump(_dump(176400)), "dac"), ALLOWED, 176400)[0::2] == (176400, "")
    idle = pulse.device_node(pulse.parse_pw_dump(_dump(None, "suspended")), "dac")
    rate, how, fix = pulse.pipewire_verdict(idle, ALLOWED, 176400)
    assert rate == 176400 and "predict" in how and fix == ""
    # the default settings (48000 only): resampled, and the fix is the allowed-rates advice (empty here)
    rate, _, fix = pulse.pipewire_verdict(idle, pulse.PipeWireClock.parse(SETTINGS), 176400)
    assert rate == 48000 and fix == ""


def test_a_dump_with_changes_appended_is_read_whole_and_the_last_state_wins():
    import json

    first, later = _dump(176400), _dump(48000)
    text = json.dumps(first, indent=2) + "\n" + json.dumps(later[1:2], indent=2) + "\n"
    assert pulse.device_node(pulse.parse_pw_dump(text), "dac").rate == 48000
    gone = json.dumps([{"id": 30, "type": "PipeWire:Interface:Node", "info": None}])
    assert pulse.device_node(pulse.parse_pw_dump(json.dumps(first) + gone), "dac") is None


def test_without_the_node_the_sinks_format_decides_not_the_settings():
    rate, how, _ = pulse.pipewire_verdict(None, ALLOWED, 176400, sink_rate=48000)
    assert rate == 48000 and "sink's format" in how
