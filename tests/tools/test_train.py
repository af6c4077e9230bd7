"""Training: deterministic for a seed, and a resumed run ends where an uninterrupted one does."""

import json

import pytest
import torch

from tools import make_dataset, train
from tools.model import HOPS, Geometry, Restorer, load_rehopped


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    make_dataset.build_clip(str(out), 3, "procedural", 1, 2.0, 2)  # train
    make_dataset.build_clip(str(out), 3, "speech", 2, 2.0, 2)  # train
    make_dataset.build_clip(str(out), 3, "procedural", 5, 2.0, 2)  # validation
    return out


def _args(data, run, stop_at):
    return ["--data", str(data), "--run", str(run), "--steps", "4", "--stop-at", str(stop_at), "--batch", "2",
            "--frames", "4096", "--hidden", "16", "--layers", "1", "--checkpoint-every", "2",
            "--validate-every", "4", "--val-clips", "1", "--seed", "5"]


@pytest.mark.parametrize("carry", ["0", "0.5"])
def test_resumed_run_equals_uninterrupted_run(tiny_data, tmp_path, capsys, carry):
    extra = ["--carry-prob", carry]  # 0.5: the carried states travel in the checkpoint too
    assert train.main(_args(tiny_data, tmp_path / "a", 4) + extra) == 0
    assert train.main(_args(tiny_data, tmp_path / "b", 2) + extra) == 0
    capsys.readouterr()
    assert train.main(_args(tiny_data, tmp_path / "b", 4) + extra) == 0  # resumes from last.pt at step 2
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "at step 2" in printed
    assert "done: step 4 (2 steps this run)" in printed
    a = torch.load(tmp_path / "a" / "final.pt", weights_only=False)
    b = torch.load(tmp_path / "b" / "final.pt", weights_only=False)
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    log = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    val = [e for e in log if "validation" in e]
    assert val and "lossless" in val[-1]["validation"]


