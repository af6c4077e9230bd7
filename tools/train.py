"""Train the restoration model on the dataset from ``tools.make_dataset``.

Usage::

    nice -n 10 .venv/bin/python -m tools.train --data data/dataset --run runs/main --steps 12000

Deterministic for a seed: step ``i`` draws its batch from ``numpy`` generator
``(seed, i)`` and torch is seeded once, so a run resumed from a checkpoint continues as if
it had not stopped (checkpoints every ``--checkpoint-every`` steps, ``last.pt`` in the run
folder, picked up automatically). One thread (``torch.set_num_threads(1)``).

Loss (base rate; the x4 interpolation is fixed and linear, so it is left out of training):
a log-spectral distance, the same per-frame form as the evaluation's LSD, at three STFT
resolutions (512, 1024, 2048), on two bands: 16 kHz to 0.95 x Nyquist (the band the codec
removed) and 12-16 kHz (kept by the codec, apart from holes: this term keeps the model's
first bins and its synthesis leakage from adding what is already there). Below
``tools.model.BAND_START`` the
model cannot write, so the low band stays faithful by construction, apart from the
leakage that ``--edge-weight`` charges (see ``loss_fn``). 25 % of the batch items
(``--lossless-prob``) are lossless (input = target), which teaches the model to add nothing
then; with ``--lossless-sources uncoded``, only clips whose source holds no lossy codec
(``tools.realdata.lossless_source``) are drawn so: a Vorbis decode as input is one more
codec, whose holes are the model's to fill.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from rtupscale.dsp import metrics
from tools.codecs import CODECS
from tools.realdata import CLIFF_DB, CUTOFF_MIN_HZ, FULL_BAND_HZ, lossless_source
from tools.model import ARCHS, HOP, HOPS, CutoffRestorer, Restorer, build_model, count_parameters, load_rehopped, load_weights, load_widened

LOSSLESS = "lossless"
SEGMENT_FRAMES = 16384  # training segment, samples (a multiple of every hop)
WARM_FRAMES = 1024  # the loss ignores each segment's first samples (zero state)


def load_split(data_dir: str | Path, split: str, max_clips: int | None = None) -> list[dict]:
    """Load clips of one split: ``[{id, sr, clean [2, n] int16, variants {name: int16}}]``."""
    clips = []
    metas = sorted((Path(data_dir) / "clips").glob("*/meta.json"))
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        if meta["split"] != split:
            continue
        d = meta_path.parent
        clean, sr = sf.read(d / "clean.flac", dtype="int16", always_2d=True)
        variants = {}
        for name, entry in meta["variants"].items():
            if entry["ok"]:
                v, _ = sf.read(d / f"{name}.flac", dtype="int16", always_2d=True)
                variants[name] = v.T.copy()
        clips.append({"id": meta["id"], "sr": sr, "clean": clean.T.copy(), "variants": variants,
                      "cutoff_hz": meta.get("cutoff_hz"), "source": meta.get("source")})
        if max_clips and len(clips) >= max_clips:
            break
    if not clips:
        raise ValueError(f"no {split} clips under {data_dir}/clips (run tools.make_dataset first)")
    return clips


class Batcher:
    """Random training segments; batch ``i`` depends only on ``(seed, i)``.

    All items of one batch share a sample rate (so the loss bands are the same bins).
    """

    def __init__(self, clips: list[dict], batch: int, frames: int, seed: int, lossless_prob: float = 0.25,
                 hop: int = HOP, boost: dict[str, float] | None = None, uncoded_lossless: bool = False):
        if frames % hop:
            raise ValueError(f"segment frames {frames} must be a multiple of the hop {hop}")
        self.by_rate: dict[int, list[dict]] = {}
        for c in clips:
            if c["clean"].shape[1] > frames:
                self.by_rate.setdefault(c["sr"], []).append(c)
        self.rates = sorted(self.by_rate)
        self.batch, self.frames, self.seed, self.lossless_prob = batch, frames, seed, lossless_prob
        self.boost = dict(boost or {})  # variant -> relative weight when an item's codec is drawn
        self.uncoded_lossless = uncoded_lossless  # lossless items only from clips with no codec in their source

    def draw_variant(self, clip: dict, rng: np.random.Generator) -> str:
        """The input of one item: ``LOSSLESS`` with probability ``lossless_prob`` (with
        ``uncoded_lossless``: and only for a clip whose source holds no lossy codec), else one
        of the clip's codec variants (uniform, or weighted by ``boost``)."""
        names = sorted(clip["variants"])
        lossless = rng.random() < self.lossless_prob
        if not names or (lossless and (not self.uncoded_lossless or lossless_source(clip.get("source") or ""))):
            return LOSSLESS
        if self.boost:
            w = np.array([self.boost.get(n, 1.0) for n in names])
            return names[rng.choice(len(names), p=w / w.sum())]
        return names[rng.integers(len(names))]

    def get(self, step: int) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(sr, degraded [B, frames], clean [B, frames], top_hz [B])`` float32;
        ``top_hz`` is where each item's reference stops being one (:func:`reference_top_hz`)."""
        rng = np.random.default_rng([self.seed, step])
        sr = self.rates[rng.integers(len(self.rates))]
        pool = self.by_rate[sr]
        x = np.empty((self.batch, self.frames), np.float32)
        y = np.empty((self.batch, self.frames), np.float32)
        top = np.empty(self.batch, np.float32)
        for b in range(self.batch):
            clip = pool[rng.integers(len(pool))]
            name = self.draw_variant(clip, rng)
            src = clip["clean"] if name == LOSSLESS else clip["variants"][name]
            ch = rng.integers(2)
            start = rng.integers(0, clip["clean"].shape[1] - self.frames)
            gain = 10 ** (rng.uniform(-12, 0) / 20) / 32768.0
            x[b] = src[ch, start:start + self.frames] * gain
            y[b] = clip["clean"][ch, start:start + self.frames] * gain
            top[b] = reference_top_hz(clip.get("cutoff_hz"), sr)
        return sr, torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(top)


