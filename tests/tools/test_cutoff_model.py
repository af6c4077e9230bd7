"""The codec-aware model (tools.model.CutoffRestorer): streams as it runs offline, forgets
exactly, writes only where the input is empty, and exports through the contract."""

import numpy as np
import pytest
import scipy.signal
import torch

from tools import export, train
from tools.model import CutoffRestorer, build_model

SR = 44100


def _open(model: CutoffRestorer, seed: int = 0, over: float = 0.5) -> CutoffRestorer:
    """Random weights and open gates (the *over* gate at ``over``): every part of the graph acts."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
        model.gate.fill_(0.5)
        model.gate_over.fill_(over)
        model.out.bias.fill_(0.0)
    return model.eval()


def _noise(n, seed=0, amp=0.1):
    return torch.tensor(np.random.default_rng(seed).standard_normal((2, n)) * amp, dtype=torch.float32)


def _lowpass(x: torch.Tensor, cut: float) -> torch.Tensor:
    sos = scipy.signal.ellip(12, 0.1, 100, cut / (SR / 2), output="sos")
    return torch.tensor(scipy.signal.sosfiltfilt(sos, x.numpy(), axis=1).copy(), dtype=torch.float32)


def _band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    f = np.fft.rfftfreq(x.shape[-1], 1 / SR)
    return float(spec[..., (f >= lo) & (f < hi)].sum())


@pytest.mark.parametrize("hop", [64, 128])
def test_streaming_equals_offline_and_the_state_is_carried(hop):
    model = _open(CutoffRestorer(hidden=24, hop=hop))
    x = _lowpass(_noise(hop * 96), 16000)
    with torch.no_grad():
        offline = model(x, *model.initial_state(2))[0]
        for block in (hop, 4 * hop):
            state, out = model.initial_state(2), []
            for i in range(0, x.shape[1], block):
                y, *state = model(x[:, i:i + block], *state)
                out.append(y)
            assert float((torch.cat(out, 1) - offline).abs().max()) < 1e-4  # the contract's tolerance
        # Dropping the state between blocks changes the output: the test can fail.
        dropped = torch.cat([model(x[:, i:i + 4 * hop], *model.initial_state(2))[0]
                             for i in range(0, x.shape[1], 4 * hop)], 1)
    assert float((dropped - offline).abs().max()) > 1e-3


def test_memory_is_finite_so_history_is_forgotten_exactly():
    model = _open(CutoffRestorer(hidden=24))
    hop = model.hop
    signal = _lowpass(_noise(hop * 200, seed=1), 16000)
    history_a = torch.zeros(2, hop * 100)
    history_b = _lowpass(_noise(hop * 100, seed=2, amp=0.3), 17000)
    with torch.no_grad():
        a = model(torch.cat([history_a, signal], 1), *model.initial_state(2))[0]
        b = model(torch.cat([history_b, signal], 1), *model.initial_state(2))[0]
    start = 4 * hop * 100
    # After the receptive field (plus the analysis frame, the overlap-add tail and the
    # interpolator's taps) the two agree to float rounding...
    settle = 4 * hop * (model.receptive_frames + 3)
    assert float((a[:, start + settle:] - b[:, start + settle:]).abs().max()) < 1e-5
    # ...and right after the switch they do not: the memory is real.
    assert float((a[:, start:start + 4 * hop * 4] - b[:, start:start + 4 * hop * 4]).abs().max()) > 1e-3


def test_full_band_input_passes_untouched_and_a_lowpassed_one_is_filled_above_its_cutoff():
    """With the *over* gate closed, nothing is written over content: the fill gains act only
    where the input is empty."""
    model = _open(CutoffRestorer(hidden=24), over=0.0)
    hop = model.hop
    full = _noise(hop * 300, seed=3)
    cut = _lowpass(full, 16500)
    with torch.no_grad():
        for x, expect_fill in ((full, False), (cut, True)):
            restored = train.run_offline(model, x).numpy()
            added = restored - x.numpy()
            skip = 4 * hop  # the analysis history starts at zero
            hf_in = _band_energy(full.numpy()[:, skip:], 17500, 21000)
            hf_added = _band_energy(added[:, skip:], 17500, 21000)
            if expect_fill:
                assert hf_added > 1e-3 * hf_in  # the empty band got content
            else:
                assert hf_added < 1e-6 * hf_in  # -60 dB: nothing written over real content
            # Below the band (15 kHz) only the synthesis window's leakage of gains that change
            # every frame lands: at least 40 dB under the input (random gains here; nothing
            # at all where the mask is closed).
            lf_added = _band_energy(added[:, skip:], 20, 14000)
            assert lf_added < (1e-4 if expect_fill else 1e-12) * _band_energy(x.numpy()[:, skip:], 20, 14000)


def test_the_over_gains_write_over_content_and_only_they_do():
    hop = 128
    full = _noise(hop * 300, seed=5)
    added = {}
    for over in (0.0, 0.5):
        model = _open(CutoffRestorer(hidden=24), over=over)
        with torch.no_grad():
            added[over] = (train.run_offline(model, full) - full).numpy()[:, 4 * hop:]
    hf_in = _band_energy(full.numpy()[:, 4 * hop:], 17500, 21000)
    assert _band_energy(added[0.0], 17500, 21000) < 1e-6 * hf_in
    assert _band_energy(added[0.5], 17500, 21000) > 1e-3 * hf_in


def test_empty_mask_sees_a_codec_cliff_over_16_bit_noise():
    model = CutoffRestorer(hidden=8)
    hop = model.hop
    rng = np.random.default_rng(4)
    x = _lowpass(_noise(hop * 100, seed=4, amp=0.2), 16000).numpy()
    x = (np.round(x * 32767 + rng.random(x.shape) - rng.random(x.shape)) / 32768).astype(np.float32)
    frames = torch.tensor(np.stack([np.concatenate([x[:, i:i + hop], x[:, i + hop:i + 2 * hop]], 1)
                                    for i in range(0, x.shape[1] - 2 * hop, hop)], 1))
    mask = model.empty_mask(frames).mean(dim=(0, 1)).numpy()
    freqs = np.arange(model.geometry.band_start, model.geometry.n_bins) * SR / model.geometry.window
    assert mask[freqs > 17000].min() > 0.9
    assert mask[freqs < 15500].max() < 0.1


def test_a_tiny_cutoff_model_exports_and_passes_parity(tmp_path):
    model = build_model("cutoff", hidden=16, hop=128)
    _open(model)
    report = export.export_and_check(model, tmp_path / "m.onnx", "tiny", "test")
    assert max(report["parity"].values()) <= export.TOLERANCE
    assert report["runtime_block_256"] <= export.TOLERANCE


HOLD_MS = 300.0


@pytest.mark.parametrize("hop", [64, 128])
def test_with_a_hold_it_streams_as_offline_and_the_hold_state_is_carried(hop):
    model = _open(CutoffRestorer(hidden=24, hop=hop, hold_ms=HOLD_MS, over=False))
    assert "hold" in model.state_names and model.hold > 1
    # Content above 17 kHz that stops half way: whether it is filled depends on the hold.
    x = _noise(hop * 400, seed=6)
    x[:, hop * 200:] = _lowpass(x, 16000)[:, hop * 200:]
    with torch.no_grad():
        offline = model(x, *model.initial_state(2))[0]
        for block in (hop, 3 * hop, 8 * hop):
            state, out = model.initial_state(2), []
            for i in range(0, x.shape[1], block):
                y, *state = model(x[:, i:i + block], *state)
                out.append(y)
            assert float((torch.cat(out, 1) - offline).abs().max()) < 1e-4
        names = model.state_names
        state, out = model.initial_state(2), []
        for i in range(0, x.shape[1], 8 * hop):  # only the hold state dropped between blocks
            state[names.index("hold")] = model.initial_state(2)[names.index("hold")]
            y, *state = model(x[:, i:i + 8 * hop], *state)
            out.append(y)
    assert float((torch.cat(out, 1) - offline).abs().max()) > 1e-3


def test_the_hold_fills_a_codec_cutoff_but_not_the_gaps_of_a_full_band_sound():
    """A band that is empty in every frame (a codec's low-pass) is filled; one that has
    content every few frames (a cymbal's hits, full band) is not filled in between."""
    model = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False))
    hop = model.hop
    n = hop * 400
    rng = np.random.default_rng(7)
    body = _lowpass(_noise(n, seed=7), 15000).numpy()
    hits = np.zeros((2, n), np.float32)
    for start in range(0, n, hop * 40):  # a 3 ms burst of full-band noise every 116 ms
        hits[:, start:start + hop] = rng.standard_normal((2, hop)) * 0.3
    full = torch.tensor(body + hits)
    cut = _lowpass(full, 16000)
    skip = hop * (model.hold + 4)
    with torch.no_grad():
        added_full = (train.run_offline(model, full) - full).numpy()[:, skip:]
        added_cut = (train.run_offline(model, cut) - cut).numpy()[:, skip:]
        no_hold = _open(CutoffRestorer(hidden=24, over=False))
        added_gaps = (train.run_offline(no_hold, full) - full).numpy()[:, skip:]
    hf_in = _band_energy(full.numpy()[:, skip:], 17500, 21000)
    assert _band_energy(added_cut, 17500, 21000) > 1e-3 * hf_in
    assert _band_energy(added_full, 17500, 21000) < 1e-6 * hf_in
    # Without the hold, the frames between the hits are filled: the test can fail.
    assert _band_energy(added_gaps, 17500, 21000) > 1e-3 * hf_in


