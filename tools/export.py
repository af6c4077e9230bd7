"""Export a trained checkpoint to an rtupscale model (docs/model-contract.md) and prove it.

Usage::

    .venv/bin/python -m tools.export runs/ft1/final.pt models/rtupscale-restore-v2.onnx

Steps, each of which fails the export (non-zero exit, the file removed) rather than warns:

1. ``torch.onnx.export`` (TorchScript exporter, opset 17) with the contract's names
   (``audio_in``, ``audio_out``, ``state_in_*`` -> ``state_out_*``) and dynamic channel and
   frame axes; IR version set to ``IR_VERSION`` (onnxruntime 1.31 reads <= 13);
2. the contract metadata, then ``onnx.checker.check_model``;
3. parity: onnxruntime (one thread) against PyTorch over many consecutive blocks with the
   state carried, at two block sizes, each compared with one offline PyTorch call over the
   whole signal: max abs difference must be <= ``TOLERANCE``;
4. the runtime's own loader, ``rtupscale.model.runner.ModelRunner``, reads the file
   (metadata and graph checked against the contract) and streams the same signal in
   blocks of 256: it must agree with PyTorch too.

``--fp16-weights`` (for big models: half the file) first rounds the PyTorch model's
parameters to float16 and stores the large weight tensors as float16 initializers, each
behind a ``Cast`` to float32 that onnxruntime folds when it loads the file: the graph still
computes in float32, and the checks above compare it with the rounded PyTorch model, which is
the model that ships (its evaluation is of the exported file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from tools.model import FACTOR, GAIN_MAX, HOP, CutoffRestorer, Geometry, Restorer, build_model, count_parameters, load_weights

IR_VERSION = 10
OPSET = 17
TOLERANCE = 1e-4
SAMPLE_RATES = (44100, 48000)
PARITY_BLOCKS = (1, 4)  # in hops: 128 and 512 samples at hop 128


class ExportError(RuntimeError):
    """The exported model does not match PyTorch or the contract."""


RULES = ("hold_ms", "cliff_db", "cliff_gate", "high_cutoff_hz", "hold_share", "over_gate",
         "over_holes", "floor_db", "cliff_hold_ms")  # a cutoff model's weightless gating rules


def load_checkpoint(path: str | Path, rules: dict[str, float] | None = None) -> tuple[Restorer, dict]:
    """A ``Restorer`` from a ``tools.train`` checkpoint, in eval mode, and the checkpoint's config.

    ``rules`` overrides the gating rules of a cutoff model (keys in ``RULES``): they have no
    weights, so a checkpoint can be tried under other rules without training again.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    config = ckpt.get("config", {})
    unknown = set(rules or {}) - set(RULES)
    if unknown:
        raise ValueError(f"unknown rule(s) {sorted(unknown)}: allowed are {list(RULES)}")
    if rules and config.get("arch", "gru") != "cutoff":
        raise ValueError("gating rules apply to --arch cutoff checkpoints only")
    config = {**config, **(rules or {})}
    model = build_model(config.get("arch", "gru"), config.get("hidden", 192), config.get("layers", 2),
                        config.get("hop", HOP), config.get("hold_ms", 0.0), config.get("over", True),
                        config.get("cliff_db", 0.0), bool(config.get("cliff_gate", False)),
                        config.get("high_cutoff_hz", CutoffRestorer.HIGH_CUTOFF_HZ), config.get("hold_share", 1.0),
                        bool(config.get("over_gate", False)), bool(config.get("over_holes", False)),
                        config.get("floor_db", 0.0), bool(config.get("floor_learned", False)),
                        config.get("cliff_hold_ms", 0.0))
    load_weights(model, ckpt["model"])
    model.eval()
    return model, {**config, "step": ckpt.get("step")}


