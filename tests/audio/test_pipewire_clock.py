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