def test_the_hold_is_forgotten_after_its_length():
    model = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False))
    hop = model.hop
    signal = _lowpass(_noise(hop * 300, seed=8), 16000)
    with torch.no_grad():
        a = model(torch.cat([torch.zeros(2, hop * 150), signal], 1), *model.initial_state(2))[0]
        b = model(torch.cat([_noise(hop * 150, seed=9, amp=0.3), signal], 1), *model.initial_state(2))[0]
    start = 4 * hop * 150
    settle = 4 * hop * (model.memory_frames + 3)
    assert float((a[:, start + settle:] - b[:, start + settle:]).abs().max()) < 1e-5
    # Full-band history keeps the fill closed for a while after the switch.
    assert float((a[:, start:start + settle // 2] - b[:, start:start + settle // 2]).abs().max()) > 1e-3


def test_the_cliff_fills_frames_whose_top_a_codec_dropped_but_not_a_gradual_decay():
    """Where a codec drops its top band in some frames only (LAME's VBR and 128 kbps), the
    hold never fills it; the cliff rule fills it in exactly those frames. A sound whose top
    falls off gradually into its gaps is still left alone."""
    hop = 128
    cliff = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False, cliff_db=30.0))
    hold_only = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False))  # the same weights
    n = hop * 400
    full = _noise(n, seed=11)
    cut = _lowpass(full, 16000)
    seg = (np.arange(n) // (hop * 12)) % 2 == 1  # the top dropped in every other 35 ms
    dropped = torch.where(torch.tensor(seg), cut, full)
    skip = hop * (cliff.hold + 4)
    rng = np.random.default_rng(12)
    body = _gradual(n, seed=13).numpy()  # with full-band hits every 116 ms
    for start in range(0, n, hop * 40):
        body[:, start:start + hop] += rng.standard_normal((2, hop)).astype(np.float32) * 0.3
    decay = torch.tensor(body)
    with torch.no_grad():
        added_cliff = (train.run_offline(cliff, dropped) - dropped).numpy()[:, skip:]
        added_hold = (train.run_offline(hold_only, dropped) - dropped).numpy()[:, skip:]
        added_decay = (train.run_offline(cliff, decay) - decay).numpy()[:, skip:]
    hf_in = _band_energy(dropped.numpy()[:, skip:], 17500, 21000)
    assert _band_energy(added_cliff, 17500, 21000) > 1e-3 * hf_in
    assert _band_energy(added_hold, 17500, 21000) < 1e-6 * hf_in
    assert _band_energy(added_decay, 17500, 21000) < 1e-6 * _band_energy(body[:, skip:], 17500, 21000)


def _gradual(n: int, seed: int) -> torch.Tensor:
    """Noise whose top falls 12 dB per kHz from 10 kHz (2 dB per bin): empty above ~16 kHz."""
    spec = np.fft.rfft(_noise(n, seed=seed).numpy(), axis=1)
    f = np.fft.rfftfreq(n, 1 / SR)
    spec *= 10 ** (-12.0 * np.clip(f - 10000, 0, None) / 1000 / 20)
    return torch.tensor(np.fft.irfft(spec, n, axis=1).astype(np.float32))


def test_the_cliff_gate_fills_a_codec_cutoff_but_not_a_top_that_is_quiet_for_long():
    """A top that is empty for longer than the hold but falls off gradually (a voice, an
    organ) is filled by the hold alone and left alone with the cliff gate; a codec's
    low-pass is filled by both."""
    hop = 128
    gated = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False, cliff_db=30.0, cliff_gate=True))
    hold_only = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False))  # the same weights
    n = hop * 300
    quiet_top = _gradual(n, seed=14)
    codec = _lowpass(_noise(n, seed=15), 16000)
    skip = hop * (gated.hold + 4)
    with torch.no_grad():
        added = {(name, kind): (train.run_offline(m, x) - x).numpy()[:, skip:]
                 for name, m in (("gated", gated), ("hold", hold_only))
                 for kind, x in (("quiet", quiet_top), ("codec", codec))}
    ref_quiet = _band_energy(quiet_top.numpy()[:, skip:], 10000, 15000)
    ref_codec = _band_energy(codec.numpy()[:, skip:], 10000, 15000)
    assert _band_energy(added["gated", "codec"], 17500, 21000) > 1e-3 * ref_codec
    assert _band_energy(added["hold", "codec"], 17500, 21000) > 1e-3 * ref_codec
    assert _band_energy(added["gated", "quiet"], 17500, 21000) < 1e-7 * ref_quiet
    assert _band_energy(added["hold", "quiet"], 17500, 21000) > 1e-4 * ref_quiet  # the test can fail


