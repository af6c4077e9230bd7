"""Real recordings for training and evaluation: catalogue, cut-off measurement, clips.

The packages below hold real or produced recordings with content above 16 kHz, under free
licences (``models/README.md`` names them). Nothing else is read here: audio from any other
package is reserved for independent evaluation.

- ``mix``: finished music (Vorbis 96-256 kbps) from wesnoth-1.16-music, ufoai-music,
  nexuiz-music, megaglest-data and extremetuxracer-data;
- ``stems``: the band recordings of fretsonfire-songs-sectoid (``song.ogg`` + ``guitar.ogg``
  per song), summed at random levels;
- ``drums``: the two acoustic kits of avldrums.lv2-soundfont (multi-velocity samples),
  played from generated patterns by fluidsynth;
- ``organ``: the pipe samples of grandorgue-demo (WavPack), played as chords;
- ``voice``: spoken words from tuxpaint-stamps-default, klettres-data and ktuberling-data.

A lossy source is a target only below its own cut-off: :func:`measure_cutoff` finds the
codec's low-pass as a cliff in the long-term spectrum, every clip records the cut-off of
what it was cut from, and training scores a clip's high band only below it.

The split is by source, never by excerpt: every track (a song's stems together, a drum kit,
an organ rank, a speaker's language folder) belongs to one split (:func:`assign_splits`).
Validation and test take only full-band groups (cut-off >= ``FULL_BAND_HZ``), and only
clips that keep their top in nearly every frame (:func:`frame_cutoffs`: a Vorbis encoder
lowers its low-pass in quiet frames, which the long-term spectrum does not show), so that
their high band is a real reference.

Shapes: audio is ``[2, frames]`` float32, full scale 1.0; rates in Hz.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import mido
import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATES = (44100, 48000)
FULL_BAND_HZ = 19500.0  # a group is a real high-band reference at or above this cut-off
CLIFF_DB = 15.0  # a codec's low-pass shows as a drop of at least this much
CUTOFF_MIN_HZ = 10000.0
# A held-out clip keeps its top up to FRAME_FULL_HZ in this share of its active frames.
FRAME_FULL_HZ = 18000.0
FRAME_FULL_SHARE = 0.9
ACTIVE_DB = 50.0  # frames within this much of the loudest frame's power count

_WESNOTH = "/usr/share/games/wesnoth/1.16/data/core/music"
_UFOAI = "/usr/share/games/ufoai/base/0music.pk3"
_NEXUIZ = "/usr/share/games/nexuiz/data/music.pk3"
_MEGAGLEST = "/usr/share/games/megaglest"
_ETR = "/usr/share/games/etr/music"
_FOF = "/usr/share/games/fretsonfire/data/songs/sectoid"
_DRUM_KITS = {"black_pearl": "/usr/share/sounds/sf2/Black_Pearl_4_LV2.sf2",
              "red_zeppelin": "/usr/share/sounds/sf2/Red_Zeppelin_4_LV2.sf2"}
_ORGAN = "/usr/share/GrandOrgue/packages"
_VOICE_DIRS = {"tuxpaint": "/usr/share/tuxpaint/stamps", "klettres": "/usr/share/klettres",
               "ktuberling": "/usr/share/ktuberling/sounds"}
PACKAGES = {
    "wesnoth": "wesnoth-1.16-music", "ufoai": "ufoai-music", "nexuiz": "nexuiz-music",
    "megaglest": "megaglest-data", "etr": "extremetuxracer-data", "fretsonfire": "fretsonfire-songs-sectoid",
    "avldrums": "avldrums.lv2-soundfont", "grandorgue": "grandorgue-demo",
    "tuxpaint": "tuxpaint-stamps-default", "klettres": "klettres-data", "ktuberling": "ktuberling-data",
}
KINDS = ("mix", "stems", "drums", "organ", "voice")
LOSSLESS_KINDS = ("drums", "organ")
"""The kinds whose sources hold no lossy codec (the others are Vorbis decodes, with a
codec's low-pass and holes of their own): only these are lossless input."""


def lossless_source(source: str) -> bool:
    """Whether a ``tools.make_dataset`` clip's ``source`` (``real_<kind>`` or a synthetic
    source) holds no lossy codec: synthetic sources and ``LOSSLESS_KINDS``."""
    return not source.startswith("real_") or source[len("real_"):] in LOSSLESS_KINDS


@dataclass(frozen=True)
class Track:
    """One decodable file. ``group`` is the unit of the split (all its tracks go together)."""

    kind: str  # one of KINDS
    package: str  # a key of PACKAGES
    group: str
    path: str  # a file, or a zip archive when ``member`` is set
    member: str | None = None

    @property
    def key(self) -> str:
        return f"{self.path}:{self.member}" if self.member else self.path


def list_tracks(voice_per_group: int = 60) -> list[Track]:
    """Every track of the installed packages (a missing package contributes nothing)."""
    tracks: list[Track] = []

    def files(root: str, pattern: str = "*.ogg") -> list[Path]:
        return sorted(Path(root).rglob(pattern)) if Path(root).is_dir() else []

    for p in files(_WESNOTH):
        tracks.append(Track("mix", "wesnoth", f"wesnoth/{p.stem}", str(p)))
    for package, archive in (("ufoai", _UFOAI), ("nexuiz", _NEXUIZ)):
        if Path(archive).exists():
            with zipfile.ZipFile(archive) as z:
                for m in sorted(n for n in z.namelist() if n.endswith(".ogg")):
                    tracks.append(Track("mix", package, f"{package}/{Path(m).stem}", archive, m))
    for p in files(_MEGAGLEST):
        if p.parent.name == "music":
            tracks.append(Track("mix", "megaglest", f"megaglest/{p.stem}", str(p)))
    for p in files(_ETR):
        tracks.append(Track("mix", "etr", f"etr/{p.stem}", str(p)))
    for p in files(_FOF):
        tracks.append(Track("stems", "fretsonfire", f"fretsonfire/{p.parent.name}", str(p)))
    for kit, path in _DRUM_KITS.items():
        if Path(path).exists():
            tracks.append(Track("drums", "avldrums", f"avldrums/{kit}", path))
    for archive in sorted(Path(_ORGAN).glob("*.orgue")) if Path(_ORGAN).is_dir() else []:
        with zipfile.ZipFile(archive) as z:
            for m in sorted(n for n in z.namelist() if n.endswith(".wav") and n.split("/")[0][-1].isdigit()):
                tracks.append(Track("organ", "grandorgue", f"grandorgue/{m.split('/')[0]}", str(archive), m))
    for package, root in _VOICE_DIRS.items():
        by_group: dict[str, list[Path]] = {}
        for p in files(root):
            if package == "tuxpaint":
                if "_desc_" not in p.name:
                    continue
                group = p.stem.rsplit("_", 1)[1]  # the language
            else:
                group = p.relative_to(root).parts[0]
            by_group.setdefault(f"{package}/{group}", []).append(p)
        for group, paths in sorted(by_group.items()):
            pick = sorted(paths, key=lambda q: hashlib.sha256(str(q).encode()).hexdigest())[:voice_per_group]
            tracks.extend(Track("voice", package, group, str(p)) for p in sorted(pick))
    return tracks


def _read_bytes(track: Track) -> bytes:
    if track.member:
        with zipfile.ZipFile(track.path) as z:
            return z.read(track.member)
    return Path(track.path).read_bytes()


def decode(track: Track, sr: int | None = None, start: float = 0.0,
           seconds: float | None = None) -> tuple[np.ndarray, int]:
    """The track (or ``seconds`` of it from ``start``) as ``([2, n] float32, rate)``;
    resampled to ``sr`` when given (soxr VHQ)."""
    if track.kind == "drums":
        raise ValueError("a drum kit is rendered, not decoded (render_drums)")
    window = (["-ss", f"{start:.3f}"] if start > 0 else []) + (["-t", f"{seconds:.3f}"] if seconds else [])
    proc = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", *window, "-i", "pipe:0", "-f", "wav",
                           "-c:a", "pcm_f32le", "pipe:1"], input=_read_bytes(track),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg could not decode {track.key}: {proc.stderr.decode()[-300:]}")
    audio, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    audio = audio[:, :2] if audio.shape[1] >= 2 else np.repeat(audio, 2, axis=1)
    if sr is not None and sr != rate:
        audio = soxr.resample(audio, rate, sr, quality="VHQ").astype(np.float32)
        rate = sr
    return np.ascontiguousarray(audio.T), rate


