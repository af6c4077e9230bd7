"""Degrade clean audio with real codecs, decode with real decoders, and align the pairs.

MP3 goes through the ``lame`` command line (encoder and decoder): its decoder reads the
LAME tag and removes encoder delay and padding (gapless), and ``--resample`` pins the
output rate, because LAME otherwise lowers the rate at low bitrates (the known lameenc
trap). AAC (ffmpeg's native encoder, in MP4 so the edit list carries the priming) and Opus
(libopus, 48 kHz internally, decoded back to the clip rate by ffmpeg) go through ffmpeg.

Every decoded clip is aligned to the clean one by cross-correlation and then measured again:
``measure_lag`` gives a sub-sample lag, in each half of the clip separately so that a
drifting phase (a rate error) shows as two different lags. A variant is kept only if both
halves are within ``MAX_RESIDUAL_LAG`` samples of zero after alignment.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
import soundfile as sf

MP3_CBR_KBPS = (96, 128, 160, 192, 256, 320)
CODECS: dict[str, tuple[str, str]] = {
    **{f"mp3_{k}": ("mp3", f"-b {k} --cbr") for k in MP3_CBR_KBPS},
    "mp3_v2": ("mp3", "-V 2"),  # VBR, about 190 kbps
    "mp3_v5": ("mp3", "-V 5"),  # VBR, about 130 kbps
    "aac_128": ("aac", "128k"),
    "opus_96": ("opus", "96k"),
}
"""Variant name -> (codec family, its bitrate setting)."""

MAX_SEARCH_LAG = 4096  # samples
MAX_RESIDUAL_LAG = 0.1  # samples, after alignment, in each half of the clip


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")


def encode_decode(clean_pcm16: np.ndarray, sr: int, variant: str) -> np.ndarray:
    """Encode and decode a clip with a real codec.

    Args:
        clean_pcm16: ``[2, frames]`` int16, the clean clip exactly as the target stores it.
        sr: its rate in Hz (44100 or 48000).
        variant: a key of ``CODECS``.

    Returns:
        ``[2, n]`` float32 decoded audio at ``sr``, not yet aligned (n may differ from frames).
    """
    if variant not in CODECS:
        raise ValueError(f"unknown codec variant {variant!r}; allowed: {sorted(CODECS)}")
    if clean_pcm16.dtype != np.int16 or clean_pcm16.ndim != 2:
        raise ValueError(f"clean_pcm16 must be [channels, frames] int16, got {clean_pcm16.dtype} {clean_pcm16.shape}")
    family, setting = CODECS[variant]
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "clean.wav")
        dec = os.path.join(tmp, "decoded.wav")
        sf.write(src, clean_pcm16.T, sr, subtype="PCM_16")
        if family == "mp3":
            enc = os.path.join(tmp, "coded.mp3")
            _run(["lame", "--quiet", "--noreplaygain", "--resample", f"{sr / 1000:g}",
                  *setting.split(), src, enc])
            _run(["lame", "--quiet", "--decode", enc, dec])
        else:
            enc = os.path.join(tmp, "coded.m4a" if family == "aac" else "coded.opus")
            codec = "aac" if family == "aac" else "libopus"
            _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", src,
                  "-c:a", codec, "-b:a", setting, enc])
            _run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", enc,
                  "-ar", str(sr), "-c:a", "pcm_f32le", dec])
        audio, dec_sr = sf.read(dec, dtype="float32", always_2d=True)
    if dec_sr != sr:
        raise RuntimeError(f"{variant}: decoder gave {dec_sr} Hz, expected {sr} Hz")
    return audio.T


def measure_lag(reference: np.ndarray, degraded: np.ndarray, max_lag: int = MAX_SEARCH_LAG) -> float:
    """Lag of ``degraded`` behind ``reference`` in samples, with sub-sample precision.

    Cross-correlation of the channel sums (FFT), peak refined by a parabola through the
    peak and its two neighbours. Positive: ``degraded`` is late.

    Shape: ``[channels, n]`` each (lengths may differ); returns NaN for silence.
    """
    a = np.asarray(reference, np.float64).sum(axis=0)
    b = np.asarray(degraded, np.float64).sum(axis=0)
    n = len(a) + len(b)
    nfft = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(b, nfft) * np.conj(np.fft.rfft(a, nfft)), nfft)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    vals = np.concatenate([xc[: max_lag + 1], xc[-max_lag:]])
    if not np.any(vals):
        return float("nan")
    i = int(np.argmax(vals))
    peak = lags[i]
    y0, y1, y2 = xc[(peak - 1) % nfft], xc[peak % nfft], xc[(peak + 1) % nfft]
    denom = y0 - 2 * y1 + y2
    frac = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
    return float(peak + frac)


def align(reference: np.ndarray, degraded: np.ndarray) -> tuple[np.ndarray, int]:
    """Shift ``degraded`` by its measured integer lag and fit it to the reference's length.

    Returns ``(aligned [channels, frames] float32, shift applied in samples)``.
    """
    lag = measure_lag(reference, degraded)
    shift = 0 if np.isnan(lag) else int(round(lag))
    frames = reference.shape[1]
    if shift >= 0:
        out = degraded[:, shift:]
    else:
        out = np.pad(degraded, ((0, 0), (-shift, 0)))
    if out.shape[1] < frames:
        out = np.pad(out, ((0, 0), (0, frames - out.shape[1])))
    return np.ascontiguousarray(out[:, :frames], dtype=np.float32), shift


@dataclass
class AlignmentReport:
    shift: int  # samples removed (positive) or added (negative) at the start
    lag_first_half: float  # residual lag after alignment, samples
    lag_second_half: float

    @property
    def ok(self) -> bool:
        lags = (self.lag_first_half, self.lag_second_half)
        return all(np.isfinite(x) and abs(x) <= MAX_RESIDUAL_LAG for x in lags)


def residual_lags(reference: np.ndarray, aligned: np.ndarray) -> tuple[float, float]:
    """Sub-sample lag of each half of an aligned pair (equal lengths)."""
    half = reference.shape[1] // 2
    return (measure_lag(reference[:, :half], aligned[:, :half], 64),
            measure_lag(reference[:, half:], aligned[:, half:], 64))


def degrade(clean_pcm16: np.ndarray, sr: int, variant: str) -> tuple[np.ndarray, AlignmentReport]:
    """Encode, decode and align one clip. Returns ``(aligned [2, frames] float32, report)``."""
    decoded = encode_decode(clean_pcm16, sr, variant)
    reference = clean_pcm16.astype(np.float32) / 32768.0
    aligned, shift = align(reference, decoded)
    first, second = residual_lags(reference, aligned)
    return aligned, AlignmentReport(shift, first, second)