def test_a_cutoff_above_high_cutoff_hz_is_left_alone():
    """The fill acts only where the empty top reaches down to ``high_cutoff_hz``: a cut-off at
    19 kHz is filled under the default 19.5 kHz and left as it is under 18.5 kHz."""
    full = _noise(128 * 300, seed=5)
    cut = _lowpass(full, 19000)
    skip = 4 * 128
    added = {}
    for top in (CutoffRestorer.HIGH_CUTOFF_HZ, 18500.0):
        model = _open(CutoffRestorer(hidden=24, high_cutoff_hz=top), over=0.0)
        with torch.no_grad():
            added[top] = (train.run_offline(model, cut) - cut).numpy()[:, skip:]
    ref = _band_energy(full.numpy()[:, skip:], 19500, 21000)
    assert _band_energy(added[CutoffRestorer.HIGH_CUTOFF_HZ], 19500, 21000) > 1e-3 * ref  # the test can fail
    assert _band_energy(added[18500.0], 15000, 22050) < 1e-12 * ref
    with pytest.raises(ValueError, match="high_cutoff_hz must be in 16000..21000"):
        CutoffRestorer(hidden=24, high_cutoff_hz=22050.0)


def _intermittent(on_hops: int, off_hops: int, hop: int, n_hops: int, seed: int) -> torch.Tensor:
    """Content to 16 kHz always, and 16-18 kHz only ``on_hops`` of every ``on_hops + off_hops``
    hops: the bins a 128 kbps MP3 keeps in some frames under its cut-off."""
    base = _lowpass(_noise(hop * n_hops, seed=seed), 16000)
    upper = _lowpass(_noise(hop * n_hops, seed=seed + 1), 18000) - _lowpass(_noise(hop * n_hops, seed=seed + 1), 16000)
    gate = np.zeros(hop * n_hops, np.float32)
    ramp = np.sin(np.linspace(0, np.pi / 2, 2 * hop)) ** 2  # no splatter above 18 kHz at the edges
    for start in range(0, hop * n_hops, hop * (on_hops + off_hops)):
        gate[start:start + hop * on_hops] = 1.0
        gate[start:start + 2 * hop] = ramp
        gate[start + hop * on_hops - 2 * hop:start + hop * on_hops] = ramp[::-1]
    return base + upper * torch.tensor(gate[:hop * n_hops])


