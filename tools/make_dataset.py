"""Build the restoration dataset: clean clips, real-codec degraded copies, aligned, split.

Usage::

    nice -n 10 .venv/bin/python -m tools.make_dataset --out data/dataset [--workers 2]
    .venv/bin/python -m tools.make_dataset --out /shared/dataset --ray HEAD:6379   # on a Ray cluster

Layout under ``--out``::

    clips/<clip_id>/clean.flac        16-bit stereo, the target (and the lossless input)
    clips/<clip_id>/<variant>.flac    decoded codec output, aligned to clean, 24-bit
    clips/<clip_id>/meta.json         source, rate, split, seed, per-variant alignment
    manifest.json                     everything above plus the dataset's size

Each clip is a pure function of ``(seed, source, index)``; the builder skips clips whose
``meta.json`` exists, so an interrupted build resumes where it stopped. The split is by
clip (a clip's segments never straddle splits): within each source, index % 10 == 0 is
test, index % 20 == 5 is validation, the rest train. Test and validation clips get every
evaluation condition (``EVAL_VARIANTS``: MP3 96/128/192/320 and V2, AAC 128, Opus 96), so
that a model is tuned on validation with the same table it is judged by on test; train
clips get ``--variants-per-clip`` variants drawn from all codecs.

With ``--ray HOST:PORT`` every clip is a Ray task on that cluster (one CPU each): ``tools``
is shipped with the tasks; the nodes need rtupscale[ray] and this builder's codecs and
sound sources installed (``scripts/setup --test``), and ``--out`` and ``--catalog`` at the
same paths. Being a pure function of its seed, a clip is the same wherever it is built.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from tools import codecs, realdata, sources

EVAL_VARIANTS = ("mp3_96", "mp3_128", "mp3_192", "mp3_320", "mp3_v2", "aac_128", "opus_96")
DEFAULT_CLIPS = {"procedural": 40, "gm": 30, "gs": 0, "musescore": 0, "timgm6mb": 20, "speech": 20,
                 "real_mix": 380, "real_stems": 50, "real_drums": 80, "real_organ": 40, "real_voice": 60}
REAL_PREFIX = "real_"
_CATALOGS: dict[str, dict] = {}


def load_catalog(path: str | Path) -> dict:
    """The real recordings' catalogue (``tools.realdata``), read once per process."""
    key = str(path)
    if key not in _CATALOGS:
        if not Path(key).exists():
            raise FileNotFoundError(f"{key}: no catalogue of the real recordings (run python -m tools.realdata first)")
        _CATALOGS[key] = json.loads(Path(key).read_text())
    return _CATALOGS[key]


def real_splits(catalog: dict, kind: str) -> set[str]:
    """The splits that hold groups of ``kind``."""
    return {catalog["splits"][t["group"]] for t in catalog["tracks"] if t["kind"] == kind}


def split_of(index: int) -> str:
    """Split of the ``index``-th clip of a source."""
    if index % 10 == 0:
        return "test"
    if index % 20 == 5:
        return "val"
    return "train"