def long_term_spectrum(x: np.ndarray, sr: int, n_fft: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Mean power per bin over the louder half of the frames, in dB. Returns ``(freqs, db)``."""
    mono = np.asarray(x, np.float64).reshape(-1, x.shape[-1]).mean(axis=0)
    hop = n_fft // 2
    n = (len(mono) - n_fft) // hop + 1
    if n < 1:
        raise ValueError(f"need at least {n_fft} samples to measure a spectrum, got {len(mono)}")
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    p = np.abs(np.fft.rfft(mono[idx] * np.hanning(n_fft), axis=1)) ** 2
    loud = p.sum(axis=1) >= np.median(p.sum(axis=1))
    return np.fft.rfftfreq(n_fft, 1 / sr), 10 * np.log10(p[loud].mean(axis=0) + 1e-20)


def measure_cutoff(x: np.ndarray, sr: int) -> float:
    """The codec's low-pass in Hz: the frequency above ``CUTOFF_MIN_HZ`` where the long-term
    spectrum drops by the most, if that drop is at least ``CLIFF_DB`` (the mean level over
    600 Hz below against 600 Hz above) and nothing above comes back within 10 dB of the
    level below; else ``sr / 2`` (no cliff: full band)."""
    freqs, db = long_term_spectrum(x, sr)
    df = freqs[1]
    w = max(2, int(round(600 / df)))
    best_drop, best_k = 0.0, None
    for k in range(int(CUTOFF_MIN_HZ / df), len(db) - w):
        below, above = db[k - w:k].mean(), db[k:k + w].mean()
        drop = below - above
        if drop > best_drop and db[k:].max() < below - 10:
            best_drop, best_k = drop, k
    if best_k is None or best_drop < CLIFF_DB:
        return sr / 2
    # The cliff's edge: the first bin at least half the drop below the level under it.
    below = db[best_k - w:best_k].mean()
    k = best_k - w
    while k < len(db) - 1 and db[k] > below - best_drop / 2:
        k += 1
    return float(freqs[k])


def frame_cutoffs(x: np.ndarray, sr: int, n_fft: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per frame (``n_fft`` samples, half overlap, 4-term Blackman-Harris window), the
    codec's low-pass by the test of :func:`measure_cutoff` on that frame's own spectrum (a
    drop of at least ``CLIFF_DB`` between the 600 Hz under a bin and the 600 Hz over it, with
    nothing above coming back within 10 dB of the level under; ``sr / 2`` where there is
    none), and which frames are active (within ``ACTIVE_DB`` of the loudest).
    Returns ``(cutoff_hz [frames], active [frames] bool)``."""
    mono = np.asarray(x, np.float64).reshape(-1, x.shape[-1]).mean(axis=0)
    hop = n_fft // 2
    n = (len(mono) - n_fft) // hop + 1
    if n < 1:
        raise ValueError(f"need at least {n_fft} samples to measure a spectrum, got {len(mono)}")
    t = 2 * np.pi * np.arange(n_fft) / n_fft
    window = 0.35875 - 0.48829 * np.cos(t) + 0.14128 * np.cos(2 * t) - 0.01168 * np.cos(3 * t)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n)[:, None]
    p = np.abs(np.fft.rfft(mono[idx] * window, axis=1)) ** 2
    total = p.sum(axis=1)
    active = total >= total.max() * 10 ** (-ACTIVE_DB / 10)
    db = 10 * np.log10(p + 1e-20)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    w = max(2, int(round(600 / freqs[1])))
    csum = np.concatenate([np.zeros((n, 1)), np.cumsum(db, axis=1)], axis=1)
    ks = np.arange(max(w, int(CUTOFF_MIN_HZ / freqs[1])), db.shape[1] - w)
    below = (csum[:, ks] - csum[:, ks - w]) / w
    above = (csum[:, ks + w] - csum[:, ks]) / w
    top = np.maximum.accumulate(db[:, ::-1], axis=1)[:, ::-1][:, ks]  # the loudest bin from k up
    drop = np.where(top < below - 10, below - above, 0.0)
    best = drop.argmax(axis=1)
    cliff = drop[np.arange(n), best] >= CLIFF_DB
    return np.where(cliff, freqs[ks[best]], sr / 2), active


