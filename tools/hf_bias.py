"""Where a model's high band is too weak or too strong: per clip of a split, the mean and
median over HF bins (the LSD's STFT, 16 kHz to 0.95 x Nyquist, under the reference's own
cut) of log10(estimate power / reference power), and the HF LSD, for the model, the fold
exciter and the input alone (channel 0, first ``--seconds``). A mean far under the median
is a tail of bins left empty: the codec's holes.

    python -m tools.hf_bias MODEL.onnx --kind voice --conditions mp3_96,mp3_192
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from rtupscale.config import parse_config
from rtupscale.dsp import metrics
from rtupscale.model.runner import ModelRunner
from tools.baselines import folding_exciter
from tools.evaluate import FACTOR, read_input, reference_edges, through_file_mode


def bias(clean: np.ndarray, y: np.ndarray, sr: int, edges: np.ndarray) -> tuple[float, float, float]:
    """``(mean, median, HF LSD)`` of ``y`` against ``clean`` (mono) as in the module's notes."""
    f = np.fft.rfftfreq(metrics.stft_params(sr)[0], 1 / sr)
    mask = ((f >= metrics.HF_EDGE_HZ) & (f < metrics.TOP_FRACTION * sr / 2))[None, :] & (f[None, :] < edges[:, None])
    t, e = metrics.magnitude(clean, sr), metrics.magnitude(y, sr)
    diff = np.log10((e + metrics.EPS) ** 2) - np.log10(t**2 + metrics.EPS**2)
    return float(diff[mask].mean()), float(np.median(diff[mask])), metrics.lsd_from_magnitudes(t, e, mask)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--data", default="data/dataset")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--kind", default="voice", help="real_<kind> sources (voice, mix, organ, drums, stems)")
    p.add_argument("--conditions", default="mp3_96,mp3_192")
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args(argv)
    runner = ModelRunner(args.model, provider="cpu", threads=1)
    config = parse_config({})
    clips = [c for c in json.loads((Path(args.data) / "manifest.json").read_text())["clips"]
             if c["split"] == args.split and c["source"] == "real_" + args.kind]
    if not clips:
        p.error(f"no real_{args.kind} clips in the {args.split} split of {args.data}")
    for c in clips:
        d = Path(args.data) / "clips" / c["id"]
        clean, sr = sf.read(d / "clean.flac", dtype="float32", always_2d=True)
        clean = clean.T[:, :int(args.seconds * sr)]
        edges = reference_edges(clean, sr)
        for cond in args.conditions.split(","):
            x = read_input(d / f"{cond}.flac", clean.shape[1])
            with tempfile.TemporaryDirectory() as t:
                ys = {"model": through_file_mode(x, sr, runner, config, Path(t))[:, ::FACTOR],
                      "fold": through_file_mode(folding_exciter(x, sr), sr, None, config, Path(t))[:, ::FACTOR],
                      "input": x}
            parts = [f"{k}: mean {m:+.2f} median {med:+.2f} HF LSD {lsd:.3f}"
                     for k, (m, med, lsd) in ((k, bias(clean[0], y[0], sr, edges)) for k, y in ys.items())]
            print(f"{c['id']} {cond} | " + " | ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