def checkpoint_from_onnx(path: str | Path, rules: dict[str, float] | None = None) -> dict:
    """A ``tools.train`` checkpoint (``{"model", "config", "step"}``) holding the weights of an
    exported ``--arch cutoff`` model, so that a shipped model can be fine-tuned after its
    training run is gone (``tools.train --init model.onnx``).

    The architecture is read from the file: ``hidden`` from the layer sizes, ``hop`` from the
    block multiple, the hold from its state's shape, ``over`` from the output layer's width,
    the cliff rule and ``high_cutoff_hz`` from the description ``main`` writes (``rules``
    overrides them). The result is proved, not trusted: PyTorch with these weights must give
    the file's output over the parity signal (:func:`check_parity`), or ``ExportError``.
    """
    import re

    from onnx import numpy_helper

    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    if "mid.bias" not in inits or "inp.bias" not in inits:
        raise ExportError(f"{path}: not an --arch cutoff model (no inp/mid layers)")
    hidden = int(inits["mid.bias"].shape[0])
    hop = int(meta.get("rtupscale.block_multiple", HOP))
    geo = Geometry(hop)
    n_shifts, n_band = len(geo.shifts), geo.n_band
    n_shift_band = n_shifts * n_band
    states = {s["in"].removeprefix("state_in_"): s["shape"] for s in json.loads(meta["rtupscale.state"])}
    description = meta.get("rtupscale.description", "")
    config = {"arch": "cutoff", "hidden": hidden, "hop": hop, "layers": 0, "cliff_gate": False,
              "hold_ms": 0.0, "cliff_db": 0.0, "high_cutoff_hz": CutoffRestorer.HIGH_CUTOFF_HZ, "hold_share": 1.0,
              "over_gate": "over gains too" in description, "over_holes": "over gains in holes" in description}
    if "hold" in states:
        config["hold_ms"] = (states["hold"][1] + 1) * hop * 1000.0 / 44100
        config["cliff_gate"] = states["hold"][2] == 2 * n_band  # has content | cliff under it
        remembered = re.search(r"under a cliff seen in the last ([0-9.]+) ms", description)
        if remembered:  # the state spans the cliff's memory; the hold is in the description
            config["cliff_hold_ms"] = config["hold_ms"]
            config["hold_ms"] = float(re.search(r"fills bins empty for ([0-9.]+) ms", description).group(1))
    cliff = re.search(r"above a ([0-9.]+) dB cliff", description)
    config["cliff_db"] = float(cliff.group(1)) if cliff else 0.0
    share = re.search(r"empty in ([0-9.]+) % of ([0-9.]+) ms", description)
    if share:
        config["hold_share"] = float(share.group(1)) / 100.0
    floor = re.search(r"weak bins ([0-9.]+) dB under their source", description)
    config["floor_db"] = float(floor.group(1)) if floor else 0.0
    high = re.search(r"cut-off below ([0-9.]+) kHz", description)
    if high:
        config["high_cutoff_hz"] = float(high.group(1)) * 1000.0
    config["floor_learned"] = "(learned scale)" in description
    config.update(rules or {})
    weights = {}  # MatMul weights in graph order: inp, the three mixes, mid; then out
    for node in proto.graph.node:
        if node.op_type == "MatMul" and node.input[1] in inits:
            w = inits[node.input[1]]
            if w.ndim == 2 and w.shape[0] == hidden and w.shape[1] in (n_shift_band, 2 * n_shift_band):
                weights["out"] = w
            elif w.ndim == 2 and w.shape == (hidden, n_band) and config["floor_learned"]:
                weights["floor"] = w
            elif w.ndim == 2 and w.shape[1] == hidden:
                weights.setdefault("hidden", []).append(w)
    if len(weights.get("hidden", [])) != 5 or "out" not in weights:
        raise ExportError(f"{path}: expected 5 hidden-layer MatMul weights and an output layer, "
                          f"found {len(weights.get('hidden', []))} and {'out' in weights}")
    config["over"] = weights["out"].shape[1] == 2 * n_shift_band
    # the whole output layer keeps its bias's name; the fill half alone (over off) is a slice
    biases = [inits["out.bias"]] if "out.bias" in inits else [
        v for k, v in inits.items() if v.shape == (weights["out"].shape[1],) and not k.endswith(".bias")]
    gates = [v.reshape(-1) for v in inits.values() if v.ndim == 2 and v.shape[1] == 1
             and v.shape[0] == n_shifts]
    if config["over"] and len(gates) == 1:  # equal gates: the exporter keeps one constant for both
        gates = gates * 2
    if len(biases) != 1 or len(gates) != (2 if config["over"] else 1):
        raise ExportError(f"{path}: could not find the output bias and gate constants")
    model = build_model("cutoff", hidden, 0, hop, config["hold_ms"], config["over"], config["cliff_db"],
                        bool(config["cliff_gate"]), config["high_cutoff_hz"], config["hold_share"],
                        bool(config["over_gate"]) and config["over"], bool(config["over_holes"]) and config["over"],
                        config["floor_db"], config["floor_learned"], config.get("cliff_hold_ms", 0.0))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if config["floor_learned"]:
        if "floor" not in weights or "floor_out.bias" not in inits:
            raise ExportError(f"{path}: a learned floor scale is described but its layer was not found")
        state["floor_out.weight"] = torch.from_numpy(weights["floor"].T.copy())
        state["floor_out.bias"] = torch.from_numpy(inits["floor_out.bias"].copy())
    names = ["inp.weight", "mixes.0.lin.weight", "mixes.1.lin.weight", "mixes.2.lin.weight", "mid.weight"]
    for name, w in zip(names, weights["hidden"]):
        state[name] = torch.from_numpy(w.T.copy())
    for name in ("inp.bias", "mixes.0.lin.bias", "mixes.1.lin.bias", "mixes.2.lin.bias", "mid.bias"):
        state[name] = torch.from_numpy(inits[name].copy())
    out_w, out_b = torch.from_numpy(weights["out"].T.copy()), torch.from_numpy(biases[0].copy())
    state["out.weight"][: out_w.shape[0]] = out_w
    state["out.bias"][: out_b.shape[0]] = out_b
    # the graph holds 10 / GAIN_MAX * gate; with over, try both orders of the two gates
    orders = [gates] if len(gates) == 1 else [gates, gates[::-1]]
    last_error = None
    for order in orders:
        state["gate"] = torch.from_numpy(order[0] * GAIN_MAX / 10.0)
        if len(order) > 1:
            state["gate_over"] = torch.from_numpy(order[1] * GAIN_MAX / 10.0)
        load_weights(model, state)
        model.eval()
        try:
            check_parity(model, path)
        except Exception as e:  # a mismatch, or rules whose state shapes the file does not take
            last_error = e
            continue
        return {"model": model.state_dict(), "config": config, "step": 0, "from_onnx": str(path)}
    raise ExportError(f"{path}: the recovered weights do not reproduce the file ({last_error}); "
                      f"pass its rules ({', '.join(RULES)}) explicitly")


