"""Clean training audio: the only sources the restoration model may learn from.

- ``procedural``: additive harmonic instruments, noise percussion with real high-frequency
  content (hats, cymbals, snares), and clicks/transients, all synthesised here;
- ``gm``, ``gs``, ``musescore``, ``timgm6mb``: generated multi-instrument MIDI (mido)
  rendered by fluidsynth with the Debian General MIDI soundfonts;
- ``speech``: espeak-ng.

Audio from any other package is reserved for independent evaluation. Every function takes a
``numpy.random.Generator`` so a clip is a pure function of its seed.

Shapes: audio is ``[2, frames]`` float32 (stereo), full scale 1.0; rates in Hz.
"""

from __future__ import annotations

import os
import subprocess
import tempfile

import mido
import numpy as np
import scipy.signal
import soundfile as sf
import soxr

SOUNDFONTS = {
    "gm": "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "gs": "/usr/share/sounds/sf2/FluidR3_GS.sf2",
    "musescore": "/usr/share/sounds/sf2/MuseScore_General_Full.sf2",
    "timgm6mb": "/usr/share/sounds/sf2/TimGM6mb.sf2",
}
SOURCES = ("procedural", *SOUNDFONTS, "speech")
SAMPLE_RATES = (44100, 48000)


def _check_rate(sr: int) -> None:
    if sr not in SAMPLE_RATES:
        raise ValueError(f"sample rate {sr} Hz not supported; allowed: {SAMPLE_RATES}")