def test_a_hold_share_fills_bins_a_codec_keeps_only_in_some_frames():
    """With ``hold_share`` 0.5, bins that are empty in most frames are filled in the frames
    they are empty; bins with content in most frames are not, and the full hold (share 1)
    fills neither. Nothing is written in the frames that have content of their own."""
    hop, n = 128, 600
    rare = _intermittent(10, 20, hop, n, seed=21)  # 16-18 kHz in a third of the frames
    often = _intermittent(40, 10, hop, n, seed=21)  # in four fifths
    added = {}
    for share in (1.0, 0.5):
        model = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False, hold_share=share))
        skip = hop * (model.hold + 4)
        with torch.no_grad():
            for name, x in (("rare", rare), ("often", often)):
                y = train.run_offline(model, x)
                added[share, name] = _band_energy((y - x).numpy()[:, skip:], 16500, 17500)
    # Both fill the bins over 18 kHz, which are always empty; the synthesis window spreads a
    # little of that (under -30 dB) into 16.5-17.5 kHz.
    ref = _band_energy(rare.numpy()[:, hop * 150:], 16500, 17500)
    assert added[0.5, "rare"] > 1e-1 * ref
    assert added[1.0, "rare"] < 1e-3 * ref  # the full hold leaves them: the test can fail
    assert added[0.5, "often"] < 1e-3 * ref
    assert added[1.0, "often"] < 1e-3 * ref
    with pytest.raises(ValueError, match="hold_share"):
        CutoffRestorer(hidden=24, hold_share=0.5)  # no hold
    with pytest.raises(ValueError, match="hold_share"):
        CutoffRestorer(hidden=24, hold_ms=HOLD_MS, hold_share=0.05)