def metadata(model: Restorer, name: str, description: str) -> dict[str, str]:
    shapes = model.state_shapes("channels")
    states = [{"in": f"state_in_{n}", "out": f"state_out_{n}", "shape": list(shapes[n])} for n in model.state_names]
    return {
        "rtupscale.contract": "1",
        "rtupscale.kind": "stateful",
        "rtupscale.sample_rates": ",".join(str(r) for r in SAMPLE_RATES),
        "rtupscale.factor": str(FACTOR),
        "rtupscale.block_multiple": str(model.hop),
        "rtupscale.latency": str(model.latency),
        "rtupscale.state": json.dumps(states),
        "rtupscale.name": name,
        "rtupscale.description": description,
    }


FP16_MIN_ELEMENTS = 4096  # smaller initializers (biases, the gate's products) stay float32


def round_parameters_to_fp16(model: Restorer) -> None:
    """Round every parameter to the nearest float16 value (kept as float32)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def store_weights_fp16(proto: onnx.ModelProto, min_elements: int = FP16_MIN_ELEMENTS) -> int:
    """Store float32 initializers of ``min_elements`` or more as float16 behind a ``Cast``.

    Exact only for values already rounded to float16 (:func:`round_parameters_to_fp16`).
    Returns how many tensors were converted.
    """
    from onnx import TensorProto, helper, numpy_helper

    converted = []
    for init in proto.graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        values = numpy_helper.to_array(init)
        half = numpy_helper.from_array(values.astype(np.float16), init.name + "_fp16")
        converted.append((init, half))
    for init, half in converted:
        proto.graph.initializer.remove(init)
        proto.graph.initializer.append(half)
    casts = [helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=f"cast_{init.name}")
             for init, half in converted]
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return len(converted)


def export_onnx(model: Restorer, path: str | Path, name: str, description: str, fp16_weights: bool = False) -> None:
    """Write ``path`` (steps 1 and 2 of the module docstring)."""
    channels, frames = 2, 4 * model.hop
    example = (torch.zeros(channels, frames), *model.initial_state(channels))
    inputs = ["audio_in"] + [f"state_in_{n}" for n in model.state_names]
    outputs = ["audio_out"] + [f"state_out_{n}" for n in model.state_names]
    shapes = model.state_shapes("channels")
    dynamic = {"audio_in": {0: "channels", 1: "frames"}, "audio_out": {0: "channels", 1: "frames_out"}}
    for n in model.state_names:
        axis = shapes[n].index("channels")
        dynamic[f"state_in_{n}"] = {axis: "channels"}
        dynamic[f"state_out_{n}"] = {axis: "channels"}
    with torch.no_grad():
        torch.onnx.export(model, example, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    proto = onnx.load(str(path))
    if fp16_weights and not store_weights_fp16(proto):
        raise ExportError("--fp16-weights: no weight tensor was large enough to store as float16")
    proto.ir_version = IR_VERSION
    onnx.helper.set_model_props(proto, metadata(model, name, description))
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def parity_signal(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """Stereo test signal: tones, noise bursts and clicks at a music-like level. ``[2, n]`` float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr) // 1024 * 1024
    t = np.arange(n) / sr
    x = np.zeros((2, n))
    for c in range(2):
        for f in rng.uniform(100, 15000, 6):
            x[c] += 0.05 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3))
        env = (np.sin(2 * np.pi * rng.uniform(1, 4) * t) > 0.5).astype(float)
        x[c] += 0.1 * rng.standard_normal(n) * env
        x[c, rng.integers(0, n, 10)] += 0.5
    return x.astype(np.float32)


