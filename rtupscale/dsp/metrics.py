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

Where the reference is itself a lossy decode, its codec emptied the bins above its own
low-pass in some frames, and there it is no target. ``lsd(..., top_hz=...)`` takes a
per-frame upper edge (see :func:`frame_centres`): bins at or above it are left out of that
frame, and a frame left with fewer than ``MIN_BINS`` bins in a band is left out of that
band's mean.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12
BANDS = ("all", "hf", "lf")
HF_EDGE_HZ = 16000.0
LF_EDGE_HZ = 15000.0
TOP_FRACTION = 0.95
MIN_BINS = 2


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


def frame_centres(n_samples: int, sr: int) -> np.ndarray:
    """The centre sample of each frame :func:`magnitude` makes of ``n_samples`` samples."""
    n_fft, hop = stft_params(sr)
    n_frames = 1 + max(0, n_samples + 2 * (n_fft // 2) - n_fft) // hop
    return hop * np.arange(n_frames)


def lsd_from_magnitudes(target: np.ndarray, estimate: np.ndarray, mask: np.ndarray) -> float:
    """LSD between two ``[n_frames, bins]`` magnitude arrays over the bins in ``mask``:
    ``[bins]`` for every frame alike, or ``[n_frames, bins]`` per frame. With a per-frame
    mask, frames with fewer than ``MIN_BINS`` bins in it are left out; NaN if none is left."""
    if target.shape != estimate.shape:
        raise ValueError(f"shapes differ: target {target.shape}, estimate {estimate.shape}")
    if mask.ndim == 1:
        t = target[:, mask]
        e = estimate[:, mask]
        per_bin = np.log10(t**2 / (e + EPS) ** 2 + EPS) ** 2
        return float(np.mean(np.sqrt(np.mean(per_bin, axis=1))))
    if mask.shape != target.shape:
        raise ValueError(f"a per-frame mask must have the magnitudes' shape {target.shape}, got {mask.shape}")
    count = mask.sum(axis=1)
    keep = count >= MIN_BINS
    if not keep.any():
        return float("nan")
    per_bin = np.log10(target[keep] ** 2 / (estimate[keep] + EPS) ** 2 + EPS) ** 2
    per_frame = np.sqrt((per_bin * mask[keep]).sum(axis=1) / count[keep])
    return float(np.mean(per_frame))


def lsd(reference: np.ndarray, estimate: np.ndarray, sr: int,
        bands: tuple[str, ...] = BANDS, top_hz: np.ndarray | None = None) -> dict[str, float]:
    """LSD of ``estimate`` against ``reference`` in each band.

    Args:
        reference, estimate: ``[frames]`` or ``[channels, frames]`` at ``sr`` Hz, same
            shape. Channels are scored separately and averaged.
        sr: sample rate in Hz.
        top_hz: optional upper edge per STFT frame (``[len(frame_centres(frames, sr))]``,
            Hz): bins at or above it are left out of that frame (see the module's notes).

    Returns:
        ``{band: lsd}``, dimensionless (log10 units), lower is better; NaN for a band that
        ``top_hz`` leaves no frame in.
    """
    ref = np.asarray(reference)
    est = np.asarray(estimate)
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} must have the same shape")
    if ref.ndim == 1:
        ref, est = ref[None], est[None]
    if ref.ndim != 2:
        raise ValueError(f"expected [frames] or [channels, frames], got shape {ref.shape}")
    masks = {b: band_mask(sr, b) for b in bands}
    if top_hz is not None:
        top = np.asarray(top_hz, np.float64)
        n_frames = len(frame_centres(ref.shape[1], sr))
        if top.shape != (n_frames,):
            raise ValueError(f"top_hz must give one edge per frame, shape ({n_frames},), got {top.shape}")
        f = np.fft.rfftfreq(stft_params(sr)[0], 1.0 / sr)
        below = f[None, :] < top[:, None]
        masks = {b: m[None, :] & below for b, m in masks.items()}
    out = {b: 0.0 for b in bands}
    for r, e in zip(ref, est):
        t_mag, e_mag = magnitude(r, sr), magnitude(e, sr)
        for b in bands:
            out[b] += lsd_from_magnitudes(t_mag, e_mag, masks[b]) / len(ref)
    return out