def test_a_hold_share_model_streams_as_offline_and_exports(tmp_path):
    model = _open(build_model("cutoff", hidden=16, hop=128, hold_ms=HOLD_MS, over=False, cliff_db=24.0,
                              hold_share=0.5))
    x = _intermittent(10, 20, 128, 300, seed=5)
    with torch.no_grad():
        offline = model(x, *model.initial_state(2))[0]
        state, out = model.initial_state(2), []
        for i in range(0, x.shape[1], 384):
            y, *state = model(x[:, i:i + 384], *state)
            out.append(y)
    assert float((torch.cat(out, 1) - offline).abs().max()) < 1e-4
    path = tmp_path / "m.onnx"
    report = export.export_and_check(model, path, "tiny", export.describe(model, {"step": 1}))
    assert max(report["parity"].values()) <= export.TOLERANCE
    assert export.checkpoint_from_onnx(path)["config"]["hold_share"] == 0.5


def test_the_cliff_options_are_checked():
    with pytest.raises(ValueError, match="cliff_db"):
        CutoffRestorer(hidden=24, cliff_db=3.0)
    with pytest.raises(ValueError, match="cliff_gate"):
        CutoffRestorer(hidden=24, cliff_db=20.0, cliff_gate=True)  # no hold


@pytest.mark.parametrize("cliff_db,cliff_gate", [(0.0, False), (20.0, False), (20.0, True)])
def test_a_hold_model_exports_and_passes_parity(tmp_path, cliff_db, cliff_gate):
    model = _open(build_model("cutoff", hidden=16, hop=128, hold_ms=HOLD_MS, over=False, cliff_db=cliff_db,
                              cliff_gate=cliff_gate))
    report = export.export_and_check(model, tmp_path / "m.onnx", "tiny", "test")
    assert max(report["parity"].values()) <= export.TOLERANCE
    assert report["runtime_block_256"] <= export.TOLERANCE


def test_gated_over_gains_write_nothing_over_full_band_input_and_act_under_a_cutoff():
    """``over_gate``: the over gains act only where the fill may (the top empty down to
    high_cutoff_hz). Full-band input passes untouched; under a codec's cut-off the over gains
    still write over the content below it (what ungated ones do everywhere)."""
    full = _noise(128 * 200, seed=31)
    cut = _lowpass(full, 17000)
    added = {}
    for gate in (False, True):
        model = _open(CutoffRestorer(hidden=24, over_gate=gate), over=0.5)
        with torch.no_grad():
            model.gate.fill_(0.0)  # the over gains alone
            for name, x in (("full", full), ("cut", cut)):
                added[gate, name] = _band_energy((train.run_offline(model, x) - x).numpy()[:, 128 * 20:], 15500, 17000)
    ref = _band_energy(cut.numpy()[:, 128 * 20:], 15500, 17000)
    assert added[False, "full"] > 1e-3 * ref  # ungated: written over full-band input (the test can fail)
    assert added[True, "full"] < 1e-9 * ref
    assert added[True, "cut"] > 1e-3 * ref
    with pytest.raises(ValueError, match="over_gate"):
        CutoffRestorer(hidden=24, over=False, over_gate=True)


def test_an_over_gate_model_exports_and_reads_back(tmp_path):
    model = _open(build_model("cutoff", hidden=16, hop=128, hold_ms=HOLD_MS, over=True, cliff_db=24.0,
                              hold_share=0.5, over_gate=True))
    path = tmp_path / "m.onnx"
    report = export.export_and_check(model, path, "tiny", export.describe(model, {"step": 1}))
    assert max(report["parity"].values()) <= export.TOLERANCE
    config = export.checkpoint_from_onnx(path)["config"]
    assert config["over_gate"] and config["over"] and config["hold_share"] == 0.5


