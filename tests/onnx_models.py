"""Small contract models built with onnx.helper, for tests that need no trained model.

- ``stateful_fir``: a causal base-rate FIR followed by the runtime's own x4 interpolation
  filter, both as convolutions whose histories are carried as two named state tensors.
  Dropping or resetting either state between blocks changes the output at block edges, so
  streaming-equals-offline tests fail if the runtime loses state.
- ``windowed_hold``: a stateless windowed model (x4 sample-and-hold times a gain).
- hostile variants: NaN output, +20 dBFS output, a plain gain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from rtupscale.dsp.interp import LATENCY as INTERP_LATENCY, design_interpolator

OPSET = 17
IR_VERSION = 8  # onnxruntime 1.31 reads <= 13; onnx 1.23 writes 14 by default
FIR = np.array([1.3, -0.45, 0.15], np.float32)
"""The test model's base-rate FIR: a mild high shelf, so the model path differs from bypass."""


def _meta(model: onnx.ModelProto, **props: str) -> None:
    helper.set_model_props(model, {f"rtupscale.{k}": str(v) for k, v in props.items()})


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def stateful_fir(
    path: Path,
    gain: float = 1.0,
    nan: bool = False,
    block_multiple: int = 16,
    rates: str = "44100,48000",
    extra_meta: dict | None = None,
    metadata: dict | None = None,
) -> Path:
    """Stateful model: ``audio_out = gain * interp4(fir(audio_in))`` with carried histories.

    ``nan=True`` multiplies by NaN instead (a hostile model). ``metadata`` replaces the
    contract metadata wholesale (for malformed-model tests); ``extra_meta`` adds to it.
    """
    poly = design_interpolator().astype(np.float32)  # [T, 4]
    taps = poly.shape[0]
    k = len(FIR)
    # Conv computes cross-correlation: weight[j] multiplies z[n + j]; reversed filters make it a convolution.
    w_fir = FIR[::-1].reshape(1, 1, k).copy()
    w_interp = poly[::-1].T.reshape(4, 1, taps).copy()
    inits = [
        numpy_helper.from_array(w_fir, "w_fir"),
        numpy_helper.from_array(w_interp, "w_interp"),
        numpy_helper.from_array(np.array([float("nan") if nan else gain], np.float32), "gain"),
        numpy_helper.from_array(np.array([0, 1], np.int64), "ax01"),
        numpy_helper.from_array(np.array([1], np.int64), "ax1"),
        numpy_helper.from_array(np.array([-(k - 1)], np.int64), "neg_fir_hist"),
        numpy_helper.from_array(np.array([-(taps - 1)], np.int64), "neg_interp_hist"),
        numpy_helper.from_array(np.array([2**62], np.int64), "end"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
    ]
    nodes = [
        # FIR over [history, block]
        helper.make_node("Concat", ["state_in_fir", "audio_in"], ["z1"], axis=1),
        helper.make_node("Slice", ["z1", "neg_fir_hist", "end", "ax1"], ["state_out_fir"]),
        helper.make_node("Unsqueeze", ["z1", "ax1"], ["z1u"]),
        helper.make_node("Conv", ["z1u", "w_fir"], ["y1u"]),
        helper.make_node("Squeeze", ["y1u", "ax1"], ["y1"]),
        # x4 interpolation over [history, fir output]
        helper.make_node("Concat", ["state_in_interp", "y1"], ["z2"], axis=1),
        helper.make_node("Slice", ["z2", "neg_interp_hist", "end", "ax1"], ["state_out_interp"]),
        helper.make_node("Unsqueeze", ["z2", "ax1"], ["z2u"]),
        helper.make_node("Conv", ["z2u", "w_interp"], ["y2"]),  # [C, 4, N]
        helper.make_node("Transpose", ["y2"], ["y2t"], perm=[0, 2, 1]),  # [C, N, 4]
        helper.make_node("Reshape", ["y2t", "flat_shape"], ["y3"]),
        helper.make_node("Mul", ["y3", "gain"], ["audio_out"]),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "stateful_fir",
        [
            helper.make_tensor_value_info("audio_in", f, ["channels", "frames"]),
            helper.make_tensor_value_info("state_in_fir", f, ["channels", k - 1]),
            helper.make_tensor_value_info("state_in_interp", f, ["channels", taps - 1]),
        ],
        [
            helper.make_tensor_value_info("audio_out", f, ["channels", "frames4"]),
            helper.make_tensor_value_info("state_out_fir", f, ["channels", k - 1]),
            helper.make_tensor_value_info("state_out_interp", f, ["channels", taps - 1]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    meta = metadata if metadata is not None else {
        "contract": "1",
        "kind": "stateful",
        "sample_rates": rates,
        "factor": "4",
        "block_multiple": str(block_multiple),
        "latency": str(INTERP_LATENCY),
        "state": json.dumps([
            {"in": "state_in_fir", "out": "state_out_fir", "shape": ["channels", k - 1]},
            {"in": "state_in_interp", "out": "state_out_interp", "shape": ["channels", taps - 1]},
        ]),
        "name": "test-fir",
    }
    meta = {**meta, **(extra_meta or {})}
    _meta(model, **meta)
    return _save(model, path)


def reference_fir(x: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """What ``stateful_fir`` computes offline, latency removed. ``[C, N] -> [C, 4N]``."""
    from rtupscale.dsp.interp import interpolate

    y = np.stack([np.convolve(ch, FIR)[: x.shape[1]] for ch in x]).astype(np.float32)
    return gain * interpolate(y)


def windowed_hold(path: Path, window: int = 96, overlap: int = 32, gain: float = 0.8) -> Path:
    """Stateless windowed model: x4 sample-and-hold times ``gain``, latency 0."""
    inits = [
        numpy_helper.from_array(np.array([gain], np.float32), "gain"),
        numpy_helper.from_array(np.array([2], np.int64), "ax2"),
        numpy_helper.from_array(np.array([1, 1, 4], np.int64), "rep"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["audio_in", "ax2"], ["u"]),  # [C, W, 1]
        helper.make_node("Tile", ["u", "rep"], ["t"]),  # [C, W, 4]
        helper.make_node("Reshape", ["t", "flat_shape"], ["r"]),
        helper.make_node("Mul", ["r", "gain"], ["audio_out"]),
    ]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "windowed_hold",
        [helper.make_tensor_value_info("audio_in", f, ["channels", window])],
        [helper.make_tensor_value_info("audio_out", f, ["channels", 4 * window])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    _meta(
        model,
        contract="1",
        kind="windowed",
        sample_rates="44100,48000",
        factor="4",
        block_multiple=str(window - overlap),
        latency="0",
        window=str(window),
        overlap=str(overlap),
        name="test-hold",
    )
    return _save(model, path)
