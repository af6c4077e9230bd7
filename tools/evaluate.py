"""Evaluate a model against plain DSP on the test split: real music first, synthetic second.

Usage::

    nice -n 10 .venv/bin/python -m tools.evaluate --model models/rtupscale-restore-v3.onnx \
        --data data/dataset --out models/eval-v3 --seconds 6 --workers 2 \
        --compare v2=models/rtupscale-restore-v2.onnx

Every system goes through the real file mode (``rtupscale.fileio.upscale_file``, block 256,
float output, latency compensated) and is brought back to the base rate by taking every
4th output sample, which is exact here because the x4 output holds nothing above the base
Nyquist (images <= -100 dB):

- ``resampler``: the bypass path (no model), on the degraded input;
- ``exciter``: the fold exciter (``tools.baselines.folding_exciter``: 8-16 kHz copied to
  16-24 kHz at -12 dB, STFT 2048/512 Hann) on the degraded input, then the bypass;
- ``adaptive``: our best plain DSP, the cut-off-aware exciter
  (``tools.baselines.adaptive_exciter``), then the bypass;
- ``model``, and every ``--compare`` model: the model, on the degraded input.

Conditions (``CONDITIONS``): MP3 CBR 96/128/192/320 and VBR V2 (LAME), AAC 128 (ffmpeg),
Opus 96 (libopus), and the lossless original. Every input is 16-bit PCM, as the clean
reference is and as training reads it (``tools.train.load_split``): LAME's decoder writes
16 bits, and the AAC and Opus decodes (stored at 24 bits) are read on the 16-bit grid here. Read at
24 bits, their emptied top band lies some 30 dB under the reference's dither floor, and
that floor alone then decides the high-band LSD (see
``docs/measurements/2026-12-04-restoration-v3.md``). Metric: LSD (``rtupscale.dsp.metrics``,
ssr_eval's definition) against the clean clip, per band, mean over clips (both channels).
Tables: the real-music clips (``real_*`` sources of ``tools.make_dataset``) first, then per
content type, then the synthetic clips. The real table's lossless row takes only the clips
whose source holds no lossy codec (``tools.realdata.LOSSLESS_KINDS``: drums, organ): a
Vorbis mix fed as it is is one more codec's output, with holes a restorer rightly fills
(the per-kind tables still show it). Also measures the model's cost per block (block 256
stereo, one onnxruntime thread) and draws spectrograms and a waveform zoom (samples as
markers).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from rtupscale import FACTOR
from rtupscale.config import parse_config
from rtupscale.dsp import metrics
from tools import realdata
from tools.baselines import adaptive_exciter, folding_exciter

CONDITIONS = ("mp3_96", "mp3_128", "mp3_192", "mp3_320", "mp3_v2", "aac_128", "opus_96", "lossless")
SYSTEMS = ("resampler", "exciter", "adaptive", "model")
BLOCK = 256
REAL_PREFIX = "real_"


SPLITS = ("test", "val")


def is_reference(meta: dict) -> bool:
    """Whether a held-out clip's high band is a real reference: a real clip whose builder
    recorded a cut-off under ``FULL_BAND_HZ`` or a share of frames kept to ``FRAME_FULL_HZ``
    under ``FRAME_FULL_SHARE`` (``tools.realdata``: no redraw found a full-band excerpt) is
    not, since its own top is empty where a restorer rightly fills."""
    cutoff, share = meta.get("cutoff_hz"), meta.get("full_band_share")
    return not ((cutoff is not None and cutoff < realdata.FULL_BAND_HZ)
                or (share is not None and share < realdata.FRAME_FULL_SHARE))


def test_clips(data_dir: str | Path, max_clips: int | None = None, split: str = "test",
               name_left: bool = True) -> list[dict]:
    """The clips of a held-out split (``test``, or ``val`` for tuning) that are references
    (:func:`is_reference`; with ``name_left``, the others are named on stderr), sorted by id."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    metas = [json.loads(p.read_text()) for p in sorted((Path(data_dir) / "clips").glob("*/meta.json"))]
    metas = [m for m in metas if m["split"] == split]
    left = [m["id"] for m in metas if not is_reference(m)]
    if left and name_left:
        print(f"left out (their own top is cut, see tools.realdata): {', '.join(left)}", file=sys.stderr)
    metas = [m for m in metas if is_reference(m)]
    if not metas:
        raise ValueError(f"no {split} clips under {data_dir}/clips")
    return metas[:max_clips] if max_clips else metas


