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
    n = x.shape[1]
    window = np.hanning(N_FFT + 1)[:-1]
    pad = N_FFT
    xp = np.pad(x, ((0, 0), (pad, pad + (-(n + 2 * pad) % HOP))))
    n_frames = 1 + (xp.shape[1] - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n_frames)[:, None]
    spec = np.fft.rfft(xp[:, idx] * window, axis=-1)  # [channels, frames, bins]
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / sr)
    shift = 4 * int(round(SHIFT_HZ * N_FFT / sr / 4))
    src = np.nonzero((freqs >= SOURCE_BAND_HZ[0]) & (freqs < SOURCE_BAND_HZ[1]))[0]
    dst = src + shift
    keep = dst < len(freqs)
    added = np.zeros_like(spec)
    added[..., dst[keep]] = spec[..., src[keep]] * 10 ** (GAIN_DB / 20)
    # Synthesis with the same window; Hann^2 at 75 % overlap sums to 1.5.
    frames = np.fft.irfft(added, N_FFT, axis=-1) * window / 1.5
    extra = np.zeros_like(xp)
    for i in range(n_frames):
        extra[:, i * HOP:i * HOP + N_FFT] += frames[:, i]
    out = x + extra[:, pad:pad + n]
    out = out.astype(np.float32)
    return out[0] if mono else out
