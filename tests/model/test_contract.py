"""Malformed models must raise one-line errors that name the problem."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rtupscale.model.contract import ModelError, parse_metadata
from rtupscale.model.runner import ModelRunner
from tests import onnx_models

GOOD = {
    "rtupscale.contract": "1",
    "rtupscale.kind": "stateful",
    "rtupscale.sample_rates": "44100,48000",
    "rtupscale.factor": "4",
    "rtupscale.block_multiple": "16",
    "rtupscale.latency": "72",
    "rtupscale.state": json.dumps([{"in": "state_in_h", "out": "state_out_h", "shape": ["channels", 8]}]),
}


def test_good_metadata_parses():
    c = parse_metadata(GOOD)
    assert c.sample_rates == (44100, 48000) and c.block_multiple == 16 and c.latency == 72
    assert c.states[0].concrete_shape(2) == (2, 8)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rtupscale.contract": None}, "rtupscale.contract is missing"),
        ({"rtupscale.contract": "2"}, "this runtime reads version 1"),
        ({"rtupscale.kind": "magic"}, "expected one of stateful, windowed"),
        ({"rtupscale.sample_rates": "44.1k"}, "sample_rates"),
        ({"rtupscale.sample_rates": ""}, "sample_rates"),
        ({"rtupscale.factor": "2"}, "supports only 4"),
        ({"rtupscale.block_multiple": "0"}, "below the minimum 1"),
        ({"rtupscale.latency": "-3"}, "latency: -3 is below the minimum 0"),
        ({"rtupscale.latency": "abc"}, "not an integer"),
        ({"rtupscale.state": None}, "required for stateful"),
        ({"rtupscale.state": "[{"}, "not valid JSON"),
        ({"rtupscale.state": json.dumps([{"in": "h", "out": "state_out_h", "shape": ["channels"]}])}, "state_in_<name>"),
        ({"rtupscale.state": json.dumps([{"in": "state_in_h", "out": "state_out_x", "shape": ["channels"]}])}, "must be 'state_out_h'"),
        ({"rtupscale.state": json.dumps([{"in": "state_in_h", "out": "state_out_h", "shape": [2, 8]}])}, "'channels' exactly once"),
        ({"rtupscale.kind": "windowed", "rtupscale.window": "64", "rtupscale.overlap": "48"}, "more than half"),
        ({"rtupscale.kind": "windowed", "rtupscale.window": "64", "rtupscale.overlap": "16"}, "window - overlap = 48"),
    ],
)
def test_bad_metadata_raises_naming_it(change, message):
    meta = dict(GOOD)
    for k, v in change.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    with pytest.raises(ModelError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_metadata(meta)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        ModelRunner(tmp_path / "nope.onnx")


def test_corrupt_file(tmp_path):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        ModelRunner(p)


def test_model_without_contract_metadata(tmp_path):
    p = onnx_models.stateful_fir(tmp_path / "m.onnx", metadata={})
    with pytest.raises(ModelError, match="not an rtupscale model"):
        ModelRunner(p)


def test_declared_state_missing_from_graph(tmp_path):
    states = json.dumps([
        {"in": "state_in_fir", "out": "state_out_fir", "shape": ["channels", 2]},
        {"in": "state_in_interp", "out": "state_out_interp", "shape": ["channels", 144]},
        {"in": "state_in_gru", "out": "state_out_gru", "shape": [1, "channels", 8]},
    ])
    p = onnx_models.stateful_fir(tmp_path / "m.onnx", extra_meta={"state": states})
    with pytest.raises(ModelError, match="graph input 'state_in_gru' is missing"):
        ModelRunner(p)


def test_graph_state_not_declared(tmp_path):
    states = json.dumps([{"in": "state_in_fir", "out": "state_out_fir", "shape": ["channels", 2]}])
    p = onnx_models.stateful_fir(tmp_path / "m.onnx", extra_meta={"state": states})
    with pytest.raises(ModelError, match="'state_in_interp' is not in the contract"):
        ModelRunner(p)


def test_state_shape_mismatch(tmp_path):
    states = json.dumps([
        {"in": "state_in_fir", "out": "state_out_fir", "shape": ["channels", 5]},
        {"in": "state_in_interp", "out": "state_out_interp", "shape": ["channels", 144]},
    ])
    p = onnx_models.stateful_fir(tmp_path / "m.onnx", extra_meta={"state": states})
    with pytest.raises(ModelError, match="'state_in_fir': axis 1 is 2; the metadata declares 5"):
        ModelRunner(p)


def test_wrong_factor_output_is_caught_at_load(tmp_path):
    """A graph whose output is 2x (not 4x) the input fails the probe run, not the audio path."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Concat", ["audio_in", "audio_in"], ["audio_out"], axis=1),
        helper.make_node("Identity", ["state_in_h"], ["state_out_h"]),
    ]
    graph = helper.make_graph(
        nodes, "x2",
        [helper.make_tensor_value_info("audio_in", f, ["channels", "frames"]),
         helper.make_tensor_value_info("state_in_h", f, ["channels", 4])],
        [helper.make_tensor_value_info("audio_out", f, ["channels", "frames2"]),
         helper.make_tensor_value_info("state_out_h", f, ["channels", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {**GOOD, "rtupscale.latency": "0",
            "rtupscale.state": json.dumps([{"in": "state_in_h", "out": "state_out_h", "shape": ["channels", 4]}])}
    helper.set_model_props(model, meta)
    model.ir_version = 8
    p = tmp_path / "x2.onnx"
    onnx.save(model, str(p))
    runner = ModelRunner(p)
    with pytest.raises(ModelError, match="fails on a \\[2, 64\\] block"):
        runner.stream(2, 64)


def test_rate_check_lists_accepted_rates(fir_model):
    runner = ModelRunner(fir_model)
    with pytest.raises(ModelError, match="does not accept 96000 Hz input; it accepts 44100, 48000 Hz"):
        runner.contract.check_rate(96000)
    assert np.isfinite(runner.latency)
