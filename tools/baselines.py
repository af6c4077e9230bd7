"""The naive spectral-folding exciter: the baseline a restoration model must beat.

It copies the 8-16 kHz band of the input, 12 dB down, to 16-24 kHz (clipped at the
Nyquist frequency) and adds it to the input; everything below 16 kHz is untouched. Done
offline in the STFT domain (Hann window, 75 % overlap, so that the analysis-synthesis
pair reconstructs the input exactly when nothing is added).
"""

from __future__ import annotations

import numpy as np

SOURCE_BAND_HZ = (8000.0, 16000.0)
SHIFT_HZ = 8000.0
GAIN_DB = -12.0
N_FFT = 2048
HOP = N_FFT // 4


def _stft(x: np.ndarray) -> np.ndarray:
    """Hann ``N_FFT`` / ``HOP`` frames of ``x [channels, n]``, padded by ``N_FFT`` at both
    ends. Returns ``[channels, frames, bins]``."""
    n = x.shape[1]
    xp = np.pad(x, ((0, 0), (N_FFT, N_FFT + (-(n + 2 * N_FFT) % HOP))))
    n_frames = 1 + (xp.shape[1] - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    return np.fft.rfft(xp[:, idx] * np.hanning(N_FFT + 1)[:-1], axis=-1)


def _plus_overlap_added(x: np.ndarray, added: np.ndarray) -> np.ndarray:
    """``x`` plus the inverse of the frames ``added`` (from :func:`_stft` of ``x``),
    windowed again; Hann^2 at 75 % overlap sums to 1.5."""
    n = x.shape[1]
    frames = np.fft.irfft(added, N_FFT, axis=-1) * np.hanning(N_FFT + 1)[:-1] / 1.5
    extra = np.zeros((x.shape[0], (frames.shape[1] - 1) * HOP + N_FFT))
    for i in range(frames.shape[1]):
        extra[:, i * HOP:i * HOP + N_FFT] += frames[:, i]
    return x + extra[:, N_FFT:N_FFT + n]


def folding_exciter(x: np.ndarray, sr: int) -> np.ndarray:
    """Add the 8-16 kHz band, shifted up by 8 kHz and 12 dB down.

    Args:
        x: ``[frames]`` or ``[channels, frames]`` float audio at ``sr`` Hz.
        sr: sample rate in Hz. The shift is the multiple of 4 bins nearest 8 kHz (8010 Hz
            at 44.1 kHz, 7969 Hz at 48 kHz): with a hop of a quarter frame, a shift of 4k
            bins keeps each copied bin's phase advance, so a tone is copied as a tone.

    Returns:
        the same shape and dtype float32.
    """
    x = np.asarray(x, np.float64)
    mono = x.ndim == 1
    if mono:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"expected [frames] or [channels, frames], got shape {x.shape}")
    if sr < 2 * SOURCE_BAND_HZ[1]:
        raise ValueError(f"sample rate {sr} Hz is too low for a 16 kHz band")
    spec = _stft(x)  # [channels, frames, bins]
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / sr)
    shift = 4 * int(round(SHIFT_HZ * N_FFT / sr / 4))
    src = np.nonzero((freqs >= SOURCE_BAND_HZ[0]) & (freqs < SOURCE_BAND_HZ[1]))[0]
    dst = src + shift
    keep = dst < len(freqs)
    added = np.zeros_like(spec)
    added[..., dst[keep]] = spec[..., src[keep]] * 10 ** (GAIN_DB / 20)
    out = _plus_overlap_added(x, added).astype(np.float32)
    return out[0] if mono else out


ADAPTIVE_TILT_DB_PER_KHZ = 3.0  # tuned on 10 training clips at MP3 128 (grid 0.5/1.5/3 x 0/3/8 dB)
ADAPTIVE_DROP_DB = 0.0
ADAPTIVE_REF_HZ = 1000.0


def adaptive_exciter(x: np.ndarray, sr: int, cutoff_hz: float | None = None,
                     tilt_db_per_khz: float = ADAPTIVE_TILT_DB_PER_KHZ,
                     drop_db: float = ADAPTIVE_DROP_DB) -> np.ndarray:
    """A cut-off-aware folding exciter: the best plain DSP we have to measure the model against.

    The input's cut-off (``tools.realdata.measure_cutoff`` over the whole signal, unless
    given) decides what is written: nothing below it, so lossless and high-bitrate input
    pass untouched. Above it, per STFT frame (Hann 2048, hop 512), the band just below the
    cut-off is copied upwards, tiled as often as needed (shifts are multiples of 4 bins, so
    tones stay tones), and scaled so that the fill starts ``drop_db`` below the level of the
    last ``ADAPTIVE_REF_HZ`` under the cut-off and falls by ``tilt_db_per_khz`` per kHz.

    Shape: ``[frames]`` or ``[channels, frames]`` -> the same, float32.
    """
    from tools.realdata import measure_cutoff

    x = np.asarray(x, np.float64)
    mono = x.ndim == 1
    if mono:
        x = x[None]
    n = x.shape[1]
    if cutoff_hz is None:
        cutoff_hz = measure_cutoff(x, sr) if n >= 8192 else sr / 2
    top = 0.95 * sr / 2
    if cutoff_hz >= top:
        out = x.astype(np.float32)
        return out[0] if mono else out
    spec = _stft(x)  # [channels, frames, bins]
    df = sr / N_FFT
    c = int(np.floor(cutoff_hz / df))
    width = 4 * max(1, int(round(min(cutoff_hz / 2, 6000.0) / df / 4)))  # source band, bins
    ref = slice(max(1, c - int(ADAPTIVE_REF_HZ / df)), c)
    ref_db = 10 * np.log10(np.mean(np.abs(spec[..., ref]) ** 2, axis=-1) + 1e-20)  # [channels, frames]
    src_db = 10 * np.log10(np.mean(np.abs(spec[..., c - width:c]) ** 2, axis=-1) + 1e-20)
    added = np.zeros_like(spec)
    for k in range(c, spec.shape[-1]):
        src = c - width + (k - c) % width
        target_db = ref_db - drop_db - tilt_db_per_khz * (k - c) * df / 1000
        # The source band's mean level is matched to the target at this bin.
        added[..., k] = spec[..., src] * 10 ** ((target_db - src_db) / 20)
    out = _plus_overlap_added(x, added).astype(np.float32)
    return out[0] if mono else out