def test_batches_depend_only_on_seed_and_step(tiny_data):
    clips = train.load_split(tiny_data, "train")
    b1 = train.Batcher(clips, 3, 1024, seed=9)
    b2 = train.Batcher(clips, 3, 1024, seed=9)
    sr1, x1, y1, top1 = b1.get(17)
    b1.get(3)
    sr2, x2, y2, top2 = b2.get(17)
    assert sr1 == sr2
    torch.testing.assert_close(x1, x2, rtol=0, atol=0)
    torch.testing.assert_close(top1, top2, rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of the hop"):
        train.Batcher(clips, 3, 1000, seed=9)


def test_loss_is_zero_for_a_perfect_estimate_and_grows_with_a_missing_band():
    torch.manual_seed(0)
    ref = torch.randn(2, 8192) * 0.1
    perfect, _ = train.loss_fn(ref, ref, 44100)
    spec = torch.fft.rfft(ref)
    spec[:, int(16000 / 44100 * 8192):] = 0
    lowpassed, terms = train.loss_fn(torch.fft.irfft(spec, 8192), ref, 44100)
    assert float(perfect) < 0.01
    assert terms["hf"] > 1.0 and float(lowpassed) > 1.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch sees a GPU here (scripts/gpu-check trains on it)")
def test_cuda_device_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(["--data", str(tmp_path), "--run", str(tmp_path / "run"), "--device", "cuda"])
    assert e.value.code == 2
    assert "--device cuda: torch sees no CUDA GPU here" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_widened_model_starts_as_the_narrow_one_and_then_learns():
    from tools.model import Restorer, load_widened
    from tools.train import run_offline

    torch.manual_seed(1)
    small = Restorer(16, 2)
    with torch.no_grad():
        small.gate.fill_(0.5)  # a trained-looking gate: the gains are not zero
    torch.manual_seed(2)
    big = Restorer(40, 2)
    load_widened(big, small.state_dict())
    x = torch.randn(2, 128 * 24) * 0.1
    with torch.no_grad():
        a, b = run_offline(small, x), run_offline(big, x)
    assert float((a - run_offline(Restorer(16, 2), x)).abs().max()) > 1e-3  # the check can fail
    torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    same = Restorer(16, 2)
    load_widened(same, small.state_dict())  # same width: a copy
    for k, v in small.state_dict().items():
        torch.testing.assert_close(same.state_dict()[k], v, rtol=0, atol=0)
    # The new units are live: one step moves their outgoing weights away from zero.
    loss, _ = train.loss_fn(run_offline(big, x), x * 0.5, 44100)
    loss.backward()
    assert float(big.out.weight.grad[:, 16:].abs().max()) > 0
    with pytest.raises(ValueError, match="same number of GRU layers"):
        load_widened(Restorer(40, 1), small.state_dict())
    with pytest.raises(ValueError, match="wider"):
        load_widened(Restorer(8, 2), small.state_dict())


def test_init_warm_starts_a_wider_run(tiny_data, tmp_path, capsys):
    assert train.main(_args(tiny_data, tmp_path / "small", 2)) == 0
    args = _args(tiny_data, tmp_path / "wide", 2)
    args[args.index("--hidden") + 1] = "24"
    assert train.main(args + ["--init", str(tmp_path / "small" / "final.pt"), "--lossless-prob", "0.5"]) == 0
    assert "(16 -> 24 wide)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train.main(args + ["--lossless-prob", "1.5"])


def test_every_hop_folds_the_same_frequencies():
    for hop in HOPS:
        geo = Geometry(hop)
        assert geo.band_start * 44100 / geo.window == pytest.approx(15159.4, abs=0.1)
        assert [s * 44100 / geo.window for s in geo.shifts] == pytest.approx([5512.5, 8268.75, 11025.0])
        assert all(s % 2 == 0 for s in geo.shifts)  # the phases stay coherent at 50 % overlap
    with pytest.raises(ValueError, match="hop must be one of"):
        Restorer(16, 1, hop=96)


def test_rehopped_model_sees_a_flat_feature_as_the_long_hop_did_and_keeps_each_gain_frequency():
    torch.manual_seed(0)
    long = Restorer(16, 2, hop=128)
    for p in long.parameters():
        p.data.normal_()
    short = Restorer(16, 2, hop=64)
    load_rehopped(short, long.state_dict(), 128)
    # A feature that is the same in each pair of long-hop bins (2k, 2k + 1) reaches the
    # GRU as it did: the short hop's bin k carries both.
    f_short = torch.randn(3, 65 + 1)
    f_long = torch.cat([f_short[:, :64].repeat_interleave(2, dim=1), f_short[:, 64:]], dim=1)
    torch.testing.assert_close(short.inp(f_short), long.inp(f_long))
    for name in ("mid.weight", "gru.weight_hh_l1", "gate"):
        torch.testing.assert_close(short.state_dict()[name], long.state_dict()[name])
    # Output gain j of the short hop is that of the long hop's bin at the same frequency.
    h = torch.randn(4, 16)
    out_short, out_long = short.out(h).reshape(4, 3, 21), long.out(h).reshape(4, 3, 41)
    torch.testing.assert_close(out_short, out_long[:, :, ::2])
    with pytest.raises(ValueError, match="shorter hop"):
        load_rehopped(Restorer(16, 2, hop=128), short.state_dict(), 64)
    with pytest.raises(ValueError, match="same width"):
        load_rehopped(Restorer(24, 2, hop=64), long.state_dict(), 128)


def test_init_from_a_longer_hop_and_a_resume_at_another_hop_is_an_error(tiny_data, tmp_path, capsys):
    assert train.main(_args(tiny_data, tmp_path / "h128", 2)) == 0
    args = _args(tiny_data, tmp_path / "h64", 2) + ["--hop", "64"]
    assert train.main(args + ["--init", str(tmp_path / "h128" / "final.pt")]) == 0
    assert "(hop 128 -> 64)" in capsys.readouterr().out
    ckpt = torch.load(tmp_path / "h64" / "final.pt", weights_only=False)
    assert ckpt["config"]["hop"] == 64 and ckpt["model"]["inp.weight"].shape[1] == 65 + 1
    resumed = _args(tiny_data, tmp_path / "h64", 4)  # without --hop 64: the checkpoint's hop differs
    with pytest.raises(SystemExit):
        train.main(resumed)
    assert "trained with --hop 64, not 128" in capsys.readouterr().err


def test_carried_states_start_items_from_other_audio_or_silence():
    import numpy as np

    from tools.train import carried_states, run_offline, silence_state

    torch.manual_seed(0)
    model = Restorer(16, 2, hop=64)
    with torch.no_grad():
        model.gate.fill_(0.5)  # at 0 (untrained) the output does not depend on the GRU
    silence = silence_state(model)
    assert silence.shape == (2, 1, 16) and float(silence.abs().max()) > 0
    x = 0.1 * torch.randn(4, 2048)
    _, prev = run_offline(model, x, return_state=True)
    h = carried_states(prev, silence, 4, 1.0, np.random.default_rng(0))
    for b in range(4):  # every item from another item's end state or from the silence state
        assert any(torch.equal(h[:, b], prev[:, j]) for j in range(4)) or torch.equal(h[:, b], silence[:, 0])
    assert carried_states(prev, silence, 4, 0.0, np.random.default_rng(0)) is None
    # and the state is used: the same input from another state gives another output
    assert float((run_offline(model, x, h) - run_offline(model, x)).abs().max()) > 1e-4


def test_edge_term_charges_only_what_the_output_adds_below_15_khz():
    torch.manual_seed(3)
    x = torch.randn(2, 8192) * 0.05
    _, same = train.loss_fn(x, x, 44100, x, edge_weight=1.0)
    t = torch.arange(8192) / 44100
    leak = x + 0.01 * torch.sin(2 * torch.pi * 14500 * t)  # content added at 14.5 kHz
    high = x + 0.01 * torch.sin(2 * torch.pi * 18000 * t)  # the model's own band: not the edge term's business
    _, leaked = train.loss_fn(leak, x, 44100, x, edge_weight=1.0)
    _, above = train.loss_fn(high, x, 44100, x, edge_weight=1.0)
    assert same["edge"] < 0.01 and above["edge"] < 0.01
    assert leaked["edge"] > 10 * max(same["edge"], 1e-3)
    assert "edge" not in train.loss_fn(x, x, 44100)[1]
    with pytest.raises(ValueError, match="needs the input"):
        train.loss_fn(x, x, 44100, edge_weight=1.0)



def test_boost_draws_a_variant_more_often_and_bad_boosts_are_refused(tiny_data, tmp_path, capsys):
    import numpy as np

    clip = train.load_split(tiny_data, "train")[0]
    names = sorted(clip["variants"])
    assert len(names) == 2  # the fixture gives each clip two variants
    share = {}
    for boost in ({}, {names[0]: 9.0}):
        b = train.Batcher([clip], 4, 1024, seed=1, lossless_prob=0.2, boost=boost)
        rng = np.random.default_rng(0)
        drawn = [b.draw_variant(clip, rng) for _ in range(2000)]
        assert 0.15 < drawn.count(train.LOSSLESS) / len(drawn) < 0.25
        share[bool(boost)] = drawn.count(names[0]) / (len(drawn) - drawn.count(train.LOSSLESS))
    assert 0.45 < share[False] < 0.55  # uniform without a boost
    assert 0.85 < share[True] < 0.95  # 9 : 1 with it
    for bad in ("nope=2", f"{names[0]}=0", f"{names[0]}=x"):
        with pytest.raises(SystemExit) as e:
            train.main(["--data", str(tiny_data), "--run", str(tmp_path / "run"), "--boost", bad])
        assert e.value.code == 2
        assert "--boost" in capsys.readouterr().err


def test_uncoded_lossless_draws_no_lossless_item_from_a_vorbis_source(tiny_data):
    """With ``uncoded_lossless`` a clip cut from a Vorbis source (a mix) is always a codec's
    input; an organ's or a synthetic clip is lossless as often as before."""
    import numpy as np

    clip = train.load_split(tiny_data, "train")[0]
    shares = {}
    for source in ("real_mix", "real_voice", "real_organ", "real_drums", "procedural"):
        for uncoded in (False, True):
            c = {**clip, "source": source}
            b = train.Batcher([c], 4, 1024, seed=1, lossless_prob=0.3, uncoded_lossless=uncoded)
            rng = np.random.default_rng(0)
            drawn = [b.draw_variant(c, rng) for _ in range(2000)]
            shares[source, uncoded] = drawn.count(train.LOSSLESS) / len(drawn)
    for source in ("real_mix", "real_voice"):
        assert 0.25 < shares[source, False] < 0.35 and shares[source, True] == 0.0
    for source in ("real_organ", "real_drums", "procedural"):
        assert shares[source, True] == shares[source, False] and 0.25 < shares[source, True] < 0.35


def test_bad_gating_options_are_refused_before_a_run_folder_is_made(tmp_path, capsys):
    for extra, words in ((["--cliff-db", "3"], "cliff_db must be 0 (off) or in 6..60"),
                         (["--cliff-db", "30", "--cliff-gate"], "cliff_gate needs a hold"),
                         (["--hold-ms", "900"], "hold_ms must be in 0..400"),
                         (["--high-cutoff-hz", "12000"], "high_cutoff_hz must be in 16000..21000")):
        run = tmp_path / "run"
        with pytest.raises(SystemExit) as e:
            train.main(["--data", str(tmp_path), "--run", str(run), "--arch", "cutoff", *extra])
        assert e.value.code == 2
        assert words in capsys.readouterr().err
        assert not run.exists()


def _cut_in_half_the_frames(sr=44100, seconds=2.0, cut=16500.0, seed=0):
    """Noise whose second half a Vorbis-like encoder cut at ``cut`` (quieter there), with a
    16-bit-like floor, and the same noise full band: ``(reference, full) [1, n]``."""
    import numpy as np
    import scipy.signal

    rng = np.random.default_rng(seed)
    n = int(sr * seconds)
    x = rng.standard_normal(n) * 0.1
    low = scipy.signal.sosfiltfilt(scipy.signal.ellip(12, 0.1, 90, cut / (sr / 2), output="sos"), x) * 0.3
    ref = np.concatenate([x[: n // 2], low[n // 2:]]) + rng.standard_normal(n) * 1e-5
    return torch.tensor(ref[None], dtype=torch.float32), torch.tensor(x[None], dtype=torch.float32)


def test_frame_cut_finds_where_the_reference_itself_is_cut_and_nothing_in_a_gentle_rolloff():
    import numpy as np
    import scipy.signal

    sr = 44100
    ref, full = _cut_in_half_the_frames(sr)
    for n_fft in train.RESOLUTIONS:
        lp = train._log_power(ref, n_fft)
        cut = train.frame_cut_hz(lp, torch.fft.rfftfreq(n_fft, 1 / sr), sr)[0].numpy()
        m = len(cut)
        assert np.all(cut[: m // 2 - 2] == sr / 2)
        assert np.all(np.abs(cut[m // 2 + 2:] - 16500) < 700), cut[m // 2 + 2:]
    gentle = scipy.signal.sosfilt(scipy.signal.butter(2, 12000 / (sr / 2), output="sos"), full.numpy()[0])
    lp = train._log_power(torch.tensor(gentle[None], dtype=torch.float32), 1024)
    # (The digital Butterworth's zero at Nyquist is a real cliff, over 21 kHz.)
    assert torch.all(train.frame_cut_hz(lp, torch.fft.rfftfreq(1024, 1 / sr), sr) > 20800)


def test_own_cut_does_not_score_what_the_reference_itself_dropped():
    """An estimate that fills the band the reference's encoder cut in half its frames is
    charged for it without ``own_cut`` and not with it; an estimate that leaves a band the
    reference has empty is charged either way."""
    sr = 44100
    ref, full = _cut_in_half_the_frames(sr)
    half = ref.shape[1] // 2
    filled = torch.cat([ref[:, :half], ref[:, half:] + (full[:, half:] - torch.tensor(0.0)) * 0.05], dim=1)
    kw = dict(sr=sr, n_fft=1024, lo_hz=16000.0, hi_hz=0.95 * sr / 2)
    plain, own = (train.band_lsd(filled, ref, own_cut=o, **kw) for o in (False, True))
    assert float(plain) > 0.5
    assert float(own) < 0.1 * float(plain)
    # Taking away the top where the reference has one is charged with own_cut too.
    import scipy.signal

    lowpassed = scipy.signal.sosfiltfilt(scipy.signal.ellip(12, 0.1, 90, 15000 / (sr / 2), output="sos"),
                                         ref.numpy()[0])
    missing = torch.tensor(lowpassed[None].copy(), dtype=torch.float32)
    assert float(train.band_lsd(missing, ref, own_cut=True, **kw)) > 0.5