def _holed(seed: int) -> tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
    """Noise cut at 17 kHz whose 15.5-17 kHz band drops out for 40 ms every 300 ms (the
    holes a codec leaves now and then in a band it keeps), the stretches deep in those holes
    and as many with content, away from the holes' edges."""
    n = 128 * 600
    low = _lowpass(_noise(n, seed=seed), 15500)
    band = _lowpass(_noise(n, seed=seed + 1), 17000) - _lowpass(_noise(n, seed=seed + 1), 15500)
    g = np.ones(n, np.float32)
    hole, period, margin = int(0.040 * SR), int(0.300 * SR), 512  # margin: two frames
    holes, content = [], []
    for start in range(period, n - period, period):
        g[start:start + hole] = 0.0
        holes.append((start + margin, start + hole - margin))
        content.append((start + period // 2, start + period // 2 + hole - 2 * margin))
    return low + band * torch.from_numpy(g), holes, content


def _stretch_band_energy(x: np.ndarray, stretches: list[tuple[int, int]], lo: float, hi: float) -> float:
    """Mean band energy per sample over Hann-windowed stretches of ``x``."""
    total = 0.0
    for a, b in stretches:
        total += _band_energy(x[:, a:b] * np.hanning(b - a), lo, hi) / (b - a)
    return total / len(stretches)


def test_over_holes_writes_into_a_kept_band_s_occasional_holes_and_only_there():
    """``over_holes``: the over gains act on the bins the fill leaves alone. Holes that are
    too short for the hold (empty 40 ms of 300) get nothing without it (neither set of gains
    reaches an empty bin with content in most of the hold) and the over gains with it; where
    the band has content both write the same."""
    x, holes, content = _holed(41)
    added = {}
    for over_holes in (False, True):
        model = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over_holes=over_holes), over=0.5)
        with torch.no_grad():
            model.gate.fill_(0.0)  # the over gains alone
            d = (train.run_offline(model, x) - x).numpy()
        for name, where in (("hole", holes), ("content", content)):
            added[over_holes, name] = _stretch_band_energy(d, where, 16400, 17000)
    ref = _stretch_band_energy(x.numpy(), content, 16400, 17000)
    assert added[True, "hole"] > 1e-3 * ref
    assert added[False, "hole"] < 1e-2 * added[True, "hole"]  # without it the holes stay empty (the test can fail)
    assert added[True, "content"] == pytest.approx(added[False, "content"], rel=0.2)
    with pytest.raises(ValueError, match="over_holes"):
        CutoffRestorer(hidden=24, over_holes=True)  # no hold


def test_an_over_holes_model_exports_and_reads_back(tmp_path):
    model = _open(build_model("cutoff", hidden=16, hop=128, hold_ms=HOLD_MS, over=True, cliff_db=24.0,
                              hold_share=0.5, over_gate=True, over_holes=True))
    path = tmp_path / "m.onnx"
    report = export.export_and_check(model, path, "tiny", export.describe(model, {"step": 1}))
    assert max(report["parity"].values()) <= export.TOLERANCE
    config = export.checkpoint_from_onnx(path)["config"]
    assert config["over_holes"] and config["over_gate"] and config["hold_share"] == 0.5


@pytest.mark.parametrize("cliff_db", [0.0, 24.0])
def test_the_floor_fills_a_codec_s_holes_at_the_fold_level_and_nothing_else(cliff_db):
    """``floor_db``: with the learned gains shut, a band with holes under a cut-off (empty
    about 50 ms of every 300, the top above 17 kHz empty) gets the fold exciter's copy (12 dB
    under its source, 8.3 kHz below) in its holes and nothing where it has content; a
    full-band input gets nothing at all, and neither does any input without the rule."""
    n, hop = 128 * 600, 128
    low = _lowpass(_noise(n, seed=43), 15500)
    band = _lowpass(_noise(n, seed=42), 17000) - _lowpass(_noise(n, seed=42), 15500)
    g = np.ones(n, np.float32)
    hole, period, ramp = int(0.060 * SR), int(0.300 * SR), 4 * hop  # smooth edges: nothing splatters over 17 kHz
    fade = np.cos(np.linspace(0, np.pi / 2, ramp)) ** 2
    holes, content = [], []
    for start in range(period, n - period, period):
        g[start:start + ramp] = fade
        g[start + ramp:start + hole - ramp] = 0.0
        g[start + hole - ramp:start + hole] = fade[::-1]
        holes.append((start + ramp + 2 * hop, start + hole - ramp - 2 * hop))
        content.append((start + period // 2, start + period // 2 + hole - 2 * ramp - 4 * hop))
    x = low + band * torch.from_numpy(g)
    full = _noise(n, seed=44)
    added = {}
    for floor_db in (0.0, 6.0):
        model = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False, cliff_db=cliff_db, floor_db=floor_db))
        with torch.no_grad():
            model.gate.fill_(0.0)  # the floor alone
            d = (train.run_offline(model, x) - x).numpy()
            added[floor_db, "full"] = _band_energy((train.run_offline(model, full) - full).numpy(), 15000, 22050)
        for name, where in (("hole", holes), ("content", content)):
            added[floor_db, name] = _stretch_band_energy(d, where, 16400, 17000)
    source = _stretch_band_energy(x.numpy(), holes, 16400 - 8268, 17000 - 8268)
    level_db = 10 * np.log10(added[6.0, "hole"] / source)
    assert -16.0 < level_db < -9.0, level_db  # the fold exciter's -12 dB, give or take the window
    assert added[6.0, "content"] < 1e-3 * added[6.0, "hole"]
    assert added[0.0, "hole"] == 0.0 and added[0.0, "content"] == 0.0
    assert added[6.0, "full"] < 1e-9 * _band_energy(full.numpy(), 15000, 22050)
    with pytest.raises(ValueError, match="floor_db"):
        CutoffRestorer(hidden=24, floor_db=1.0)