def full_band_share(x: np.ndarray, sr: int, hz: float = FRAME_FULL_HZ) -> float:
    """The share of ``x``'s active frames whose own low-pass (:func:`frame_cutoffs`) lies at or
    above ``hz``."""
    cutoffs, active = frame_cutoffs(x, sr)
    return float((cutoffs[active] >= hz).mean()) if active.any() else 1.0


def _catalog_entry(track: Track) -> dict:
    if track.kind == "drums":
        return {**asdict(track), "seconds": None, "rate": None, "cutoff_hz": None}
    audio, rate = decode(track)
    entry = {**asdict(track), "seconds": audio.shape[1] / rate, "rate": rate}
    entry["cutoff_hz"] = measure_cutoff(audio, rate) if audio.shape[1] >= 8192 else rate / 2
    entry["peak"] = float(np.max(np.abs(audio))) if audio.size else 0.0
    return entry


def build_catalog(out: str | Path, workers: int = 2) -> dict:
    """Decode every track once: duration, rate and cut-off. Writes and returns the catalogue."""
    tracks = list_tracks()
    with ProcessPoolExecutor(workers) as pool:
        entries = list(pool.map(_catalog_entry, tracks, chunksize=4))
    catalog = {"tracks": entries, "splits": assign_splits(entries)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(catalog, indent=1))
    return catalog


