"""Export: a tiny model trained for a few steps exports, matches PyTorch in onnxruntime
over carried-state blocks, and loads through the runtime; mismatches fail the export."""

import json

import numpy as np
import onnx
import pytest
import torch

from rtupscale.dsp import interp
from tools import export, train
from tools.model import HOP, Restorer


def _tiny_trained(steps=5, seed=0, hidden=16, hop=HOP):
    torch.manual_seed(seed)
    model = Restorer(hidden=hidden, layers=1, hop=hop)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        clean = torch.from_numpy((0.1 * rng.standard_normal((2, HOP * 24))).astype(np.float32))
        spec = torch.fft.rfft(clean)
        spec[:, spec.shape[1] * 3 // 4:] = 0  # a crude "codec": no top quarter of the band
        degraded = torch.fft.irfft(spec, clean.shape[1])
        loss, _ = train.loss_fn(train.run_offline(model, degraded), clean, 44100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert float(model.gate.abs().sum()) > 0, "training did not move the gate: the test would prove nothing"
    return model


@pytest.mark.parametrize("hop, latency", [(128, 200), (64, 136)])
def test_tiny_model_exports_and_passes_parity_and_runtime(tmp_path, hop, latency):
    model = _tiny_trained(hop=hop)
    path = tmp_path / "tiny.onnx"
    report = export.export_and_check(model, path, "tiny", "test model")
    assert all(v <= export.TOLERANCE for v in report["parity"].values())
    assert report["runtime_block_256"] <= export.TOLERANCE
    proto = onnx.load(str(path))
    assert proto.ir_version <= 13
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["rtupscale.kind"] == "stateful"
    assert meta["rtupscale.latency"] == str(latency)
    assert meta["rtupscale.block_multiple"] == str(hop)
    assert sorted(report["parity"]) == sorted([f"block_{hop}", f"block_{4 * hop}", "mono"])
    states = json.loads(meta["rtupscale.state"])
    assert [s["in"] for s in states] == [f"state_in_{n}" for n in ("frames", "gru", "ola", "interp")]
    assert all(s["shape"].count("channels") == 1 for s in states)


def test_parity_check_fails_when_onnx_and_torch_disagree(tmp_path):
    model = _tiny_trained()
    path = tmp_path / "tiny.onnx"
    export.export_onnx(model, path, "tiny", "test model")
    with torch.no_grad():
        model.gate.mul_(1.5)  # the file no longer matches the PyTorch model
    with pytest.raises(export.ExportError, match="disagree"):
        export.check_parity(model, path)


def test_dropping_the_state_breaks_parity(tmp_path):
    model = _tiny_trained()
    path = tmp_path / "tiny.onnx"
    export.export_onnx(model, path, "tiny", "test model")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = export.parity_signal(44100, 0.5)
    reference = export.torch_offline(model, x)
    shapes = model.state_shapes("channels")
    zero = {f"state_in_{k}": np.zeros(tuple(2 if d == "channels" else d for d in s), np.float32)
            for k, s in shapes.items()}
    out = np.concatenate([session.run(None, {"audio_in": x[:, i:i + 256], **zero})[0]
                          for i in range(0, x.shape[1], 256)], axis=1)
    assert np.max(np.abs(out - reference)) > 1e-2


@pytest.mark.parametrize("hop", [64, 128, 256])
def test_untrained_model_is_the_bypass_interpolation_delayed_by_one_hop(hop):
    model = Restorer(hidden=16, layers=1, hop=hop).eval()
    assert model.latency == hop + interp.LATENCY
    x = export.parity_signal(48000, 0.2)
    out = export.torch_offline(model, x)
    bypass = interp.Interpolator(2, x.shape[1])
    delayed = np.concatenate([np.zeros((2, hop), np.float32), x[:, :-hop]], axis=1)
    expected = bypass.process(delayed)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_fp16_weights_halve_the_file_and_still_pass_parity(tmp_path):
    import onnxruntime as ort

    model = _tiny_trained(steps=3, hidden=64)
    full = tmp_path / "full.onnx"
    half = tmp_path / "half.onnx"
    export.export_and_check(model, full, "tiny", "test model")
    report = export.export_and_check(model, half, "tiny", "test model", fp16_weights=True)
    assert report["weights"] == "float16"
    assert all(v <= export.TOLERANCE for v in report["parity"].values())
    big_weights = lambda p: sum(int(np.prod(i.dims)) * (2 if i.data_type == onnx.TensorProto.FLOAT16 else 4)
                                for i in onnx.load(str(p)).graph.initializer)
    assert big_weights(half) < 0.6 * big_weights(full)
    # onnxruntime folds the casts when it loads the file: no per-block cost
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(half), opts, providers=["CPUExecutionProvider"])
    assert "Cast" not in {n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    with pytest.raises(export.ExportError, match="large enough"):
        export.export_onnx(_tiny_trained(steps=1), tmp_path / "small.onnx", "t", "t", fp16_weights=True)


def test_a_checkpoint_is_loaded_under_other_gating_rules(tmp_path):
    """The gating rules have no weights: ``load_checkpoint`` builds the same weights under the
    rules asked for, and refuses rules it does not know or a GRU checkpoint."""
    from tools.model import build_model

    model = build_model("cutoff", hidden=16, hop=HOP, hold_ms=300.0, over=False)
    config = {"arch": "cutoff", "hidden": 16, "layers": 2, "hop": HOP, "hold_ms": 300.0, "over": False}
    path = tmp_path / "c.pt"
    torch.save({"model": model.state_dict(), "step": 7, "config": config}, path)
    loaded, cfg = export.load_checkpoint(path, {"cliff_db": 24.0, "high_cutoff_hz": 18500.0})
    assert (loaded.cliff_db, loaded.high_cutoff_hz, loaded.hold_ms, cfg["step"]) == (24.0, 18500.0, 300.0, 7)
    assert loaded.high_bin < model.high_bin
    for name, p in model.state_dict().items():
        assert torch.equal(p, loaded.state_dict()[name])
    with pytest.raises(ValueError, match="allowed are"):
        export.load_checkpoint(path, {"hop_ms": 1.0})
    gru = tmp_path / "g.pt"
    torch.save({"model": Restorer(hidden=16).state_dict(), "config": {"arch": "gru", "hidden": 16}}, gru)
    with pytest.raises(ValueError, match="cutoff checkpoints only"):
        export.load_checkpoint(gru, {"cliff_db": 24.0})


@pytest.mark.parametrize("over, cliff_db, hold_ms", [(False, 0.0, 300.0), (True, 24.0, 300.0), (False, 24.0, 0.0)])
def test_an_exported_cutoff_model_gives_back_its_weights(tmp_path, over, cliff_db, hold_ms):
    """``checkpoint_from_onnx`` reads a cutoff model's weights and rules back out of its file
    (the weights of every layer, both gates) and proves them by parity; a file whose weights
    were changed after export no longer matches its rules' reading and fails."""
    from tools.model import build_model

    torch.manual_seed(3)
    model = build_model("cutoff", hidden=16, hop=HOP, hold_ms=hold_ms, over=over, cliff_db=cliff_db)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # gates and gains away from their zero start
    model.eval()
    path = tmp_path / "c.onnx"
    export.export_onnx(model, path, "c", export.describe(model, {"step": 5}))
    ckpt = export.checkpoint_from_onnx(path)
    assert ckpt["config"]["over"] is over
    assert ckpt["config"]["cliff_db"] == cliff_db
    assert ckpt["config"]["hidden"] == 16
    back = build_model("cutoff", 16, 0, HOP, ckpt["config"]["hold_ms"], over, cliff_db)
    back.load_state_dict(ckpt["model"])
    assert back.hold == model.hold
    used = [n for n in model.state_dict() if n.startswith(("inp", "mixes", "mid", "gate"))
            and (over or n != "gate_over")]
    for name in used + (["out.weight", "out.bias"] if over else []):
        assert torch.allclose(back.state_dict()[name], model.state_dict()[name], atol=1e-6), name
    if not over:  # only the fill half is in the file
        n = back.out.bias.shape[0] // 2
        assert torch.allclose(back.out.weight[:n], model.out.weight[:n], atol=1e-6)
    # the same file read under another hold does not reproduce it
    if hold_ms:
        with pytest.raises(export.ExportError, match="do not reproduce"):
            export.checkpoint_from_onnx(path, {"hold_ms": 100.0})