class GuardCounter(logging.Handler):
    """Counts the blocks file mode reports as replaced by the bypass (NaN/Inf/runaway)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.blocks = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "misbehaved" in record.msg and record.args:
            self.blocks += int(record.args[0])


def read_input(path: Path, frames: int) -> np.ndarray:
    """A decoded codec variant as the model is scored on it: its first ``frames`` frames on
    the 16-bit grid (libsndfile's conversion, exactly as ``tools.train.load_split`` reads
    it; the clean reference is 16-bit too), as float32 ``[C, frames]``."""
    x, _ = sf.read(path, dtype="int16", always_2d=True, frames=frames)
    return x.T.astype(np.float32) / 32768.0


def through_file_mode(x: np.ndarray, sr: int, runner, config, tmp: Path) -> np.ndarray:
    """``[C, n]`` at ``sr`` -> the file mode's ``[C, 4n]`` output at ``4 sr``."""
    from rtupscale.fileio import upscale_file

    src, dst = tmp / "in.wav", tmp / "out.wav"
    dst.unlink(missing_ok=True)  # file mode refuses to replace an output
    sf.write(src, x.T, sr, subtype="FLOAT")
    upscale_file(src, dst, config, runner=runner, block_size=BLOCK, bits="float", progress=False)
    y, out_sr = sf.read(dst, dtype="float32", always_2d=True)
    if out_sr != FACTOR * sr or y.shape[0] != FACTOR * x.shape[1]:
        raise RuntimeError(f"file mode wrote {y.shape[0]} frames at {out_sr} Hz for {x.shape[1]} at {sr} Hz")
    return y.T


OWN = tuple(f"own_{b}" for b in metrics.BANDS)  # the row keys of the own-cut scores


