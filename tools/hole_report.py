"""Where in the high band a restorer wins or loses against the fold exciter.

For every real clip of a held-out split and each codec condition, the bins of the 16 kHz to
0.95 x Nyquist band that lie under the reference's own low-pass (the own-cut band of
``tools.evaluate``) are sorted by what the codec left in them: *hole* (the input more than
20 dB under the reference), *weak* (6 to 20 dB under) and *kept* (within 6 dB). Per content
type and class it prints the share of bins and, per system (resampler, fold exciter, each
model), the mean squared log10 power error (the LSD's summand) and the mean level against
the reference in dB.

    python -m tools.hole_report v3=models/rtupscale-restore-v3.onnx --split val
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from rtupscale import FACTOR
from rtupscale.config import parse_config
from rtupscale.dsp import metrics
from tools.baselines import folding_exciter
from tools.evaluate import SPLITS, read_input, reference_edges, test_clips, through_file_mode

CLASSES = (("hole", 20.0, np.inf), ("weak", 6.0, 20.0), ("kept", -np.inf, 6.0))
CONDITIONS = ("mp3_96", "mp3_128", "mp3_192", "mp3_v2", "aac_128")


def classify(clean: np.ndarray, x: np.ndarray, sr: int, edges: np.ndarray) -> dict[str, np.ndarray]:
    """Per class, a ``[frames, bins]`` mask of the own-cut high band of one channel."""
    f = np.fft.rfftfreq(metrics.stft_params(sr)[0], 1.0 / sr)[None, :]
    band = (f >= metrics.HF_EDGE_HZ) & (f < metrics.TOP_FRACTION * sr / 2) & (f < edges[:, None])
    gap = 20 * np.log10((metrics.magnitude(clean, sr) + 1e-9) / (metrics.magnitude(x, sr) + 1e-9))
    return {name: band & (gap > lo) & (gap <= hi) for name, lo, hi in CLASSES}


def report(models: dict[str, str], data: str, split: str, seconds: float, conditions: tuple[str, ...]) -> dict:
    """``{(condition, kind, system, class): [error sum, bins, level sum]}``."""
    from rtupscale.model.runner import ModelRunner

    config = parse_config({})
    runners = {name: ModelRunner(path, provider="cpu", threads=1) for name, path in models.items()}
    acc: dict[tuple, list] = {}
    for meta in test_clips(data, split=split, name_left=False):
        if not meta["source"].startswith("real_"):
            continue
        kind = meta["source"].removeprefix("real_")
        d = Path(data) / "clips" / meta["id"]
        clean, sr = sf.read(d / "clean.flac", dtype="float32", always_2d=True)
        clean = clean.T[:, :int(seconds * sr)]
        edges = reference_edges(clean, sr)
        with tempfile.TemporaryDirectory() as tmp:
            for cond in conditions:
                if not meta["variants"].get(cond, {}).get("ok"):
                    continue
                x = read_input(d / f"{cond}.flac", clean.shape[1])
                outs = {"resampler": through_file_mode(x, sr, None, config, Path(tmp)),
                        "fold": through_file_mode(folding_exciter(x, sr), sr, None, config, Path(tmp))}
                for name, runner in runners.items():
                    outs[name] = through_file_mode(x, sr, runner, config, Path(tmp))
                for ch in range(clean.shape[0]):
                    ref = metrics.magnitude(clean[ch], sr)
                    classes = classify(clean[ch], x[ch], sr, edges)
                    for system, y in outs.items():
                        est = metrics.magnitude(y[ch, ::FACTOR], sr)
                        err = np.log10(ref ** 2 / (est + metrics.EPS) ** 2 + metrics.EPS) ** 2
                        level = 20 * np.log10((est + 1e-9) / (ref + 1e-9))
                        for name, m in classes.items():
                            a = acc.setdefault((cond, kind, system, name), [0.0, 0, 0.0])
                            a[0] += float(err[m].sum())
                            a[1] += int(m.sum())
                            a[2] += float(level[m].sum())
    return acc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="*", metavar="NAME=PATH", help="models to score beside the baselines")
    parser.add_argument("--data", default="data/dataset")
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--seconds", type=float, default=4.0, help="the first seconds of each clip")
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated codec conditions")
    args = parser.parse_args(argv)
    try:
        models = dict(m.split("=", 1) for m in args.models)
    except ValueError:
        parser.error("models are given as NAME=PATH")
    conditions = tuple(args.conditions.split(","))
    acc = report(models, args.data, args.split, args.seconds, conditions)
    systems = ["resampler", "fold", *models]
    print("| input | content | class | share | " + " | ".join(f"{s} err (dB)" for s in systems) + " |")
    print("| --- " * (4 + len(systems)) + "|")
    for cond in conditions:
        for kind in sorted({k[1] for k in acc if k[0] == cond}):
            total = sum(acc.get((cond, kind, "fold", name), [0, 0])[1] for name, _, _ in CLASSES)
            for name, _, _ in CLASSES:
                n = acc[(cond, kind, "fold", name)][1]
                cells = [f"{acc[(cond, kind, s, name)][0] / max(n, 1):.2f} ({acc[(cond, kind, s, name)][2] / max(n, 1):+.1f})"
                         for s in systems]
                print(f"| {cond} | {kind} | {name} | {n / max(total, 1):.2f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