def test_with_a_cliff_test_the_floor_leaves_a_top_that_rolls_off_alone():
    """A lossless input whose top falls smoothly into quiet (a linear slope in dB, 100 dB
    from 12 to 20 kHz: no cliff) has empty bins over lit sources, as a codec's cut leaves:
    the floor alone fills them, and the floor under a cliff test of 24 dB does not."""
    n = 128 * 600
    spec = np.fft.rfft(np.random.default_rng(45).standard_normal((2, n)), axis=1)
    f = np.fft.rfftfreq(n, 1 / SR)
    spec *= 10 ** (-np.clip((f - 12000.0) / 8000.0, 0.0, None) * 100.0 / 20.0)
    x = torch.tensor(np.fft.irfft(spec, n, axis=1) * 0.1, dtype=torch.float32)
    added = {}
    for cliff_db in (0.0, 24.0):
        model = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False, cliff_db=cliff_db, floor_db=6.0))
        with torch.no_grad():
            model.gate.fill_(0.0)
            added[cliff_db] = _band_energy((train.run_offline(model, x) - x).numpy()[:, 128 * 100:], 16000, 22050)
    top = _band_energy(x.numpy()[:, 128 * 100:], 12000, 22050)
    assert added[0.0] > 1e-4 * top  # without the cliff test the rule fills the quiet top
    assert added[24.0] < 1e-3 * added[0.0]


def test_a_floor_model_exports_and_reads_back(tmp_path):
    model = _open(build_model("cutoff", hidden=16, hop=128, hold_ms=HOLD_MS, over=False, cliff_db=24.0,
                              floor_db=6.0))
    path = tmp_path / "m.onnx"
    report = export.export_and_check(model, path, "tiny", export.describe(model, {"step": 1}))
    assert max(report["parity"].values()) <= export.TOLERANCE
    assert export.checkpoint_from_onnx(path)["config"]["floor_db"] == 6.0


def test_a_learned_floor_scale_runs_from_the_full_copy_to_none_and_reads_back(tmp_path):
    """``floor_learned``: at a scale of 1 (where it starts) the model is the plain floor
    rule's, at 0 the rule adds nothing; it streams as offline, and its layer survives the export and the way back
    (``checkpoint_from_onnx``); a checkpoint without the layer starts at the full copy."""
    x, _, _ = _holed(46)
    outs = {}
    for name, learned, floor_db, bias in (("rule", False, 6.0, None), ("one", True, 6.0, 0.0),
                                          ("zero", True, 6.0, -30.0), ("off", False, 0.0, None)):
        model = _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False, cliff_db=24.0, floor_db=floor_db,
                                     floor_learned=learned))
        with torch.no_grad():
            model.gate.fill_(0.0)  # the floor alone
            if learned:
                model.floor_out.weight.zero_()
                model.floor_out.bias.fill_(bias)
            outs[name] = train.run_offline(model, x).numpy()
    added = _band_energy(outs["rule"] - outs["off"], 15000, 22050)
    assert added > 1e-6 * _band_energy(x.numpy(), 15000, 22050)  # the rule acts on this input
    assert _band_energy(outs["one"] - outs["rule"], 15000, 22050) < 1e-8 * added
    assert np.max(np.abs(outs["zero"] - outs["off"])) < 1e-6
    fresh = CutoffRestorer(hidden=24, hold_ms=HOLD_MS, cliff_db=24.0, floor_db=6.0, floor_learned=True)
    from tools.model import load_weights

    load_weights(fresh, CutoffRestorer(hidden=24, hold_ms=HOLD_MS, cliff_db=24.0, floor_db=6.0).state_dict())
    assert torch.all(fresh.floor_out.weight == 0) and torch.all(fresh.floor_out.bias == 0)  # a scale of 1
    with pytest.raises(ValueError, match="floor_db"):
        CutoffRestorer(hidden=24, floor_learned=True)
    model = _open(build_model("cutoff", hidden=16, hop=128, hold_ms=HOLD_MS, over=True, cliff_db=24.0,
                              cliff_gate=True, over_gate=True, floor_db=6.0, floor_learned=True))
    path = tmp_path / "m.onnx"
    report = export.export_and_check(model, path, "tiny", export.describe(model, {"step": 1}))
    assert max(report["parity"].values()) <= export.TOLERANCE
    back = export.checkpoint_from_onnx(path)
    assert back["config"]["floor_learned"] and back["config"]["floor_db"] == 6.0
    assert torch.equal(back["model"]["floor_out.weight"], model.floor_out.weight)