def reference_edges(clean: np.ndarray, sr: int) -> np.ndarray:
    """Per LSD frame of ``clean`` (``metrics.frame_centres``), the reference's own low-pass
    in Hz: the lowest that :func:`tools.realdata.frame_cutoffs` finds in the frames (4096
    samples, hop 2048) that overlap it; ``sr / 2`` where none has a cliff."""
    n = clean.shape[-1]
    cut, _ = realdata.frame_cutoffs(clean, sr)
    n_fft_c, hop_c = 4096, 2048
    centres = metrics.frame_centres(n, sr)
    half = metrics.stft_params(sr)[0] // 2
    first = np.clip((centres - half - n_fft_c) // hop_c + 1, 0, len(cut) - 1)
    last = np.clip((centres + half - 1) // hop_c, 0, len(cut) - 1)
    first = np.minimum(first, last)
    return np.array([cut[a:b + 1].min() for a, b in zip(first, last)], np.float64)


def score(clean: np.ndarray, y: np.ndarray, sr: int, edges: np.ndarray) -> dict:
    """LSD of ``y`` against ``clean`` per band, plain and (``own_*``) left out above the
    reference's own low-pass per frame (``edges``, from :func:`reference_edges`)."""
    plain = metrics.lsd(clean, y, sr)
    own = metrics.lsd(clean, y, sr, top_hz=edges)
    return {**plain, **{f"own_{b}": v for b, v in own.items()}}


def _clip_rows(args: tuple) -> tuple[list[dict], dict, dict]:
    """Score one clip under every condition: ``(rows, guarded blocks per condition, kept
    signals for plots)``. Runs in a worker process."""
    meta, data_dir, models, seconds, conditions, keep_it = args
    from rtupscale.model.runner import ModelRunner

    config = parse_config({})
    runners = {name: ModelRunner(path, provider="cpu", threads=1) for name, path in models.items()}
    guard = GuardCounter()
    logging.getLogger("rtupscale.file").addHandler(guard)
    rows, guarded, kept = [], {}, {}
    d = Path(data_dir) / "clips" / meta["id"]
    clean, sr = sf.read(d / "clean.flac", dtype="float32", always_2d=True)
    clean = clean.T
    n = clean.shape[1] if seconds is None else min(clean.shape[1], int(seconds * sr))
    clean = clean[:, :n]
    source = meta["source"]
    kind = source[len(REAL_PREFIX):] if source.startswith(REAL_PREFIX) else "synthetic"
    edges = reference_edges(clean, sr)
    cut_share = float(np.mean(edges < metrics.TOP_FRACTION * sr / 2))
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for cond in conditions:
            if cond == "lossless":
                x = clean
            else:
                if not meta["variants"].get(cond, {}).get("ok"):
                    continue
                x = read_input(d / f"{cond}.flac", n)
            outs = {
                "resampler": through_file_mode(x, sr, None, config, tmp),
                "exciter": through_file_mode(folding_exciter(x, sr), sr, None, config, tmp),
                "adaptive": through_file_mode(adaptive_exciter(x, sr), sr, None, config, tmp),
            }
            for name, runner in runners.items():
                before = guard.blocks
                outs[name] = through_file_mode(x, sr, runner, config, tmp)
                guarded[f"{name}/{cond}"] = guard.blocks - before
            for system, y in outs.items():
                rows.append({"clip": meta["id"], "source": source, "kind": kind, "real": kind != "synthetic",
                             "sr": sr, "condition": cond, "system": system, "own_cut_share": cut_share,
                             **score(clean, y[:, ::FACTOR], sr, edges)})
            if keep_it and cond in ("mp3_128", "lossless"):
                kept[cond] = {"sr": sr, "clean": clean, "degraded": x, **outs}
    logging.getLogger("rtupscale.file").removeHandler(guard)
    return rows, guarded, kept


def summarize(rows: list[dict], systems: tuple[str, ...], conditions: tuple[str, ...], own: bool = False) -> dict:
    """``{condition: {system: {band: mean LSD, "clips": n}}}`` over ``rows``; with ``own``,
    of the own-cut scores (``own_*``), each band's mean over the clips that have frames in
    it, and ``"clips_hf"``, how many have."""
    table: dict = {}
    for cond in conditions:
        sub = [r for r in rows if r["condition"] == cond]
        if not sub:
            continue
        table[cond] = {}
        for system in systems:
            sel = [r for r in sub if r["system"] == system]
            if own:
                t = {b: float(np.nanmean([r[f"own_{b}"] for r in sel])) for b in metrics.BANDS}
                t["clips_hf"] = int(np.sum([not np.isnan(r["own_hf"]) for r in sel]))
            else:
                t = {b: float(np.mean([r[b] for r in sel])) for b in metrics.BANDS}
            t["clips"] = len(sel)
            table[cond][system] = t
    return table


def evaluate(model_path: str, data_dir: str, max_clips: int | None, seconds: float | None,
             keep: dict | None = None, conditions: tuple[str, ...] = CONDITIONS,
             compare: dict[str, str] | None = None, workers: int = 1, split: str = "test") -> dict:
    """Returns the tables (``real``, ``synthetic``, ``by_kind``), the per-clip rows and the
    guard's counts. ``compare``: more models to score, by name."""
    models = {"model": model_path, **(compare or {})}
    systems = (*SYSTEMS, *(compare or {}))
    clips = test_clips(data_dir, max_clips, split, name_left=False)
    jobs = [(m, data_dir, models, seconds, conditions, keep is not None and m["id"] in keep) for m in clips]
    rows: list[dict] = []
    guarded: dict[str, int] = {}
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            results = list(tqdm(pool.map(_clip_rows, jobs), total=len(jobs), desc=f"{split} clips", file=sys.stderr))
    else:
        results = [_clip_rows(j) for j in tqdm(jobs, desc=f"{split} clips", file=sys.stderr)]
    for (clip_rows, g, kept), job in zip(results, jobs):
        rows.extend(clip_rows)
        for k, v in g.items():
            guarded[k] = guarded.get(k, 0) + v
        if kept and keep is not None:
            keep[job[0]["id"]] = kept
    real = [r for r in rows if r["real"]]
    synthetic = [r for r in rows if not r["real"]]
    by_kind = {kind: summarize([r for r in real if r["kind"] == kind], systems, conditions)
               for kind in sorted({r["kind"] for r in real})}
    own_by_kind = {kind: summarize([r for r in real if r["kind"] == kind], systems, conditions, own=True)
                   for kind in sorted({r["kind"] for r in real})}
    cut_share = {kind: float(np.mean([r["own_cut_share"] for r in real if r["kind"] == kind and r["system"] == "resampler"
                                      and r["condition"] == conditions[0]]))
                 for kind in sorted({r["kind"] for r in real})}
    headline = [r for r in real if r["condition"] != "lossless" or r["kind"] in realdata.LOSSLESS_KINDS]
    return {"table": summarize(headline, systems, conditions), "synthetic": summarize(synthetic, systems, conditions),
            "by_kind": by_kind, "own_table": summarize(headline, systems, conditions, own=True),
            "own_by_kind": own_by_kind, "own_cut_share": cut_share,
            "systems": list(systems), "guard_blocks": guarded, "rows": rows}


def measure_cost(model_path: str, blocks: int = 3000) -> dict:
    """Seconds per block through the runtime's stream: block 256 stereo, one thread."""
    from rtupscale.model.runner import ModelRunner, time_blocks

    runner = ModelRunner(model_path, provider="cpu", threads=1)
    times = time_blocks(runner.stream(2, BLOCK), blocks=blocks, warmup=100)
    out = {"blocks": blocks, "median_ms": float(np.median(times) * 1e3),
           "p99_ms": float(np.percentile(times, 99) * 1e3)}
    for sr in (44100, 48000):
        out[f"block_ms_{sr}"] = BLOCK / sr * 1e3
        out[f"p99_fraction_{sr}"] = out["p99_ms"] / out[f"block_ms_{sr}"]
    return out


def markdown_table(table: dict, systems: tuple[str, ...] | list[str] = SYSTEMS) -> str:
    lines = ["| input | system | LSD all | LSD HF | LSD LF | clips |", "| --- | --- | --- | --- | --- | --- |"]
    for cond in table:
        for system in systems:
            t = table[cond][system]
            clips = f"{t['clips']} (HF {t['clips_hf']})" if "clips_hf" in t else f"{t['clips']}"
            lines.append(f"| {cond} | {system} | {t['all']:.3f} | {t['hf']:.3f} | {t['lf']:.3f} | {clips} |")
    return "\n".join(lines)


def kind_table(by_kind: dict, systems: tuple[str, ...] | list[str]) -> str:
    """LSD all / HF per content type and condition."""
    head = "| content | input | " + " | ".join(f"{s} all / HF" for s in systems) + " | clips |"
    lines = [head, "|" + " --- |" * (len(systems) + 3)]
    for kind, table in by_kind.items():
        for cond, t in table.items():
            cells = " | ".join(f"{t[s]['all']:.3f} / {t[s]['hf']:.3f}" for s in systems)
            lines.append(f"| {kind} | {cond} | {cells} | {t[systems[0]]['clips']} |")
    return "\n".join(lines)


LOSSY_HF_RATIO = 0.90  # model HF <= this x the fold exciter's, at every lossy condition
LOSSY_ALL_RATIO = 0.95  # model all <= this x the fold exciter's
LF_SLACK = 0.005  # model LF <= the resampler's + this
LOSSLESS_SLACK = 0.01  # lossless: model all <= the resampler's + this
MP3_128_TARGETS = {"all": 0.88, "hf": 1.15, "lf": 0.70}


def targets(table: dict) -> dict:
    """The ship criteria, each with its measured value and whether it is met, for the
    conditions that were evaluated: at every lossy condition the model beats the fold
    exciter (HF <= 0.90 x, all <= 0.95 x) and is never worse than the resampler below
    15 kHz (+0.005); on lossless input it is within +0.01 of the resampler; at MP3 128 the
    absolute targets (all <= 0.88, HF <= 1.15, LF <= 0.70)."""
    checks: dict[str, tuple[float, float]] = {}
    for cond, t in table.items():
        m = t["model"]
        if cond == "lossless":
            checks["lossless all <= resampler + 0.01"] = (m["all"] - t["resampler"]["all"], LOSSLESS_SLACK)
            continue
        checks[f"{cond} HF <= 0.90 x fold"] = (m["hf"] / t["exciter"]["hf"], LOSSY_HF_RATIO)
        checks[f"{cond} all <= 0.95 x fold"] = (m["all"] / t["exciter"]["all"], LOSSY_ALL_RATIO)
        checks[f"{cond} LF <= resampler + 0.005"] = (m["lf"] - t["resampler"]["lf"], LF_SLACK)
    if "mp3_128" in table:
        for band, limit in MP3_128_TARGETS.items():
            checks[f"mp3_128 {band} <= {limit}"] = (table["mp3_128"]["model"][band], limit)
    return {k: {"value": float(f"{v:.4g}"), "limit": lim, "met": bool(v <= lim)} for k, (v, lim) in checks.items()}


def plot(examples: dict, out_dir: Path) -> list[str]:
    """Spectrograms (reference, MP3 128 input, restored) and a waveform zoom per example."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for clip_id, conds in examples.items():
        e = conds.get("mp3_128")
        if not e:
            continue
        sr = e["sr"]
        fig, axes = plt.subplots(1, 4, figsize=(15, 3.2), sharey=True)
        for ax, (title, sig) in zip(axes, [("reference", e["clean"][0]), ("MP3 128 kbps", e["degraded"][0]),
                                             ("fold exciter", e["exciter"][0, ::FACTOR]),
                                             ("restored (model)", e["model"][0, ::FACTOR])]):
            ax.specgram(sig, NFFT=1024, Fs=sr, noverlap=768, vmin=-130, vmax=-20, cmap="magma")
            ax.set_title(f"{clip_id}: {title}", fontsize=9)
            ax.set_xlabel("s")
        axes[0].set_ylabel("Hz")
        fig.tight_layout()
        path = out_dir / f"spectrogram_{clip_id}.png"
        fig.savefig(path, dpi=70)
        plt.close(fig)
        written.append(path.name)

        # Waveform zoom around the loudest high-band moment: samples drawn as markers.
        ref = e["clean"][0]
        hp = np.diff(ref)
        c = int(np.argmax(np.abs(hp[1000:-1000]))) + 1000
        lo, hi = c - 24, c + 24
        fig, ax = plt.subplots(figsize=(10, 3.2))
        t_base = np.arange(lo, hi) / sr * 1e3
        t_up = np.arange(FACTOR * lo, FACTOR * hi) / (FACTOR * sr) * 1e3
        ax.plot(t_up, e["resampler"][0, FACTOR * lo:FACTOR * hi], ".", ms=3, color="0.6", label="resampler (4x)")
        ax.plot(t_up, e["model"][0, FACTOR * lo:FACTOR * hi], ".", ms=3, color="C1", label="model (4x)")
        ax.plot(t_base, ref[lo:hi], "o", ms=5, mfc="none", color="C0", label="reference (1x)")
        ax.plot(t_base, e["degraded"][0, lo:hi], "x", ms=5, color="C3", label="MP3 128 input (1x)")
        ax.set_xlabel("ms")
        ax.set_title(f"{clip_id}: waveform zoom (samples as markers)", fontsize=9)
        ax.legend(fontsize=7, ncol=4)
        fig.tight_layout()
        path = out_dir / f"waveform_{clip_id}.png"
        fig.savefig(path, dpi=70)
        plt.close(fig)
        written.append(path.name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=PATH",
                        help="another model to score beside --model (repeatable), e.g. v2=models/rtupscale-restore-v2.onnx")
    parser.add_argument("--data", default="data/dataset")
    parser.add_argument("--out", default="models/eval", help="folder for eval.json, eval.md and plots")
    parser.add_argument("--split", default="test", choices=SPLITS,
                        help="the held-out split to score: test (report) or val (tune; see tools.make_dataset)")
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="score only the first seconds of each clip")
    parser.add_argument("--plot-clips", default="", help="comma-separated clip ids to plot (default: one real clip per content type)")
    parser.add_argument("--cost-blocks", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=1, help="processes scoring clips (at most 2 on this machine)")
    parser.add_argument("--conditions", default=",".join(CONDITIONS),
                        help=f"comma-separated inputs to score (default: all of {','.join(CONDITIONS)}); "
                        "the targets are checked for the conditions scored")
    args = parser.parse_args(argv)
    conditions = tuple(c for c in args.conditions.split(",") if c)
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        parser.error(f"--conditions: unknown {unknown or 'none given'}; allowed: {', '.join(CONDITIONS)}")
    compare = {}
    for item in args.compare:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or name in SYSTEMS:
            parser.error(f"--compare takes NAME=PATH with NAME not one of {', '.join(SYSTEMS)}, got {item!r}")
        compare[name] = path
    if not 1 <= args.workers <= 8:
        parser.error(f"--workers must be in 1..8, got {args.workers}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = test_clips(args.data, args.max_clips, args.split)
    if args.plot_clips:
        plot_ids = args.plot_clips.split(",")
    else:
        by_source: dict[str, str] = {}
        for m in clips:
            by_source.setdefault(m["source"], m["id"])
        plot_ids = [i for s, i in sorted(by_source.items()) if s.startswith(REAL_PREFIX)][:4]
    keep = {i: {} for i in plot_ids}
    t0 = time.time()
    result = evaluate(args.model, args.data, args.max_clips, args.seconds, keep, conditions, compare, args.workers,
                      args.split)
    result["cost"] = measure_cost(args.model, args.cost_blocks)
    result["targets"] = targets(result["table"])
    result["own_targets"] = targets(result["own_table"])
    for sr in (44100, 48000):
        frac = result["cost"][f"p99_fraction_{sr}"]
        result["targets"][f"cost p99 <= 0.10 x block at {sr} Hz"] = {"value": float(f"{frac:.4g}"), "limit": 0.10,
                                                                      "met": bool(frac <= 0.10)}
    result["plots"] = plot(keep, out)
    result["clips"] = len(clips)
    result["command"] = " ".join(["python -m tools.evaluate", *(argv if argv is not None else sys.argv[1:])])
    result["elapsed_s"] = round(time.time() - t0, 1)
    (out / "eval.json").write_text(json.dumps(result, indent=1))
    systems = result["systems"]
    n_real = len({r["clip"] for r in result["rows"] if r["real"]})
    n_syn = len({r["clip"] for r in result["rows"] if not r["real"]})
    md = f"## Real music ({n_real} {args.split} clips)\n\n" + markdown_table(result["table"], systems)
    md += "\n\n## Real music per content type (LSD all / HF)\n\n" + kind_table(result["by_kind"], systems)
    shares = ", ".join(f"{k} {100 * v:.1f} %" for k, v in result["own_cut_share"].items())
    md += (f"\n\n## Real music, own cut (LSD where the reference has its band)\n\nBins above the reference's own "
           f"low-pass per frame left out (`reference_edges`); share of frames with a cut: {shares}\n\n"
           + markdown_table(result["own_table"], systems)
           + "\n\n### Own cut per content type (LSD all / HF)\n\n" + kind_table(result["own_by_kind"], systems))
    md += f"\n\n## Synthetic (smoke test: {n_syn} clips)\n\n" + markdown_table(result["synthetic"], systems)
    cost = result["cost"]
    md += (f"\n\nCost (block {BLOCK} stereo, 1 ORT thread, {cost['blocks']} blocks): median {cost['median_ms']:.3f} ms, "
           f"p99 {cost['p99_ms']:.3f} ms = {cost['p99_fraction_44100']:.3f} x the block at 44.1 kHz "
           f"({cost['block_ms_44100']:.2f} ms)\n\nModel blocks replaced by the engine's guard (NaN/Inf/runaway): "
           f"{ {k: v for k, v in result['guard_blocks'].items() if v} }\n\nTargets (real music):\n")
    md += "\n".join(f"- {k}: {v['value']} (limit {v['limit']}): {'met' if v['met'] else 'NOT met'}"
                    for k, v in result["targets"].items())
    md += "\n\nTargets (real music, own cut):\n" + "\n".join(
        f"- {k}: {v['value']} (limit {v['limit']}): {'met' if v['met'] else 'NOT met'}" for k, v in result["own_targets"].items())
    (out / "eval.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