CUTOFF_MARGIN_HZ = 300.0


def reference_top_hz(cutoff_hz: float | None, sr: int) -> float:
    """The top of the band a clip's reference is good for: ``0.95 x Nyquist``, or, for a
    clip cut from a lossy source whose cut-off lies below ``realdata.FULL_BAND_HZ``,
    ``CUTOFF_MARGIN_HZ`` below that cut-off.

    A full-band source is the reference up to the top, its own low-pass included (as in
    the evaluation): above a cut-off of 19.5 kHz or more the right output is as empty as the
    reference, so a model learns to fill only below that."""
    top = metrics.TOP_FRACTION * sr / 2
    if cutoff_hz is None or cutoff_hz >= FULL_BAND_HZ:
        return top
    return min(top, float(cutoff_hz) - CUTOFF_MARGIN_HZ)


def _log_power(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x, n_fft, n_fft // 4, window=window, center=False, return_complex=True)
    # The floor sits below the 16-bit dither (about 2e-7 at n_fft 2048): the evaluation
    # (eps 1e-12) scores the high band of quiet passages too.
    return torch.log10(spec.real**2 + spec.imag**2 + 1e-13 * n_fft)  # [B, bins, frames]


def frame_cut_hz(log_power: torch.Tensor, freqs: torch.Tensor, sr: int) -> torch.Tensor:
    """Per frame of a reference's ``log_power`` (log10, ``[B, bins, frames]``), where its own
    top is cut: ``tools.realdata.measure_cutoff``'s cliff test on each frame (a drop of
    ``CLIFF_DB`` or more between the 600 Hz under a bin and the 600 Hz over it, from
    ``CUTOFF_MIN_HZ`` up, with nothing above coming back within 10 dB of the level under),
    ``sr / 2`` where there is none. ``[B, frames]``, Hz."""
    b, n_bins, n_frames = log_power.shape
    w = max(2, int(round(600.0 / float(freqs[1]))))
    ks = torch.arange(max(w, int(CUTOFF_MIN_HZ / float(freqs[1]))), n_bins - w, device=log_power.device)
    csum = torch.cat([log_power.new_zeros(b, 1, n_frames), log_power.cumsum(dim=1)], dim=1)
    below = (csum[:, ks] - csum[:, ks - w]) / w
    above = (csum[:, ks + w] - csum[:, ks]) / w
    top = torch.flip(torch.cummax(torch.flip(log_power, [1]), dim=1).values, [1])[:, ks]
    drop = torch.where(top < below - 1.0, below - above, torch.zeros_like(below))  # log10: 10 dB = 1
    value, best = drop.max(dim=1)  # [B, frames]
    return torch.where(value >= CLIFF_DB / 10.0, freqs[ks][best], torch.full_like(value, sr / 2))


def band_lsd(est: torch.Tensor, ref: torch.Tensor, sr: int, n_fft: int, lo_hz: float, hi_hz: float,
             top_hz: torch.Tensor | None = None, own_cut: bool = False) -> torch.Tensor:
    """Differentiable LSD on the bins in ``[lo_hz, hi_hz)``: mean over frames of the RMS log10
    power error. With ``top_hz [B]``, item b's band also stops at ``top_hz[b]``; with
    ``own_cut``, each frame's band also stops where the reference's own top is cut in that
    frame (:func:`frame_cut_hz`: a Vorbis source lowers its low-pass in quiet frames, and
    what it dropped there is no target). Frames left with fewer than two bins do not count
    (zero when none is left)."""
    freqs = torch.fft.rfftfreq(n_fft, 1.0 / sr, device=est.device)
    mask = (freqs >= lo_hz) & (freqs < hi_hz)
    with torch.no_grad():
        ref_full = _log_power(ref, n_fft)
        ref_lp = ref_full[:, mask, :]
    diff = _log_power(est, n_fft)[:, mask, :] - ref_lp
    if top_hz is None and not own_cut:
        return torch.sqrt(diff.pow(2).mean(dim=1) + 1e-5).mean()
    if not own_cut:
        w = (freqs[mask][None, :] < top_hz.to(est.device)[:, None]).to(est.dtype)  # [B, bins]
        count = w.sum(dim=1)
        use = count >= 2
        if not bool(use.any()):
            return est.sum() * 0.0
        per_frame = torch.sqrt((diff.pow(2) * w[:, :, None]).sum(dim=1) / count.clamp(min=1)[:, None] + 1e-5)
        return per_frame.mean(dim=1)[use].mean()
    with torch.no_grad():
        cut = frame_cut_hz(ref_full, freqs, sr)[:, None, :]  # [B, 1, frames]
        if top_hz is not None:
            cut = torch.minimum(cut, top_hz.to(est.device)[:, None, None])
        w = (freqs[mask][None, :, None] < cut).to(est.dtype)  # [B, bins, frames]
        count = w.sum(dim=1)  # [B, frames]
        use = count >= 2
    if not bool(use.any()):
        return est.sum() * 0.0
    per_frame = torch.sqrt((diff.pow(2) * w).sum(dim=1) / count.clamp(min=1) + 1e-5)
    return per_frame[use].mean()


RESOLUTIONS = (512, 1024, 2048)
MID_EDGE_HZ = 12000.0
EDGE_LO_HZ = 14000.0


def loss_fn(est: torch.Tensor, ref: torch.Tensor, sr: int, x: torch.Tensor | None = None,
            edge_weight: float = 0.0, top_hz: torch.Tensor | None = None,
            own_cut: bool = False) -> tuple[torch.Tensor, dict]:
    """Returns ``(total, {term: value})``; see the module docstring. ``top_hz`` and
    ``own_cut``: see :func:`band_lsd`.

    With ``edge_weight`` > 0 and the input ``x``: plus ``edge_weight`` x the LSD between the
    output and the *input* on 14-15 kHz, the top of the evaluation's LF band. The model
    writes nothing there, but its band starts at 15.2 kHz and gains that change every hop
    spread the folded content a few hundred Hz down: this term charges that leakage, which is
    all that can make the LF band differ from the input's (the codec's holes there are not
    the model's to fill).
    """
    top = metrics.TOP_FRACTION * sr / 2
    hf = sum(band_lsd(est, ref, sr, n, metrics.HF_EDGE_HZ, top, top_hz, own_cut)
             for n in RESOLUTIONS) / len(RESOLUTIONS)
    mid = sum(band_lsd(est, ref, sr, n, MID_EDGE_HZ, metrics.HF_EDGE_HZ, top_hz, own_cut)
              for n in RESOLUTIONS) / len(RESOLUTIONS)
    total = hf + mid
    terms = {"hf": float(hf.detach()), "mid": float(mid.detach())}
    if edge_weight > 0:
        if x is None:
            raise ValueError("the edge term needs the input x")
        edge = sum(band_lsd(est, x, sr, n, EDGE_LO_HZ, metrics.LF_EDGE_HZ) for n in RESOLUTIONS) / len(RESOLUTIONS)
        total = total + edge_weight * edge
        terms["edge"] = float(edge.detach())
    return total, terms


def run_offline(model, x: torch.Tensor, gru: torch.Tensor | None = None, return_state: bool = False):
    """Restored base-rate signal, latency ``model.hop`` removed. ``[B, n] -> [B, n]`` (n % hop == 0).

    From zero state, or (a ``gru`` model) with the GRU starting from ``gru``
    ``[layers, B, hidden]`` (the analysis history and the overlap-add tail start at zero);
    with ``return_state`` also the GRU state at the end (None for a model without one)."""
    b = x.shape[0]
    states = model.initial_state(b)
    has_gru = "gru" in model.state_names
    if gru is not None:
        if not has_gru:
            raise ValueError(f"a {model.arch} model has no GRU state to start from")
        states[model.state_names.index("gru")] = gru
    padded = torch.cat([x, torch.zeros(b, model.hop, device=x.device)], dim=1)
    restored, *new = model.restore(padded, *states[:-1])
    out = restored[:, model.hop:]
    if not return_state:
        return out
    return out, (new[model.state_names.index("gru")] if has_gru else None)


SILENCE_S = 3.0  # the silence the "silence state" is taken after
SILENCE_EVERY = 50  # steps between two updates of it


@torch.no_grad()
def silence_state(model: Restorer, sr: int = 44100) -> torch.Tensor:
    """The GRU state after ``SILENCE_S`` of digital silence: where a stream's state sits
    before a song starts. ``[layers, 1, hidden]``."""
    n = int(SILENCE_S * sr) // model.hop * model.hop
    _, gru = run_offline(model, torch.zeros(1, n, device=model.gate.device), return_state=True)
    return gru


def carried_states(prev: torch.Tensor | None, silence: torch.Tensor, batch: int, prob: float,
                   rng: np.random.Generator) -> torch.Tensor | None:
    """Initial GRU states for ``--carry-prob``: each item, with probability ``prob``, starts
    from the end state of one of the previous step's items (the stream ran on other music)
    or from the silence state, half and half; the others from zero. None when none is drawn."""
    pick = rng.random(batch) < prob
    if not pick.any():
        return None
    layers, _, hidden = silence.shape
    h = torch.zeros(layers, batch, hidden, device=silence.device)
    for b in np.flatnonzero(pick):
        if prev is not None and rng.random() < 0.5:
            h[:, b] = prev[:, rng.integers(prev.shape[1])]
        else:
            h[:, b] = silence[:, 0]
    return h


@torch.no_grad()
def validate(model, clips: list[dict], seconds: float = 4.0) -> dict:
    """LSD (all/hf/lf) of the model and of the unprocessed input, per codec variant, base rate."""
    model.eval()
    acc: dict[str, list] = {}
    for clip in clips:
        sr = clip["sr"]
        n = int(seconds * sr) // model.hop * model.hop
        ref = clip["clean"][:, :n].astype(np.float32) / 32768
        items = dict(clip["variants"])
        items[LOSSLESS] = clip["clean"]
        for name, deg in items.items():
            x = torch.from_numpy(deg[:, :n].astype(np.float32) / 32768)
            est = run_offline(model, x.to(model.gate.device)).cpu().numpy()
            m = metrics.lsd(ref, est, sr)
            b = metrics.lsd(ref, x.numpy(), sr)
            acc.setdefault(name, []).append([m["all"], m["hf"], m["lf"], b["all"], b["hf"], b["lf"]])
    model.train()
    out = {}
    for name, rows in sorted(acc.items()):
        r = np.mean(rows, axis=0)
        out[name] = {"model": {"all": r[0], "hf": r[1], "lf": r[2]}, "input": {"all": r[3], "hf": r[4], "lf": r[5]},
                     "n": len(rows)}
    keys = [k for k in out if k.startswith("mp3_")]
    out["mean_mp3_hf_ratio"] = float(np.mean([out[k]["model"]["hf"] / out[k]["input"]["hf"] for k in keys])) if keys else float("nan")
    return out


def lr_at(step: int, steps: int, lr: float, warmup: int = 200) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return 1e-2 * lr + (lr - 1e-2 * lr) * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/dataset")
    parser.add_argument("--run", default="runs/main", help="folder for checkpoints and logs")
    parser.add_argument("--steps", type=int, default=6500, help="length of the learning-rate schedule")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop at this step (default: --steps); the schedule stays that of --steps")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--frames", type=int, default=SEGMENT_FRAMES, help="segment length, samples")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--arch", default="gru", choices=ARCHS,
                        help="gru: the v2 design (GRU memory, writes from 15.2 kHz); cutoff: the v3 design "
                        "(finite memory, writes only where the input is empty; tools.model.CutoffRestorer)")
    parser.add_argument("--hidden", type=int, default=192)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hop", type=int, default=HOP, choices=HOPS,
                        help="input samples per frame: the model's block multiple (latency hop + 72 samples)")
    parser.add_argument("--hold-ms", type=float, default=0.0,
                        help="cutoff arch: fill a band bin only once it has been empty this long (0: every "
                        "frame decides alone); a codec's low-pass is empty in every frame, a natural decay is not")
    parser.add_argument("--hold-share", type=float, default=1.0,
                        help="cutoff arch, with --hold-ms: fill a bin that is empty now and was empty in at least "
                        "this share of the hold (1: in every frame); the bins a codec keeps only in some frames")
    parser.add_argument("--cliff-db", type=float, default=0.0,
                        help="cutoff arch: also fill at once above an empty top band that begins at a cliff "
                        "this many dB high (a codec dropping its top bands in some frames; 0: off)")
    parser.add_argument("--cliff-gate", action="store_true",
                        help="cutoff arch: the hold fills a bin only under a cliff seen within the hold (needs "
                        "--hold-ms and --cliff-db): a codec's low-pass shows one, a quiet top does not")
    parser.add_argument("--high-cutoff-hz", type=float, default=CutoffRestorer.HIGH_CUTOFF_HZ,
                        help="cutoff arch: fill only frames whose empty top band reaches down to this frequency "
                        "(Hz at 44.1 kHz); a cut-off above it is where lossless and high-rate codecs end alike")
    parser.add_argument("--over-gate", action="store_true",
                        help="cutoff arch: the over gains act only where the fill may (an empty top band down to "
                        "--high-cutoff-hz): nothing is written over full-band input")
    parser.add_argument("--over-holes", action="store_true",
                        help="cutoff arch: the over gains act on every bin the fill leaves alone, the codec's "
                        "occasional holes in a band it keeps included (needs --hold-ms)")
    parser.add_argument("--floor-db", type=float, default=0.0,
                        help="--arch cutoff: train with the floor rule on (the fold exciter's copy in band bins this "
                        "far, dB, under their source, under a cut-off; the learned gains add to it); 0: off")
    parser.add_argument("--cliff-hold-ms", type=float, default=0.0,
                        help="--arch cutoff with --cliff-gate: how long a cliff keeps the gate open (ms, hold-ms..4000; "
                        "0: the hold)")
    parser.add_argument("--floor-learned", action="store_true",
                        help="--arch cutoff with --floor-db: scale the floor rule's copy per bin by a learned "
                        "factor in 0..2 (starts at 1)")
    parser.add_argument("--no-over", action="store_true",
                        help="cutoff arch: no gains over content the input has (writes only where it is empty)")
    parser.add_argument("--boost", action="append", default=[], metavar="VARIANT=W",
                        help="draw this codec variant W times as often as the others (repeatable), "
                        f"e.g. aac_128=3; variants: {', '.join(sorted(CODECS))}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", type=int, default=250)
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--val-clips", type=int, default=24)
    parser.add_argument("--max-train-clips", type=int, default=None)
    parser.add_argument("--lossless-prob", type=float, default=0.25,
                        help="share of batch items that are lossless (input = target)")
    parser.add_argument("--lossless-sources", choices=("all", "uncoded"), default="all",
                        help="which clips give lossless items: all, or only those whose source holds no lossy "
                        "codec (a Vorbis decode is then always a codec's input)")
    parser.add_argument("--edge-weight", type=float, default=0.0,
                        help="weight of the 14-15 kHz leakage term (output against input; see loss_fn)")
    parser.add_argument("--own-cut", action="store_true",
                        help="score each frame only below where the reference's own top is cut in that frame "
                        "(a Vorbis source lowers its low-pass in quiet frames; see band_lsd)")
    parser.add_argument("--init", default=None,
                        help="start from this checkpoint's weights (a fresh optimizer and schedule), or from an "
                        "exported --arch cutoff model's (.onnx; tools.export.checkpoint_from_onnx); "
                        "a narrower checkpoint with the same layers is widened to --hidden, computing the same "
                        "function at step 0 (tools.model.load_widened)")
    parser.add_argument("--carry-prob", type=float, default=0.0,
                        help="share of batch items whose GRU starts from another item's end state or from "
                        "the state after silence, not from zero: teaches the model to forget its history "
                        "(the live stream's state has run on other audio; file mode starts from zero)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu",
                        help="torch device: cpu, cuda, cuda:N, or auto (cuda where torch sees a GPU); "
                        "the results are the same up to float rounding, resuming works across devices")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        parser.error("--steps and --batch must be >= 1")
    if not 0.0 <= args.lossless_prob <= 1.0:
        parser.error(f"--lossless-prob must be in [0, 1], got {args.lossless_prob}")
    if not 0.0 <= args.carry_prob <= 1.0:
        parser.error(f"--carry-prob must be in [0, 1], got {args.carry_prob}")
    boost = {}
    for item in args.boost:
        name, _, w = item.partition("=")
        try:
            weight = float(w)
        except ValueError:
            weight = -1.0
        if name not in CODECS or not 0.0 < weight <= 100.0:
            parser.error(f"--boost {item!r}: expected VARIANT=W with VARIANT one of {sorted(CODECS)} and 0 < W <= 100")
        boost[name] = weight
    if args.arch != "cutoff" and (args.hold_ms or args.no_over or args.cliff_db or args.cliff_gate or args.floor_db
                                  or args.floor_learned):
        parser.error("--hold-ms, --cliff-db, --cliff-gate, --floor-db, --floor-learned and --no-over apply to --arch cutoff only")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA GPU here (use cpu or auto)")
    device = torch.device(args.device)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.arch != "gru" and args.carry_prob > 0:
        parser.error("--carry-prob applies to --arch gru only (a cutoff model's memory is finite)")
    try:  # the model checks its own options (hold_ms, cliff_db, cliff_gate, hidden)
        model = build_model(args.arch, args.hidden, args.layers, args.hop, args.hold_ms, not args.no_over,
                            args.cliff_db, args.cliff_gate, args.high_cutoff_hz, args.hold_share,
                            args.over_gate, args.over_holes, args.floor_db, args.floor_learned,
                            args.cliff_hold_ms).to(device)
    except ValueError as e:
        parser.error(str(e))
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    step = 0
    carry: dict[str, torch.Tensor | None] = {}  # --carry-prob: the previous step's end states, the silence state
    ckpt_path = run / "last.pt"
    config = {**{k: v for k, v in vars(args).items() if k != "no_over"}, "over": not args.no_over}
    if ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False, map_location=device)
        saved_hop = ckpt.get("config", {}).get("hop", HOP)
        if saved_hop != args.hop:
            parser.error(f"{ckpt_path} was trained with --hop {saved_hop}, not {args.hop}")
        saved_arch = ckpt.get("config", {}).get("arch", "gru")
        if saved_arch != args.arch:
            parser.error(f"{ckpt_path} was trained with --arch {saved_arch}, not {args.arch}")
        load_weights(model, ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step = ckpt["step"]
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        carry = {k: (v.to(device) if v is not None else None) for k, v in ckpt.get("carry", {}).items()}
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    elif args.init:
        if args.init.endswith(".onnx"):  # a shipped cutoff model: its weights, proved by parity
            from tools.export import ExportError, checkpoint_from_onnx
            try:
                init_ckpt = checkpoint_from_onnx(args.init)
            except (ExportError, KeyError, ValueError) as e:
                parser.error(f"--init {args.init}: {e}")
        else:
            init_ckpt = torch.load(args.init, weights_only=False, map_location=device)
        init, init_hop = init_ckpt["model"], init_ckpt.get("config", {}).get("hop", HOP)
        init_arch = init_ckpt.get("config", {}).get("arch", "gru")
        if init_arch != args.arch:
            parser.error(f"--init {args.init} is an --arch {init_arch} checkpoint, not {args.arch}")
        if args.arch != "gru":
            if init_hop != args.hop or init["mid.weight"].shape[0] != args.hidden:
                parser.error(f"--init with --arch {args.arch} needs the same --hop and --hidden as {args.init}")
            load_weights(model, init)
            print(f"initialised from {args.init}", flush=True)
        elif init_hop != args.hop:
            load_rehopped(model, init, init_hop)
            print(f"initialised from {args.init} (hop {init_hop} -> {args.hop})", flush=True)
        else:
            load_widened(model, init)  # a plain copy at the same width; checks the layers either way
            print(f"initialised from {args.init} ({init['mid.weight'].shape[0]} -> {args.hidden} wide)", flush=True)

    train_clips = load_split(args.data, "train", args.max_train_clips)
    val_clips = load_split(args.data, "val", args.val_clips)
    batcher = Batcher(train_clips, args.batch, args.frames, args.seed, args.lossless_prob, args.hop, boost,
                      uncoded_lossless=args.lossless_sources == "uncoded")
    print(f"{count_parameters(model)} parameters on {device}; {len(train_clips)} train clips, {len(val_clips)} val clips",
          flush=True)
    log = open(run / "log.jsonl", "a")
    warm = WARM_FRAMES  # loss ignores the zero-state start of each segment

    def save(path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                    "torch_rng": torch.get_rng_state(), "config": config, "carry": carry}, tmp)
        tmp.replace(path)

    t0 = time.time()
    first_step = step
    running: dict[str, float] = {}
    stop_at = args.steps if args.stop_at is None else min(args.stop_at, args.steps)
    while step < stop_at:
        lr = lr_at(step, args.steps, args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        sr, x, y, top_hz = batcher.get(step)
        x, y, top_hz = x.to(device, non_blocking=True), y.to(device, non_blocking=True), top_hz.to(device)
        gru0 = None
        if args.carry_prob > 0:
            if carry.get("silence") is None or step % SILENCE_EVERY == 0:
                carry["silence"] = silence_state(model)
            gru0 = carried_states(carry.get("prev"), carry["silence"], x.shape[0], args.carry_prob,
                                  np.random.default_rng([args.seed, step, 1]))
        est, gru_end = run_offline(model, x, gru0, return_state=True)
        carry["prev"] = gru_end.detach() if args.carry_prob > 0 else None
        loss, terms = loss_fn(est[:, warm:], y[:, warm:], sr, x[:, warm:], args.edge_weight, top_hz, args.own_cut)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        opt.step()
        step += 1
        for k, v in {**terms, "loss": float(loss.detach()), "grad": grad_norm}.items():
            running[k] = running.get(k, 0.0) + v
        if step % 50 == 0:
            entry = {"step": step, "lr": lr, "elapsed_s": round(time.time() - t0, 1),
                     **{k: round(v / 50, 5) for k, v in running.items()},
                     "gate": [round(float(g.detach()), 4) for g in model.gate],
                     **({"gate_over": [round(float(g.detach()), 4) for g in model.gate_over]}
                        if hasattr(model, "gate_over") else {})}
            running = {}
            print(json.dumps(entry), flush=True)
            log.write(json.dumps(entry) + "\n")
            log.flush()
        if step % args.checkpoint_every == 0 or step == stop_at:
            save(ckpt_path)
        if step % args.validate_every == 0 or step == stop_at:
            val = validate(model, val_clips)
            entry = {"step": step, "validation": val}
            print(json.dumps({"step": step, "val_mean_mp3_hf_ratio": round(val["mean_mp3_hf_ratio"], 4),
                              **{k: {s: {b: round(x, 3) for b, x in v[s].items()} for s in ("model", "input")}
                                 for k, v in val.items() if k in ("mp3_128", LOSSLESS, "mp3_320")}}), flush=True)
            log.write(json.dumps(entry) + "\n")
            log.flush()
    save(run / f"final.pt")
    print(f"done: step {step} ({step - first_step} steps this run) in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