def torch_offline(model: Restorer, x: np.ndarray) -> np.ndarray:
    """One PyTorch call over the whole signal from zero state. ``[C, n] -> [C, 4n]``."""
    with torch.no_grad():
        out, *_ = model(torch.from_numpy(x), *model.initial_state(x.shape[0]))
    return out.numpy()


def ort_blocks(session: ort.InferenceSession, x: np.ndarray, block: int, shapes: dict) -> np.ndarray:
    """onnxruntime over consecutive blocks with every state carried. ``[C, n] -> [C, 4n]``."""
    c, n = x.shape
    state = {f"state_in_{k}": np.zeros(tuple(c if d == "channels" else d for d in s), np.float32)
             for k, s in shapes.items()}
    out = []
    for i in range(0, n, block):
        result = session.run(None, {"audio_in": x[:, i:i + block], **state})
        out.append(result[0])
        state = {f"state_in_{k}": v for k, v in zip(shapes, result[1:])}
    return np.concatenate(out, axis=1)


def check_parity(model: Restorer, path: str | Path, seconds: float = 3.0) -> dict[str, float]:
    """Step 3. Returns ``{"block_<N>": max_abs_diff}``; raises ``ExportError`` above ``TOLERANCE``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = parity_signal(44100, seconds)
    reference = torch_offline(model, x)
    if not np.any(reference):
        raise ExportError("PyTorch output is all zeros: nothing to compare")
    diffs = {}
    blocks = [hops * model.hop for hops in PARITY_BLOCKS]
    for block in blocks:
        got = ort_blocks(session, x, block, model.state_shapes("channels"))
        diffs[f"block_{block}"] = float(np.max(np.abs(got - reference)))
    # Mono (a batch of one) must give channel 0's output: channels are independent.
    got = ort_blocks(session, x[:1], blocks[0], model.state_shapes("channels"))
    diffs["mono"] = float(np.max(np.abs(got - reference[:1])))
    bad = {k: v for k, v in diffs.items() if not v <= TOLERANCE}
    if bad:
        raise ExportError(f"onnxruntime and PyTorch disagree: max abs diff {bad} > {TOLERANCE}")
    return diffs


def check_runtime(model: Restorer, path: str | Path, block: int = 256, seconds: float = 2.0) -> float:
    """Step 4: load through the runtime's contract checks and stream. Returns max abs diff."""
    from rtupscale.model.runner import ModelRunner

    runner = ModelRunner(path, provider="cpu", threads=1)
    if runner.latency != model.latency:
        raise ExportError(f"runtime reads latency {runner.latency}, the model has {model.latency}")
    x = parity_signal(48000, seconds, seed=1)
    x = x[:, : x.shape[1] // block * block]
    stream = runner.stream(2, block)
    out = np.concatenate([stream.process(x[:, i:i + block]).copy() for i in range(0, x.shape[1], block)], axis=1)
    # the runtime starts at the rest state: the state after rest_frames of silence
    rest = stream.rest_frames
    reference = torch_offline(model, np.concatenate([np.zeros((2, rest), np.float32), x], axis=1))[:, 4 * rest:]
    diff = float(np.max(np.abs(out - reference)))
    if not diff <= TOLERANCE:
        raise ExportError(f"the runtime's stream and PyTorch disagree: max abs diff {diff} > {TOLERANCE}")
    return diff


def export_and_check(model: Restorer, path: str | Path, name: str, description: str,
                     fp16_weights: bool = False) -> dict:
    """Steps 1-4; on any failure the file is removed and the error raised.

    With ``fp16_weights`` the model's parameters are rounded to float16 first (in place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fp16_weights:
        round_parameters_to_fp16(model)
    try:
        export_onnx(model, path, name, description, fp16_weights)
        report = {"parity": check_parity(model, path), "runtime_block_256": check_runtime(model, path)}
    except Exception:
        path.unlink(missing_ok=True)
        raise
    report["bytes"] = path.stat().st_size
    report["parameters"] = count_parameters(model)
    report["weights"] = "float16" if fp16_weights else "float32"
    return report


def describe(model: Restorer, config: dict) -> str:
    """The metadata description ``main`` writes: design, gating rules (which
    :func:`checkpoint_from_onnx` reads back), size and training."""
    init = f" from {Path(config['init']).name}" if config.get("init") else ""
    if model.arch == "cutoff":
        gating = ("fills empty bins" if model.hold <= 1 else f"fills bins empty for {model.hold_ms:g} ms"
                  if model.hold_share >= 1 else
                  f"fills empty bins that were empty in {100 * model.hold_share:g} % of {model.hold_ms:g} ms") + (
            (f" under a cliff seen in the last {model.cliff_hold_ms:g} ms" if model.cliff_hold_ms else
             " under a cliff seen in that time") if model.cliff_gate else "") + (
            f" or above a {model.cliff_db:g} dB cliff" if model.cliff_db else "") + (
            (", over gains too" if model.over_gate else "") + (", over gains in holes" if model.over_holes else "")
            if model.over else
            ", writes nothing over content") + (
            f", fold level in weak bins {model.floor_db:g} dB under their source" if model.floor_db else "") + (
            " (learned scale)" if getattr(model, "floor_learned", False) else "") + (
            f", only under a cut-off below {model.high_cutoff_hz / 1000:g} kHz")
        design = (f"cut-off-aware STFT-domain spectral folding ({gating}), finite memory "
                  f"({count_parameters(model)} parameters, hidden {model.hidden}, hop {model.hop})")
        data = "real recordings (game soundtracks, band stems, drum kits, organ, speech) and synthetic audio"
    else:
        design = (f"STFT-domain spectral folding with a GRU envelope ({count_parameters(model)} parameters, "
                  f"hidden {model.hidden} x {model.layers})")
        data = "procedural, fluidsynth GM and espeak-ng audio"
    return (
        f"{design}; trained {config.get('step')} steps{init} on {data} through MP3/AAC/Opus")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", help="a tools.train checkpoint (.pt)")
    parser.add_argument("output", help="the .onnx file to write")
    parser.add_argument("--name", default=None, help="the model's name in its metadata (default: the output file's stem)")
    parser.add_argument("--description", default=None)
    parser.add_argument("--fp16-weights", action="store_true",
                        help="store the weights as float16 (half the file; computes in float32; see above)")
    parser.add_argument("--hold-ms", type=float, default=None, help="override a cutoff model's hold (ms)")
    parser.add_argument("--cliff-db", type=float, default=None, help="override a cutoff model's cliff rule (dB; 0: off)")
    parser.add_argument("--cliff-gate", type=int, choices=(0, 1), default=None,
                        help="override whether a cutoff model's hold fills only under a cliff seen in the hold")
    parser.add_argument("--over-gate", type=int, choices=(0, 1), default=None,
                        help="override whether a cutoff model's over gains act only under a cut-off")
    parser.add_argument("--over-holes", type=int, choices=(0, 1), default=None,
                        help="override whether a cutoff model's over gains act in the holes its fill leaves alone")
    parser.add_argument("--hold-share", type=float, default=None,
                        help="override a cutoff model's hold share (fill a bin empty now that was empty in "
                        "this share of the hold; 1: in all of it)")
    parser.add_argument("--floor-db", type=float, default=None,
                        help="override a cutoff model's floor rule: add the fold exciter's copy to empty band bins whose "
                        "source stands this far (dB) over the emptiness threshold, under a cut-off (0: off)")
    parser.add_argument("--cliff-hold-ms", type=float, default=None,
                        help="override how long a cutoff model's cliff gate remembers a cliff (ms; 0: the hold)")
    parser.add_argument("--high-cutoff-hz", type=float, default=None,
                        help="override the frequency a cutoff model's empty top band must reach down to "
                        "before anything is filled (Hz at 44.1 kHz)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    name = args.name or Path(args.output).stem
    rules = {k: getattr(args, k) for k in RULES if getattr(args, k) is not None}
    try:
        model, config = load_checkpoint(args.checkpoint, rules)
    except ValueError as e:
        parser.error(str(e))
    description = args.description or describe(model, config)
    try:
        report = export_and_check(model, args.output, name, description, args.fp16_weights)
    except Exception as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"output": args.output, **report}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