def group_cutoffs(entries: list[dict]) -> dict[str, float]:
    """Each group's cut-off: the median of its tracks' (drum kits are lossless: None -> inf)."""
    by: dict[str, list[float]] = {}
    for e in entries:
        by.setdefault(e["group"], []).append(np.inf if e["cutoff_hz"] is None else e["cutoff_hz"])
    return {g: float(np.median(v)) for g, v in by.items()}


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def assign_splits(entries: list[dict], test_share: float = 0.2, val_share: float = 0.1) -> dict[str, str]:
    """Group -> split. Per package, full-band groups in a fixed hash order give the first
    ``test_share`` (at least one where the package has three or more) to test and the next
    ``val_share`` (at least one where it has five or more) to validation; the rest, and
    every group below ``FULL_BAND_HZ``, train. The drum kits: Red Zeppelin is held out
    (test), Black Pearl trains."""
    cut = group_cutoffs(entries)
    by_package: dict[str, list[str]] = {}
    for e in entries:
        if e["group"] not in by_package.setdefault(e["package"], []):
            by_package[e["package"]].append(e["group"])
    splits: dict[str, str] = {}
    for package, groups in by_package.items():
        if package == "avldrums":
            for g in groups:
                splits[g] = "test" if g.endswith("red_zeppelin") else "train"
            continue
        full = sorted((g for g in groups if cut[g] >= FULL_BAND_HZ), key=_hash)
        n_test = max(1 if len(full) >= 3 else 0, int(round(test_share * len(full))))
        n_val = max(1 if len(full) >= 5 else 0, int(round(val_share * len(full))))
        for i, g in enumerate(full):
            splits[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        for g in groups:
            splits.setdefault(g, "train")
    return dict(sorted(splits.items()))


# --- clips ------------------------------------------------------------------------------------

def _active_start(x: np.ndarray, frames: int, rng: np.random.Generator, tries: int = 20) -> int:
    """A random start whose excerpt is not mostly silence (the loudest of ``tries`` draws'
    quietest quarter)."""
    n = x.shape[1]
    if n <= frames:
        return 0
    best, best_level = 0, -np.inf
    for _ in range(tries):
        s = int(rng.integers(0, n - frames))
        quarters = np.asarray(x[:, s:s + frames]).reshape(2, 4, -1)
        level = float(np.min(np.sqrt(np.mean(quarters**2, axis=(0, 2)))))
        if level > best_level:
            best, best_level = s, level
        if level > 1e-2:
            break
    return best


def _fit(x: np.ndarray, frames: int) -> np.ndarray:
    return x[:, :frames] if x.shape[1] >= frames else np.pad(x, ((0, 0), (0, frames - x.shape[1])))


def _excerpt(track: dict, sr: int, frames: int, rng: np.random.Generator) -> np.ndarray:
    """An active excerpt from a random window of three times its length."""
    span = 3 * frames / sr
    start = float(rng.uniform(0, max(0.0, track["seconds"] - span)))
    audio, _ = decode(_track(track), sr, start, span)
    s = _active_start(audio, frames, rng)
    return _fit(audio[:, s:s + frames], frames)


def _track(entry: dict) -> Track:
    return Track(**{k: entry[k] for k in ("kind", "package", "group", "path", "member")})


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    angle = (pan + 1) * np.pi / 4
    return np.stack([mono * np.cos(angle), mono * np.sin(angle)])


_KIT_NOTES = {"kick": 36, "snare": 38, "rim": 37, "closed_hat": 42, "pedal_hat": 44, "open_hat": 46,
              "crash": 49, "ride": 51, "ride_bell": 53, "tom_hi": 48, "tom_mid": 45, "tom_low": 41}


def render_drums(kit_path: str, rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """A generated groove on an acoustic kit: kick/snare/hats/ride/crash/toms at random
    velocities (the kits are multi-velocity), through fluidsynth. ``[2, frames]``."""
    tpb, bpm = 480, float(rng.uniform(70, 180))
    total = int(seconds * bpm / 60 * tpb)
    step = tpb // 4
    probs = {"kick": 0.3, "snare": 0.2, "closed_hat": 0.55, "pedal_hat": 0.05, "open_hat": 0.1, "ride": 0.25,
             "ride_bell": 0.04, "rim": 0.04, "tom_hi": 0.04, "tom_mid": 0.04, "tom_low": 0.04}
    pattern = {n: rng.random(16) < p * rng.uniform(0.3, 1.7) for n, p in probs.items()}
    events = []
    for i in range(total // step):
        for name, hits in pattern.items():
            if hits[i % 16] and rng.random() < 0.9:
                events.append((i * step, _KIT_NOTES[name], int(rng.integers(25, 128))))
        if (i % 32 == 0 and rng.random() < 0.6) or rng.random() < 0.01:
            events.append((i * step, _KIT_NOTES["crash"], int(rng.integers(60, 128))))
    mid = mido.MidiFile(ticks_per_beat=tpb)
    track = mido.MidiTrack()
    track.append(mido.MetaMessage("set_tempo", tempo=int(60e6 / bpm), time=0))
    track.append(mido.Message("program_change", channel=0, program=0, time=0))
    msgs = sorted([(t, 1, n, v) for t, n, v in events] + [(t + step, 0, n, 0) for t, n, v in events])
    now = 0
    for t, on, note, vel in msgs:
        kind = "note_on" if on else "note_off"
        track.append(mido.Message(kind, channel=0, note=note, velocity=vel, time=t - now))
        now = t
    mid.tracks.append(track)
    frames = int(round(seconds * sr))
    with tempfile.TemporaryDirectory() as tmp:
        mid_path, wav_path = os.path.join(tmp, "d.mid"), os.path.join(tmp, "d.wav")
        mid.save(mid_path)
        subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.6", "-R", "0", "-C", "0", "-r", str(sr), "-O", "float",
                        "-T", "wav", "-F", wav_path, kit_path, mid_path],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        audio, file_sr = sf.read(wav_path, dtype="float32", always_2d=True)
    if file_sr != sr:
        raise RuntimeError(f"fluidsynth wrote {file_sr} Hz, asked for {sr} Hz")
    return _fit(audio.T, frames)


def render_organ(tracks: list[dict], rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """Chords of pipe samples from one rank: 2-5 pipes at a time, new chords every 0.5-2 s."""
    frames = int(round(seconds * sr))
    out = np.zeros((2, frames), np.float32)
    t = 0
    while t < frames:
        for _ in range(int(rng.integers(2, 6))):
            pipe = tracks[int(rng.integers(len(tracks)))]
            audio, _ = decode(_track(pipe), sr)
            seg = audio[:, : frames - t] * rng.uniform(0.3, 1.0)
            out[:, t:t + seg.shape[1]] += seg
        t += int(rng.uniform(0.5, 2.0) * sr)
    return out


def render_voice(tracks: list[dict], rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """Words of one group one after the other, with short pauses, panned. ``[2, frames]``."""
    frames = int(round(seconds * sr))
    out = np.zeros((2, frames), np.float32)
    t = int(rng.uniform(0, 0.3) * sr)
    while t < frames:
        word = tracks[int(rng.integers(len(tracks)))]
        audio, _ = decode(_track(word), sr)
        mono = audio.mean(axis=0)[: frames - t]
        out[:, t:t + len(mono)] += _pan(mono, rng.uniform(-0.4, 0.4))
        t += len(mono) + int(rng.uniform(0.05, 0.4) * sr)
    return out


def normalize_peak(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale to a random peak between -6 and -1 dBFS (leaves codec headroom)."""
    peak = float(np.max(np.abs(x)))
    if peak <= 0:
        return x.astype(np.float32)
    return (x * (10 ** (rng.uniform(-6.0, -1.0) / 20) / peak)).astype(np.float32)


HELD_OUT_TRIES = 16


def render_clip(catalog: dict, kind: str, split: str, rng: np.random.Generator, sr: int | None,
                seconds: float) -> tuple[np.ndarray, dict]:
    """One clip of ``kind`` from ``split`` (see :func:`_render_clip`), with the cut-off of
    the clip itself measured: ``cutoff_hz`` is the lower of its parts' and its own (an
    excerpt of a full-band track can still be cut lower, where its encoder lowered the
    low-pass). A held-out clip is drawn again, up to ``HELD_OUT_TRIES`` times, until it is
    full band (>= ``FULL_BAND_HZ``) and keeps its top to ``FRAME_FULL_HZ`` in
    ``FRAME_FULL_SHARE`` of its frames, so that its high band is a real reference; its
    ``full_band_share`` is recorded (None for a training clip)."""
    for _ in range(HELD_OUT_TRIES if split != "train" else 1):
        x, info = _render_clip(catalog, kind, split, rng, sr, seconds)
        own = measure_cutoff(x, info["sample_rate"])
        parts = np.inf if info["cutoff_hz"] is None else info["cutoff_hz"]
        cutoff = min(parts, own) if own < info["sample_rate"] / 2 else parts
        info["cutoff_hz"] = None if not np.isfinite(cutoff) else float(cutoff)
        if split == "train":
            info["full_band_share"] = None
            break
        info["full_band_share"] = full_band_share(x, info["sample_rate"])
        if cutoff >= FULL_BAND_HZ and info["full_band_share"] >= FRAME_FULL_SHARE:
            break
    return x, info


def _render_clip(catalog: dict, kind: str, split: str, rng: np.random.Generator, sr: int | None,
                 seconds: float) -> tuple[np.ndarray, dict]:
    """One clip of ``kind`` from the groups of ``split``, at ``sr`` (None: the source's own
    rate where it is one of ``SAMPLE_RATES``, else 44.1 kHz; rendered kits at random).

    Returns ``([2, frames] float32, info)``; ``info`` names the groups used, the clip's
    ``sample_rate`` and its ``cutoff_hz`` (the lowest cut-off among its parts; None when
    lossless).
    Train ``mix`` clips get a drum track from a training kit added, at a random level, in a
    third of the cases (mix and remix).
    """
    splits = catalog["splits"]
    pool = [t for t in catalog["tracks"] if t["kind"] == kind and splits[t["group"]] == split]
    if not pool:
        raise ValueError(f"no {kind} tracks in the {split} split")
    groups = sorted({t["group"] for t in pool})
    if kind == "mix":  # longer tracks more often
        secs = np.array([sum(t["seconds"] for t in pool if t["group"] == g) for g in groups])
        group = groups[int(rng.choice(len(groups), p=secs / secs.sum()))]
    else:
        group = groups[int(rng.integers(len(groups)))]
    members = [t for t in pool if t["group"] == group]
    if kind in ("organ", "voice"):  # pieces of a group: the full-band ones only
        full = [t for t in members if t["cutoff_hz"] >= FULL_BAND_HZ]
        members = full or members
    used = [group]
    if sr is None:
        rate = members[0]["rate"]
        sr = rate if rate in SAMPLE_RATES else int(rng.choice(SAMPLE_RATES)) if kind == "drums" else 44100
    frames = int(round(seconds * sr))
    if kind == "mix":
        x = _excerpt(members[0], sr, frames, rng)
    elif kind == "stems":
        audio = [decode(_track(t), sr)[0] for t in members]
        n = min(a.shape[1] for a in audio)
        s = _active_start(sum(a[:, :n] for a in audio), frames, rng)
        x = sum(_fit(a[:, s:s + frames], frames) * rng.uniform(0.3, 1.0) for a in audio)
    elif kind == "drums":
        x = render_drums(members[0]["path"], rng, sr, seconds)
    elif kind == "organ":
        x = render_organ(members, rng, sr, seconds)
    elif kind == "voice":
        x = render_voice(members, rng, sr, seconds)
    else:
        raise ValueError(f"unknown kind {kind!r}; allowed: {KINDS}")
    # A source recorded at 44.1 kHz and played at 48 kHz has nothing above 22.05 kHz either.
    cutoff = min((np.inf if t["cutoff_hz"] is None else min(t["cutoff_hz"], t["rate"] / 2)) for t in members)
    if kind == "mix" and split == "train" and rng.random() < 1 / 3:
        kits = [t for t in catalog["tracks"] if t["kind"] == "drums" and splits[t["group"]] == "train"]
        if kits:
            kit = kits[int(rng.integers(len(kits)))]
            drums = render_drums(kit["path"], rng, sr, seconds)
            level = np.sqrt(np.mean(x**2)) / max(np.sqrt(np.mean(drums**2)), 1e-9)
            x = x + drums * level * 10 ** (rng.uniform(-12, 0) / 20)
            used.append(kit["group"])
    return normalize_peak(x, rng), {"groups": used, "sample_rate": sr,
                                    "cutoff_hz": cutoff if np.isfinite(cutoff) else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Catalogue the real recordings: duration, rate, cut-off, split.")
    parser.add_argument("--out", default="data/real/catalog.json")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    catalog = build_catalog(args.out, args.workers)
    rows: dict[tuple, list] = {}
    for t in catalog["tracks"]:
        split = catalog["splits"][t["group"]]
        r = rows.setdefault((t["package"], split), [0, 0.0, 0])
        r[0] += 1
        r[1] += (t["seconds"] or 0) / 60
        r[2] += int((t["cutoff_hz"] or np.inf) >= FULL_BAND_HZ)
    print("| package | split | tracks | minutes | full band |\n| --- | --- | --- | --- | --- |")
    for (package, split), (n, minutes, full) in sorted(rows.items()):
        print(f"| {PACKAGES[package]} | {split} | {n} | {minutes:.1f} | {full} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
