"""tools.hole_report: the high band's bins sorted by what the codec left in them."""

import numpy as np
import scipy.signal

from rtupscale.dsp import metrics
from tools.hole_report import classify

SR = 44100


def test_a_removed_band_is_a_hole_a_weakened_one_weak_and_the_rest_kept():
    x = np.random.default_rng(3).standard_normal(SR).astype(np.float64) * 0.1
    def band(lo, hi):
        sos = scipy.signal.butter(8, [lo, hi], btype="bandpass", fs=SR, output="sos")
        return scipy.signal.sosfiltfilt(sos, x)
    hole, weak = band(17000, 18000), band(19000, 20000)
    y = x - hole - weak + 0.2 * weak  # 17-18 kHz gone, 19-20 kHz 14 dB down
    edges = np.full(len(metrics.frame_centres(SR, SR)), SR / 2)
    classes = classify(x, y, SR, edges)
    f = np.fft.rfftfreq(metrics.stft_params(SR)[0], 1.0 / SR)
    frames = slice(5, -5)
    def share(name, lo, hi):
        return classes[name][frames][:, (f > lo) & (f < hi)].mean()
    assert share("hole", 17200, 17800) > 0.95
    assert share("weak", 19200, 19800) > 0.95
    assert share("kept", 16200, 16800) > 0.95
    below_edge = classify(x, y, SR, np.full_like(edges, 17000.0))
    assert not any(m[:, f >= 17000].any() for m in below_edge.values())  # nothing over the reference's own cut