def test_a_longer_cliff_memory_keeps_the_gate_open_and_then_forgets():
    """``cliff_hold_ms``: after a codec's cliff drops from view (the music turns quiet, its top
    still empty), the cliff gate keeps filling for that long, not only for the hold, and then
    stops; the model streams as offline, fails without its state, and exports and reads back."""
    hop = 128
    n = hop * 700  # 2.0 s
    codec = _lowpass(_noise(n, seed=16), 16000)
    drop = hop * 200  # 0.58 s: then 50 dB quieter, with no cliff of 30 dB over the threshold
    x = codec.clone()
    x[:, drop:] *= 10 ** (-50 / 20)
    models = {ms: _open(CutoffRestorer(hidden=24, hold_ms=HOLD_MS, over=False, cliff_db=30.0, cliff_gate=True,
                                       cliff_hold_ms=ms)) for ms in (0.0, 900.0)}
    assert models[900.0].cliff_hold == round(0.9 * 44100 / hop) and models[0.0].cliff_hold == models[0.0].hold
    with torch.no_grad():
        added = {ms: (train.run_offline(m, x) - x).numpy() for ms, m in models.items()}

    def hf(d, a_s, b_s):
        a, b = int(a_s * SR), int(b_s * SR)
        return _band_energy(d[:, a:b], 17500, 21000) / _band_energy(x.numpy()[:, a:b], 10000, 15000)

    # 0.45-0.75 s after the drop: past the hold, within the cliff memory
    assert hf(added[900.0], 0.58 + 0.45, 0.58 + 0.75) > 1e-3
    assert hf(added[0.0], 0.58 + 0.45, 0.58 + 0.75) < 1e-3 * hf(added[900.0], 0.58 + 0.45, 0.58 + 0.75)
    # 1.0 s after the drop, both have forgotten the cliff
    assert hf(added[900.0], 0.58 + 1.0, 2.0) < 1e-3 * hf(added[900.0], 0.58 + 0.45, 0.58 + 0.75)
    model = models[900.0]
    with torch.no_grad():
        offline = model(x, *model.initial_state(2))[0]
        for drop_hold in (False, True):
            state, out = model.initial_state(2), []
            for i in range(0, n, 8 * hop):
                if drop_hold:
                    state[model.state_names.index("hold")] = model.initial_state(2)[model.state_names.index("hold")]
                y, *state = model(x[:, i:i + 8 * hop], *state)
                out.append(y)
            diff = float((torch.cat(out, 1) - offline).abs().max())
            assert (diff > 1e-3) if drop_hold else (diff < 1e-4), (drop_hold, diff)
    with pytest.raises(ValueError, match="cliff_hold_ms"):
        CutoffRestorer(hidden=24, hold_ms=HOLD_MS, cliff_db=30.0, cliff_hold_ms=900.0)  # no cliff gate
    with pytest.raises(ValueError, match="cliff_hold_ms"):
        CutoffRestorer(hidden=24, hold_ms=HOLD_MS, cliff_db=30.0, cliff_gate=True, cliff_hold_ms=100.0)


def test_a_cliff_memory_model_exports_and_reads_back(tmp_path):
    model = _open(build_model("cutoff", hidden=16, hop=128, hold_ms=HOLD_MS, over=True, cliff_db=24.0,
                              cliff_gate=True, over_gate=True, floor_db=6.0, cliff_hold_ms=900.0))
    path = tmp_path / "m.onnx"
    report = export.export_and_check(model, path, "tiny", export.describe(model, {"step": 1}))
    assert max(report["parity"].values()) <= export.TOLERANCE
    config = export.checkpoint_from_onnx(path)["config"]
    assert config["hold_ms"] == HOLD_MS and abs(config["cliff_hold_ms"] - 900.0) < 1.5  # whole frames
    assert config["cliff_gate"] and config["floor_db"] == 6.0