def normalize_peak(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale to a random peak between -6 and -1 dBFS (leaves codec headroom)."""
    peak = float(np.max(np.abs(x)))
    if peak <= 0:
        return x.astype(np.float32)
    target = 10 ** (rng.uniform(-6.0, -1.0) / 20)
    return (x * (target / peak)).astype(np.float32)


def _fit_length(x: np.ndarray, frames: int) -> np.ndarray:
    if x.shape[1] >= frames:
        return x[:, :frames]
    return np.pad(x, ((0, 0), (0, frames - x.shape[1])))


def _pan(mono: np.ndarray, pan: float) -> np.ndarray:
    """Constant-power pan, ``pan`` in [-1, 1]."""
    angle = (pan + 1) * np.pi / 4
    return np.stack([mono * np.cos(angle), mono * np.sin(angle)])


# --- procedural --------------------------------------------------------------------------


def _harmonic_note(rng, sr, f0, dur):
    n = int(dur * sr)
    t = np.arange(n) / sr
    n_harm = int(min(80, (0.48 * sr) // f0))
    if n_harm < 1:
        return np.zeros(n)
    k = np.arange(1, n_harm + 1)
    slope = rng.uniform(0.4, 1.6)
    amps = k ** -slope
    if rng.random() < 0.3:  # odd harmonics only (clarinet/square-like)
        amps[1::2] *= 0.05
    inharm = rng.uniform(0, 3e-4)
    freqs = f0 * k * np.sqrt(1 + inharm * k**2)
    keep = freqs < 0.48 * sr
    vib = 1 + rng.uniform(0, 0.004) * np.sin(2 * np.pi * rng.uniform(4, 7) * t)
    phase = 2 * np.pi * np.cumsum(vib) / sr
    # Higher harmonics decay faster, as in plucked and struck instruments.
    decay = rng.uniform(0.5, 6.0)
    sig = np.zeros(n)
    for a, f, kk in zip(amps[keep], freqs[keep], k[keep]):
        sig += a * np.sin(f * phase + rng.uniform(0, 2 * np.pi)) * np.exp(-decay * kk**0.5 * t / 4)
    attack = max(1, int(rng.uniform(0.001, 0.05) * sr))
    env = np.ones(n)
    env[:attack] = np.linspace(0, 1, attack)
    release = min(n, max(1, int(0.05 * sr)))
    env[-release:] *= np.linspace(1, 0, release)
    return sig * env


def _noise_hit(rng, sr, kind):
    if kind == "hat":
        dur, lo, decay = rng.uniform(0.03, 0.3), rng.uniform(5000, 9000), rng.uniform(15, 60)
    elif kind == "cymbal":
        dur, lo, decay = rng.uniform(0.8, 2.0), rng.uniform(3000, 6000), rng.uniform(2, 5)
    else:  # snare
        dur, lo, decay = rng.uniform(0.15, 0.4), rng.uniform(800, 2000), rng.uniform(10, 25)
    n = int(dur * sr)
    t = np.arange(n) / sr
    noise = rng.standard_normal(n)
    if kind != "snare":
        # Metallic partials (six detuned squares, as in analogue drum machines).
        for ratio in (1.0, 1.47, 1.62, 1.83, 2.16, 2.93):
            noise += 0.3 * np.sign(np.sin(2 * np.pi * rng.uniform(300, 600) * ratio * t))
    sos = scipy.signal.butter(4, lo, "highpass", fs=sr, output="sos")
    sig = scipy.signal.sosfilt(sos, noise) * np.exp(-decay * t)
    if kind == "snare":
        sig += 0.6 * np.sin(2 * np.pi * rng.uniform(160, 240) * t) * np.exp(-30 * t)
    return sig


def _click(rng, sr):
    n = int(0.01 * sr)
    sig = np.zeros(n)
    sig[0] = 1.0
    sig[1:4] = rng.uniform(-0.5, 0.5, 3)
    return sig * np.exp(-np.arange(n) / (sr * rng.uniform(1e-4, 2e-3)))


def render_procedural(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """Harmonic notes, noise percussion and clicks in a random rhythmic pattern.

    Returns ``[2, round(seconds * sr)]`` float32.
    """
    _check_rate(sr)
    frames = int(round(seconds * sr))
    out = np.zeros((2, frames + 3 * sr))
    beat = 60.0 / rng.uniform(70, 170)
    n_voices = rng.integers(1, 4)
    scale = np.array([0, 2, 4, 5, 7, 9, 11]) + rng.integers(0, 12)
    for _ in range(n_voices):
        pan = rng.uniform(-0.8, 0.8)
        base = rng.integers(36, 84)
        t = 0.0
        while t < seconds:
            dur = beat * rng.choice([0.25, 0.5, 1, 2])
            pitches = [base + scale[rng.integers(0, 7)] + 12 * rng.integers(-1, 2)
                       for _ in range(rng.integers(1, 4))]
            for p in pitches:
                f0 = 440.0 * 2 ** ((p - 69) / 12)
                note = _harmonic_note(rng, sr, f0, dur * rng.uniform(0.8, 1.5)) * rng.uniform(0.2, 1)
                i = int(t * sr)
                out[:, i:i + len(note)] += _pan(note, pan)[:, : out.shape[1] - i]
            t += dur
    for kind in ("hat", "snare", "cymbal"):
        if rng.random() < 0.75:
            step = beat * rng.choice([0.25, 0.5, 1, 2, 4])
            pan = rng.uniform(-0.7, 0.7)
            t = rng.uniform(0, step)
            while t < seconds:
                if rng.random() < 0.85:
                    hit = _noise_hit(rng, sr, kind) * rng.uniform(0.1, 0.8)
                    i = int(t * sr)
                    out[:, i:i + len(hit)] += _pan(hit, pan)[:, : out.shape[1] - i]
                t += step
    for _ in range(rng.integers(0, 12)):
        c = _click(rng, sr) * rng.uniform(0.1, 1)
        i = rng.integers(0, frames)
        out[:, i:i + len(c)] += _pan(c, rng.uniform(-1, 1))[:, : out.shape[1] - i]
    return normalize_peak(out[:, :frames], rng)


# --- MIDI through fluidsynth ----------------------------------------------------------------

_MELODIC_PROGRAMS = list(range(0, 112))  # GM pianos .. ethnic; excludes sound effects
_DRUM_NOTES = {"kick": 36, "snare": 38, "closed_hat": 42, "open_hat": 46, "crash": 49, "ride": 51,
               "tom": 45, "clap": 39, "tambourine": 54, "shaker": 70}


def generate_midi(rng: np.random.Generator, seconds: float) -> mido.MidiFile:
    """A random multi-instrument song: drums, bass, chords and a lead, in one key."""
    tpb = 480
    bpm = rng.uniform(70, 170)
    mid = mido.MidiFile(ticks_per_beat=tpb)
    beats = seconds * bpm / 60
    total_ticks = int(beats * tpb)
    scale = np.array([0, 2, 4, 5, 7, 9, 11]) + rng.integers(0, 12)

    def track_from(events, channel, program):
        track = mido.MidiTrack()
        if program is not None:
            track.append(mido.Message("program_change", channel=channel, program=int(program), time=0))
        track.append(mido.Message("control_change", channel=channel, control=10,
                                  value=int(rng.integers(20, 108)), time=0))
        track.append(mido.Message("control_change", channel=channel, control=7,
                                  value=int(rng.integers(70, 120)), time=0))
        msgs = []
        for start, length, note, vel in events:
            if start >= total_ticks:
                continue
            msgs.append((start, 1, mido.Message("note_on", channel=channel, note=int(note), velocity=int(vel))))
            msgs.append((min(start + length, total_ticks), 0,
                         mido.Message("note_off", channel=channel, note=int(note), velocity=0)))
        msgs.sort(key=lambda m: (m[0], m[1]))
        now = 0
        for tick, _, msg in msgs:
            track.append(msg.copy(time=int(tick - now)))
            now = tick
        return track

    tempo_track = mido.MidiTrack()
    tempo_track.append(mido.MetaMessage("set_tempo", tempo=int(60e6 / bpm), time=0))
    mid.tracks.append(tempo_track)

    # Drums (channel 10): a repeating pattern with variations, always with cymbals/hats.
    if rng.random() < 0.85:
        events = []
        step = tpb // 4
        pattern = {name: rng.random(16) < p for name, p in
                   [("kick", 0.25), ("snare", 0.15), ("closed_hat", 0.6), ("open_hat", 0.08),
                    ("ride", 0.2), ("clap", 0.05), ("tambourine", 0.15), ("shaker", 0.2), ("tom", 0.05)]}
        for i in range(total_ticks // step):
            for name, hits in pattern.items():
                if hits[i % 16] and rng.random() < 0.9:
                    events.append((i * step, step, _DRUM_NOTES[name], rng.integers(50, 127)))
            if i % 64 == 0 and rng.random() < 0.7:
                events.append((i * step, step, _DRUM_NOTES["crash"], rng.integers(70, 127)))
        mid.tracks.append(track_from(events, 9, None))

    channel = 0
    # Bass
    if rng.random() < 0.8:
        events, t = [], 0
        while t < total_ticks:
            length = int(tpb * rng.choice([0.5, 1, 2]))
            events.append((t, length, 36 + scale[rng.integers(0, 7)] % 12, rng.integers(60, 120)))
            t += length
        mid.tracks.append(track_from(events, channel, rng.integers(32, 40)))
        channel += 1
    # Chords and leads
    for _ in range(int(rng.integers(1, 4))):
        events, t = [], 0
        is_lead = rng.random() < 0.5
        base = int(rng.integers(55, 79)) if is_lead else int(rng.integers(48, 66))
        while t < total_ticks:
            length = int(tpb * rng.choice([0.25, 0.5, 1]) if is_lead else tpb * rng.choice([1, 2, 4]))
            n_notes = 1 if is_lead else int(rng.integers(2, 5))
            for _ in range(n_notes):
                note = base + scale[rng.integers(0, 7)] - scale[0] + 12 * rng.integers(-1, 2)
                if rng.random() < 0.9:
                    events.append((t, length, note, rng.integers(40, 120)))
            t += length
        mid.tracks.append(track_from(events, channel, rng.choice(_MELODIC_PROGRAMS)))
        channel += 1
    return mid


def render_midi(rng: np.random.Generator, sr: int, seconds: float, soundfont: str) -> np.ndarray:
    """Render a generated song with fluidsynth (its reverb and chorus on).

    Args:
        soundfont: a key of ``SOUNDFONTS``.

    Returns ``[2, round(seconds * sr)]`` float32.
    """
    _check_rate(sr)
    if soundfont not in SOUNDFONTS:
        raise ValueError(f"unknown soundfont {soundfont!r}; allowed: {sorted(SOUNDFONTS)}")
    frames = int(round(seconds * sr))
    mid = generate_midi(rng, seconds)
    with tempfile.TemporaryDirectory() as tmp:
        mid_path = os.path.join(tmp, "song.mid")
        wav_path = os.path.join(tmp, "song.wav")
        mid.save(mid_path)
        subprocess.run(
            ["fluidsynth", "-ni", "-q", "-g", "0.5", "-r", str(sr), "-O", "float", "-T", "wav",
             "-F", wav_path, SOUNDFONTS[soundfont], mid_path],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        audio, file_sr = sf.read(wav_path, dtype="float32", always_2d=True)
    if file_sr != sr:
        raise RuntimeError(f"fluidsynth wrote {file_sr} Hz, asked for {sr} Hz")
    return normalize_peak(_fit_length(audio.T, frames), rng)


# --- speech through espeak-ng ---------------------------------------------------------------

_VOICES = ["en", "en-us", "en-gb-scotland", "de", "fr", "es", "it", "nl", "pt", "sv", "pl", "ru"]
_VARIANTS = ["", "+m1", "+m3", "+f1", "+f2", "+f4", "+klatt", "+croak", "+whisper"]
_SYLLABLES = ["ka", "lo", "mi", "ne", "ta", "sor", "vel", "dan", "ri", "shu", "pe", "tom",
              "ex", "qua", "zin", "fli", "bra", "mon", "ste", "hul", "gar", "wi", "yo", "cha"]


def render_speech(rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """espeak-ng reading random pseudo-words, resampled from its 22.05 kHz to ``sr``.

    espeak-ng has no content above 11 kHz: these clips teach the model not to invent a
    high band where the reference has none.

    Returns ``[2, round(seconds * sr)]`` float32.
    """
    _check_rate(sr)
    frames = int(round(seconds * sr))
    words = [
        "".join(rng.choice(_SYLLABLES, rng.integers(1, 4))) for _ in range(int(seconds * 3.5))
    ]
    text = " ".join(w + ("." if rng.random() < 0.15 else "") for w in words)
    voice = rng.choice(_VOICES) + rng.choice(_VARIANTS)
    with tempfile.TemporaryDirectory() as tmp:
        wav_path = os.path.join(tmp, "speech.wav")
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(int(rng.integers(130, 200))),
             "-p", str(int(rng.integers(20, 80))), "-w", wav_path, text],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        mono, file_sr = sf.read(wav_path, dtype="float64")
    mono = soxr.resample(mono, file_sr, sr, quality="VHQ")
    delay = int(rng.integers(0, int(0.0008 * sr)))  # small inter-channel delay
    stereo = _pan(mono, rng.uniform(-0.5, 0.5))
    stereo[1] = np.roll(stereo[1], delay)
    return normalize_peak(_fit_length(stereo, frames), rng)


def render_source(source: str, rng: np.random.Generator, sr: int, seconds: float) -> np.ndarray:
    """Dispatch on ``source`` (one of ``SOURCES``). Returns ``[2, frames]`` float32."""
    if source == "procedural":
        return render_procedural(rng, sr, seconds)
    if source in SOUNDFONTS:
        return render_midi(rng, sr, seconds, source)
    if source == "speech":
        return render_speech(rng, sr, seconds)
    raise ValueError(f"unknown source {source!r}; allowed: {SOURCES}")
