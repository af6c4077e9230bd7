"""Log-spectral distance (LSD), as defined by the ssr_eval toolkit (NVSR / AudioSR).

STFT magnitudes with ``n_fft = round(2048 * sr / 44100)``, ``hop = sr // 100`` and a Hann
window (periodic, centred frames, zero padding); per frame

    sqrt( mean over bins k of log10( T_k^2 / (E_k + 1e-12)^2 + 1e-12 )^2 )

and the mean over frames. ``T`` is the reference (target), ``E`` the estimate. Three bands
(bin centre frequency f, Nyquist = sr / 2):

- ``all``: f < 0.95 * Nyquist
- ``hf``:  16 kHz <= f < 0.95 * Nyquist
- ``lf``:  f < 15 kHz

The 0.95 x Nyquist edge keeps out the last bins, which every x4 resampler (ours has its
pass band to 0.45 x rate) attenuates, and is applied to ``hf`` as to ``all``.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12
BANDS = ("all", "hf", "lf")
HF_EDGE_HZ = 16000.0
LF_EDGE_HZ = 15000.0
TOP_FRACTION = 0.95


def stft_params(sr: int) -> tuple[int, int]:
    """``(n_fft, hop)`` in samples for a rate in Hz."""
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    return int(round(2048 * sr / 44100)), int(sr // 100)


def magnitude(x: np.ndarray, sr: int) -> np.ndarray:
    """STFT magnitude of a mono signal.

    Shape: ``[frames]`` -> ``[n_frames, n_fft // 2 + 1]`` float64.
    """
    x = np.asarray(x, np.float64)
    if x.ndim != 1:
        raise ValueError(f"magnitude() takes a mono signal [frames], got shape {x.shape}")
    n_fft, hop = stft_params(sr)
    window = np.hanning(n_fft + 1)[:-1]  # periodic Hann
    padded = np.pad(x, (n_fft // 2, n_fft // 2))
    n_frames = 1 + max(0, len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
    return np.abs(np.fft.rfft(padded[idx] * window, axis=1))


def band_mask(sr: int, band: str) -> np.ndarray:
    """Boolean mask over the ``n_fft // 2 + 1`` bins for ``band`` (one of ``BANDS``)."""
    n_fft, _ = stft_params(sr)
    f = np.fft.rfftfreq(n_fft, 1.0 / sr)
    top = TOP_FRACTION * sr / 2
    if band == "all":
        return f < top
    if band == "hf":
        return (f >= HF_EDGE_HZ) & (f < top)
    if band == "lf":
        return f < LF_EDGE_HZ
    raise ValueError(f"unknown band {band!r}; allowed: {BANDS}")


def lsd_from_magnitudes(target: np.ndarray, estimate: np.ndarray, mask: np.ndarray) -> float:
    """LSD between two ``[n_frames, bins]`` magnitude arrays over the bins in ``mask``."""
    if target.shape != estimate.shape:
        raise ValueError(f"shapes differ: target {target.shape}, estimate {estimate.shape}")
    t = target[:, mask]
    e = estimate[:, mask]
    per_bin = np.log10(t**2 / (e + EPS) ** 2 + EPS) ** 2
    return float(np.mean(np.sqrt(np.mean(per_bin, axis=1))))


def lsd(reference: np.ndarray, estimate: np.ndarray, sr: int,
        bands: tuple[str, ...] = BANDS) -> dict[str, float]:
    """LSD of ``estimate`` against ``reference`` in each band.

    Args:
        reference, estimate: ``[frames]`` or ``[channels, frames]`` at ``sr`` Hz, same
            shape. Channels are scored separately and averaged.
        sr: sample rate in Hz.

    Returns:
        ``{band: lsd}``, dimensionless (log10 units), lower is better.
    """
    ref = np.asarray(reference)
    est = np.asarray(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} must have the same shape")
    if ref.ndim == 1:
        ref, est = ref[None], est[None]
    if ref.ndim != 2:
        raise ValueError(f"expected [frames] or [channels, frames], got shape {ref.shape}")
    out = {b: 0.0 for b in bands}
    for r, e in zip(ref, est):
        t_mag, e_mag = magnitude(r, sr), magnitude(e, sr)
        for b in bands:
            out[b] += lsd_from_magnitudes(t_mag, e_mag, band_mask(sr, b)) / len(ref)
    return out