def clip_seed(seed: int, source: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}/{source}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def quantize_pcm16(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Float ``[channels, frames]`` -> int16 with TPDF dither (+-1 LSB).

    Dither keeps a noise floor everywhere, as in real 16-bit masters: no frame is digital
    silence, where the log-spectral distance is undefined.
    """
    tpdf = rng.random(x.shape) - rng.random(x.shape)
    return np.clip(np.round(x * 32767 + tpdf), -32768, 32767).astype(np.int16)


def build_clip(out_dir: str, seed: int, source: str, index: int, seconds: float,
               variants_per_clip: int, catalog_path: str | None = None) -> dict:
    """Render, degrade and align one clip; write its files and return its metadata.

    Idempotent: returns the stored metadata if the clip is already complete.
    """
    clip_id = f"{source}_{index:04d}"
    clip_dir = Path(out_dir) / "clips" / clip_id
    meta_path = clip_dir / "meta.json"
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    clip_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(clip_seed(seed, source, index))
    sr = int(rng.choice(sources.SAMPLE_RATES))
    split = split_of(index)
    info: dict = {"cutoff_hz": None}
    if source.startswith(REAL_PREFIX):
        # Held-out clips keep their source's own rate, so that their reference is real up to
        # 0.95 x Nyquist; training clips are drawn at both rates.
        clean, info = realdata.render_clip(load_catalog(catalog_path), source[len(REAL_PREFIX):], split, rng,
                                           None if split != "train" else sr, seconds)
        sr = info.pop("sample_rate")
    else:
        clean = sources.render_source(source, rng, sr, seconds)
    pcm16 = quantize_pcm16(clean, rng)
    sf.write(clip_dir / "clean.flac", pcm16.T, sr, subtype="PCM_16")

    if split in ("val", "test"):  # held-out clips: every condition the evaluation reports
        chosen = list(EVAL_VARIANTS)
    else:
        names = sorted(codecs.CODECS)
        weights = np.array([2.0 if n.startswith("mp3_") and n[4:].isdigit() else 1.0 for n in names])
        if sr != 48000:
            weights[names.index("opus_96")] *= 0.5  # opus resamples from 48 kHz internally
        chosen = list(rng.choice(names, variants_per_clip, replace=False, p=weights / weights.sum()))
    variants = {}
    for variant in chosen:
        aligned, report = codecs.degrade(pcm16, sr, variant)
        entry = {"shift": report.shift, "lag_first_half": round(report.lag_first_half, 4),
                 "lag_second_half": round(report.lag_second_half, 4), "ok": report.ok}
        if report.ok:
            tmp = clip_dir / f".{variant}.tmp.flac"
            sf.write(tmp, np.clip(aligned, -1, 1 - 2**-23).T, sr, subtype="PCM_24")
            os.replace(tmp, clip_dir / f"{variant}.flac")
        variants[variant] = entry
    meta = {"id": clip_id, "source": source, **info, "index": index, "sample_rate": sr, "split": split,
            "frames": int(pcm16.shape[1]), "seconds": pcm16.shape[1] / sr, "variants": variants}
    tmp = clip_dir / ".meta.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, meta_path)  # written last: its presence marks the clip complete
    return meta


def summarize(metas: list[dict]) -> dict:
    """The dataset's size: hours, clips per source and split, pairs per codec variant."""
    summary: dict = {"clips": len(metas), "hours_clean": sum(m["seconds"] for m in metas) / 3600}
    for split in ("train", "val", "test"):
        sub = [m for m in metas if m["split"] == split]
        summary[split] = {
            "clips": len(sub),
            "hours_clean": round(sum(m["seconds"] for m in sub) / 3600, 4),
            "clips_per_source": dict(sorted(Counter(m["source"] for m in sub).items())),
            "clips_per_rate": dict(sorted(Counter(str(m["sample_rate"]) for m in sub).items())),
            "pairs_per_variant": dict(sorted(Counter(
                v for m in sub for v, e in m["variants"].items() if e["ok"]).items())),
            "hours_degraded_pairs": round(sum(
                m["seconds"] for m in sub for e in m["variants"].values() if e["ok"]) / 3600, 4),
        }
    summary["rejected_pairs"] = [f"{m['id']}/{v}" for m in metas for v, e in m["variants"].items() if not e["ok"]]
    summary["hours_clean"] = round(summary["hours_clean"], 4)
    return summary


def _build_on_ray(address: str, jobs: list[tuple[str, int]], args) -> list[dict]:
    """``build_clip`` for every job as a Ray task (one CPU each) on the cluster at ``address``;
    the metadata in the order of ``jobs``."""
    from rtupscale.errors import UserError
    from rtupscale.ray_library import connect

    try:
        ray = connect(address, runtime_env={"py_modules": [str(Path(__file__).resolve().parent)]})
    except UserError as e:
        raise SystemExit(f"make_dataset: {e}") from None
    try:
        task = ray.remote(num_cpus=1)(build_clip)
        out, catalog = str(Path(args.out).resolve()), str(Path(args.catalog).resolve())
        refs = [task.remote(out, args.seed, s, i, args.seconds, args.variants_per_clip, catalog) for s, i in jobs]
        return [ray.get(ref) for ref in tqdm(refs, desc="clips on ray", unit="clip", file=sys.stderr)]
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="data/dataset")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length, s")
    parser.add_argument("--variants-per-clip", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="processes (at most 2 on this machine)")
    parser.add_argument("--ray", metavar="HOST:PORT", help="build the clips as tasks on this Ray cluster instead")
    parser.add_argument("--catalog", default="data/real/catalog.json",
                        help="the real recordings' catalogue (python -m tools.realdata)")
    for source, n in DEFAULT_CLIPS.items():
        parser.add_argument(f"--n-{source}", type=int, default=n, help=f"clips from {source}")
    args = parser.parse_args(argv)
    if not 1 <= args.workers <= 2:
        parser.error(f"--workers must be 1 or 2, got {args.workers}")
    if args.seconds < 1:
        parser.error(f"--seconds must be >= 1, got {args.seconds}")
    if not 1 <= args.variants_per_clip <= len(codecs.CODECS):
        parser.error(f"--variants-per-clip must be in 1..{len(codecs.CODECS)}")
    jobs = [(source, i) for source in DEFAULT_CLIPS for i in range(getattr(args, f"n_{source}"))]
    if any(source.startswith(REAL_PREFIX) for source, _ in jobs):
        catalog = load_catalog(args.catalog)
        have = {s: real_splits(catalog, s[len(REAL_PREFIX):]) for s in DEFAULT_CLIPS if s.startswith(REAL_PREFIX)}
        # A kind whose groups are in no validation (or test) group skips those indices.
        jobs = [(s, i) for s, i in jobs if not s.startswith(REAL_PREFIX) or split_of(i) in have[s]]
    # Interleave sources so a partial build already covers all of them.
    jobs.sort(key=lambda j: (j[1], j[0]))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.ray:
        metas = _build_on_ray(args.ray, jobs, args)
    else:
        metas = []
        with ProcessPoolExecutor(args.workers) as pool:
            futures = [pool.submit(build_clip, args.out, args.seed, s, i, args.seconds, args.variants_per_clip,
                                   args.catalog)
                       for s, i in jobs]
            for fut in tqdm(futures, desc="clips", unit="clip", file=sys.stderr):
                metas.append(fut.result())
    manifest = {"seed": args.seed, "clip_seconds": args.seconds, "summary": summarize(metas),
                "clips": sorted(metas, key=lambda m: m["id"])}
    (Path(args.out) / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps(manifest["summary"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
