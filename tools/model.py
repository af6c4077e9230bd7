"""The restoration network: a causal, stateful STFT-domain high-band generator.

Per hop of ``hop`` input samples (``hop`` = 128: 2.9 ms at 44.1 kHz, the shipped
``rtupscale-restore-v2``; ``hop`` = 64: 1.45 ms, the low-latency model):

1. analysis: the last ``2 * hop`` input samples, sqrt-Hann window, DFT (``hop + 1`` bins);
2. features: per-bin log power (relative to the frame's mean) and the mean itself;
3. a 2-layer GRU at frame rate (the only memory beyond one window);
4. per output bin ``k >= BAND_START`` and per fold source ``s``, a gain
   ``GAIN_MAX * tanh(10 gate_s * exp(z) / GAIN_MAX)`` applied to input bin ``k - SHIFTS[s]`` (spectral folding with a
   learned, time-varying envelope; shifts are even so that, at 50 % overlap, the shifted
   bins keep the phase advance of their new frequency);
5. synthesis: inverse DFT of the folded bins only, sqrt-Hann window, overlap-add; the
   result is a residual added to the input delayed by ``hop``;
6. the runtime's own x4 polyphase interpolator (``rtupscale.dsp.interp``) takes the
   restored base-rate signal to 4x the rate.

So above the base Nyquist the output is exactly the clean interpolation of the restored
signal, and with ``gate = 0`` (the initial value) the residual is exactly zero: an
untrained model equals the bypass path delayed by ``hop``. Nothing below the band start
(15.2 kHz at 44.1 kHz, 16.5 kHz at 48 kHz) is written, apart from the synthesis window's
leakage: the codecs in the dataset keep at least 15.3 kHz (LAME at 96 kbps), so the band
they kept, and the whole band below 15 kHz, stays as it was. Three fold shifts (5.5, 8.3, 11 kHz at 44.1 kHz) give a source
below the codec's cutoff for every output bin at every bitrate.

The geometry scales with the hop (``Geometry``): the band starts at bin ``11 hop / 16``
and the fold shifts are ``hop / 4``, ``3 hop / 8`` and ``hop / 2`` bins, so the frequencies
are the same at every hop (a shorter hop halves the frequency resolution and doubles the
time resolution of the gains).

Latency: ``hop`` (the overlap-add needs the next frame) + ``interp.LATENCY`` (72, the
linear-phase interpolator's lookahead, the same as the bypass path): 200 input samples
(4.5 ms at 44.1 kHz) at hop 128, 136 (3.1 ms) at hop 64.

Streaming state (all explicit, zeros at start), ``C`` = channels:

- ``frames``  ``[C, hop]``      the last hop input samples (analysis history and delay line)
- ``gru``     ``[LAYERS, C, HIDDEN]``  GRU hidden state
- ``ola``     ``[C, hop]``      second half of the last synthesised frame
- ``interp``  ``[C, 144]``      interpolator history (restored signal)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rtupscale.dsp import interp

HOP = 128  # the default hop (the shipped model's)
HOPS = (64, 128, 256)
GAIN_MAX = 2.0
FACTOR = 4
INTERP_TAPS = interp.design_interpolator().shape[0]
STATE_NAMES = ("frames", "gru", "ola", "interp")  # Restorer's; every model has ``state_names``
ARCHS = ("gru", "cutoff")


@dataclass(frozen=True)
class Geometry:
    """The frame geometry of a hop: the same frequencies (band start 15.2 kHz, fold shifts
    5.5, 8.3 and 11 kHz at 44.1 kHz) at every hop in ``HOPS``."""

    hop: int

    def __post_init__(self):
        if self.hop not in HOPS:
            raise ValueError(f"hop must be one of {HOPS}, got {self.hop}")

    @property
    def window(self) -> int:
        return 2 * self.hop

    @property
    def n_bins(self) -> int:
        return self.hop + 1

    @property
    def band_start(self) -> int:
        return 11 * self.hop // 16  # 88 at hop 128: 15.2 kHz at 44.1 kHz

    @property
    def shifts(self) -> tuple[int, ...]:
        # Even (so that the 50 % overlap keeps the phases coherent) at every hop in HOPS.
        return (self.hop // 4, 3 * self.hop // 8, self.hop // 2)

    @property
    def n_band(self) -> int:
        return self.n_bins - self.band_start

    @property
    def latency(self) -> int:
        """Input samples from input to output: one hop plus the interpolator's lookahead."""
        return self.hop + interp.LATENCY



def dsp_matrices(geo: Geometry) -> dict[str, np.ndarray]:
    """The fixed DSP of a hop as constant matrices, so that the exported graph has few nodes
    (onnxruntime's per-node cost dominates a 256-frame block):

    - ``analysis`` ``[W, 2 bins]``: sqrt-Hann frame -> ``[re | im]``;
    - ``power`` ``[2 bins, bins]``: ``[re | im]^2`` -> power;
    - ``fold`` ``[2 bins, 2 S n_band]``: ``[re | im]`` -> the source bins of every shift;
    - ``synthesis`` ``[2 S n_band, W]``: inverse real DFT of the band bins summed over the
      shifts, times the sqrt-Hann window;
    - ``interp_w`` ``[4, 1, taps]``: the runtime's x4 interpolator as a conv1d weight.
    """
    hop, width, n_bins, band_start, shifts, n_band = (geo.hop, geo.window, geo.n_bins, geo.band_start,
                                                      geo.shifts, geo.n_band)
    n = np.arange(width)
    win = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * n / width))  # sqrt periodic Hann
    k = np.arange(n_bins)
    arg = 2 * np.pi * np.outer(n, k) / width  # [width, n_bins]
    n_src = len(shifts) * n_band
    analysis = np.concatenate([win[:, None] * np.cos(arg), -win[:, None] * np.sin(arg)], axis=1)
    power = np.concatenate([np.eye(n_bins), np.eye(n_bins)], axis=0)
    fold = np.zeros((2 * n_bins, 2 * n_src))
    for s, shift in enumerate(shifts):
        for j in range(n_band):
            src = band_start + j - shift
            fold[src, s * n_band + j] = 1.0
            fold[n_bins + src, n_src + s * n_band + j] = 1.0
    kb = np.arange(band_start, n_bins)
    weight = np.where(kb == hop, 1.0, 2.0) / width
    iarg = 2 * np.pi * np.outer(kb, n) / width  # [n_band, width]
    icos = weight[:, None] * np.cos(iarg) * win
    isin = -weight[:, None] * np.sin(iarg) * win
    synthesis = np.concatenate([np.tile(icos, (len(shifts), 1)), np.tile(isin, (len(shifts), 1))], axis=0)
    poly = interp.design_interpolator()  # [taps, 4], row j multiplies x[n - j]
    # conv1d is a correlation: weight[p, 0, j] multiplies x[n - (taps - 1) + j].
    interp_w = poly[::-1].T.copy()[:, None, :]
    return {"analysis": analysis, "power": power, "fold": fold, "synthesis": synthesis, "interp_w": interp_w}


class Restorer(nn.Module):
    """See the module docstring.

    Args:
        hidden: GRU width.
        layers: GRU layers.
        hop: input samples per frame (one of ``HOPS``): the model's block multiple, and with
            the interpolator's lookahead its latency.
    """

    def __init__(self, hidden: int = 256, layers: int = 2, hop: int = HOP):
        super().__init__()
        if hidden < 8 or layers < 1:
            raise ValueError(f"hidden must be >= 8 and layers >= 1, got {hidden}, {layers}")
        geo = Geometry(hop)
        width, n_bins, band_start, shifts, n_band = geo.window, geo.n_bins, geo.band_start, geo.shifts, geo.n_band
        self.geometry = geo
        self.hop = hop
        self.latency = geo.latency
        self.hidden = hidden
        self.layers = layers
        for name, value in dsp_matrices(geo).items():
            # Not saved in checkpoints: they are constants of the design.
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)

        self.inp = nn.Linear(n_bins + 1, hidden)
        self.gru = nn.GRU(hidden, hidden, layers, batch_first=True)
        self.mid = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, len(shifts) * n_band)
        nn.init.constant_(self.out.bias, -2.0)
        self.gate = nn.Parameter(torch.zeros(len(shifts)))

    arch = "gru"
    state_names = STATE_NAMES

    def state_shapes(self, channels: int | str) -> dict[str, tuple]:
        """Shape of each state tensor; ``channels`` may be the string ``"channels"``."""
        return {"frames": (channels, self.hop), "gru": (self.layers, channels, self.hidden),
                "ola": (channels, self.hop), "interp": (channels, INTERP_TAPS - 1)}

    def initial_state(self, channels: int) -> list[torch.Tensor]:
        device = self.gate.device
        return [torch.zeros(s, device=device) for s in self.state_shapes(channels).values()]

    def restore(self, audio_in: torch.Tensor, frames: torch.Tensor, gru: torch.Tensor,
                ola: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Restored base-rate signal, delayed by ``hop``.

        Shape: ``audio_in [C, N]`` (N a multiple of hop) -> ``restored [C, N]`` plus the
        new ``frames``, ``gru``, ``ola`` states.
        """
        c, n = audio_in.shape
        hop, n_band = self.hop, self.geometry.n_band
        buf = torch.cat([frames, audio_in], dim=1)  # [C, N + hop]
        frame = torch.cat([buf[:, :n].reshape(c, -1, hop), buf[:, hop:].reshape(c, -1, hop)], dim=2)
        spec = frame @ self.analysis  # [C, M, 2 * n_bins]: re | im
        logp = torch.log((spec * spec) @ self.power + 1e-9)
        mean = logp.mean(dim=2, keepdim=True)
        feat = torch.cat([(logp - mean) * 0.2, mean * 0.1], dim=2)
        h = F.elu(self.inp(feat))
        h, gru_out = self.gru(h, gru)
        h = F.elu(self.mid(h))
        z = self.out(h).clamp(-20.0, 6.0)  # [C, M, S * n_band]
        # x10: the gate starts at 0 and reaches useful gains (about 1) in tens of steps.
        # Bounded to +-GAIN_MAX (tanh): a folded band is never made more than 6 dB louder
        # than its source, so a transient cannot blow up (an unbounded gain did, +20 dB).
        gain = GAIN_MAX * torch.tanh(torch.exp(z) * (10.0 / GAIN_MAX * self.gate).repeat_interleave(n_band))
        folded = (spec @ self.fold) * torch.cat([gain, gain], dim=2)  # [C, M, 2 * S * n_band]
        syn = folded @ self.synthesis  # [C, M, width]
        first, second = syn[:, :, :hop], syn[:, :, hop:]
        prev = torch.cat([ola[:, None, :], second[:, :-1, :]], dim=1)
        residual = (first + prev).reshape(c, n)
        restored = buf[:, :n] + residual
        return restored, buf[:, n:], gru_out, second[:, -1, :]

    def upsample(self, restored: torch.Tensor, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The runtime's x4 interpolator. ``[C, N] -> [C, 4N]`` plus the new history."""
        c, n = restored.shape
        buf = torch.cat([history, restored], dim=1)  # [C, N + taps - 1]
        up = F.conv1d(buf[:, None, :], self.interp_w)  # [C, 4, N]
        return up.transpose(1, 2).reshape(c, FACTOR * n), buf[:, n:]

    def forward(self, audio_in, state_frames, state_gru, state_ola, state_interp):
        """One block: ``audio_in [C, N]`` -> ``audio_out [C, 4N]`` and the four new states."""
        restored, frames, gru, ola = self.restore(audio_in, state_frames, state_gru, state_ola)
        audio_out, hist = self.upsample(restored, state_interp)
        return audio_out, frames, gru, ola, hist


class CausalMix(nn.Module):
    """A causal convolution over frames, kernel ``k`` at ``dilation``, as one MatMul over
    the ``k`` stacked taps (onnxruntime runs a Conv of a few frames far slower).

    Shape: ``x [C, M, H]``, ``ctx [C, (k - 1) dilation, H]`` (the past inputs) ->
    ``y [C, M, H]`` and the new ``ctx``.
    """

    def __init__(self, hidden: int, k: int, dilation: int):
        super().__init__()
        self.k, self.dilation = k, dilation
        self.lin = nn.Linear(k * hidden, hidden)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        full = torch.cat([ctx, x], dim=1)
        span = (self.k - 1) * self.dilation
        # Slices with constant bounds (from the start and from the end), so that the
        # exported graph computes no shapes for them.
        taps = torch.cat([full[:, i * self.dilation:(i * self.dilation - span) or None] for i in range(self.k)], dim=2)
        return self.lin(taps), full[:, -span:]


class CutoffRestorer(nn.Module):
    """The codec-aware restorer (``arch = "cutoff"``, rtupscale-restore-v3).

    The same frame, fold and synthesis as :class:`Restorer` (see the module docstring), with
    two differences:

    1. **It knows where the input is empty.** Each frame is analysed a second time
       with a 4-term Blackman-Harris window (sidelobes at -92 dB, so a loud band below the
       codec's low-pass does not leak into the bins above it). A band bin is *empty* when its
       level lies below ``max(ABS_FLOOR_DB, loudest bin below the band - REL_RANGE_DB)``;
       ``mask = sigmoid((threshold - level) / MASK_WIDTH_DB)`` per bin and frame: 1 above a
       codec's cut-off (and in its holes), 0 where the input has content of its own. The
       mask is a feature, and it selects between two sets of gains per bin: *fill* gains
       where the input is empty, and *over* gains where it is not (with their own gates,
       both zero at the start). So what is written over content is a separate, learned
       decision: training teaches it to add nothing over lossless input and to add where a
       codec left its top band too weak (Opus and AAC fill it with folded noise).
       The fill gains act only in frames whose empty top band reaches down to
       ``high_cutoff_hz`` (default ``HIGH_CUTOFF_HZ``; the least empty bin from there up
       decides): a cut-off above it is where lossless masters, 320 kbps MP3 and high-rate
       Vorbis end alike, and the input alone cannot tell which, so nothing is filled there.
       With ``hold_ms`` > 0 (rtupscale-restore-v3 uses 300 ms), a bin is filled only once it
       has been empty in every frame of the last ``hold_ms``: a running maximum of
       ``1 - mask`` over ``hold`` frames (one MaxPool over the frames of the block and the
       ``hold - 1`` before it, carried as state). A codec's low-pass empties its bins in
       every frame; the gaps between a cymbal's hits, a decay into a quiet passage or a
       sound that lacks a top for a moment do not, and are left alone. With ``hold_share`` < 1,
       a bin is filled when it is empty now and was empty in at least that share of the
       hold's frames (a mean over them instead of the maximum): the bins just under a 128 kbps
       or VBR MP3's cut-off, which the encoder keeps in some frames only, are filled in the
       frames it dropped them, while a bin with content most of the time is not. With
       ``over_gate``, the over gains too act only in frames whose empty top reaches down to
       ``high_cutoff_hz``: nothing is written over a full-band input. With ``over_holes``, the
       over gains act on every bin the fill leaves alone (``1 - fill mask``), not only on bins
       with content (``1 - mask``): the holes a codec leaves now and then in a band it keeps
       (empty in a frame, but with content in most of the hold) get the over gains too, where
       without it neither set of gains reaches them. With ``over`` False
       the over gains are not used: nothing is ever written over content the input has.
       With ``floor_db`` > 0 (a weightless rule, off by default), an empty band bin whose
       source 8.3 kHz lower stands ``floor_db`` over the threshold gets the fold exciter's
       copy (-12 dB) on top of the learned fill in frames whose top is empty (with ``cliff_db``: in frames
       where a cliff at or under ``high_cutoff_hz`` starts the empty top, so that a lossless
       top that rolls off into quiet is left alone): the holes under a cut-off are never left
       emptier than the fold exciter leaves them (see :meth:`_floor_gain`). With
       ``floor_learned`` the copy is scaled per bin and frame by a learned factor in 0..2 (one
       more linear layer on the hidden state, 2 x its sigmoid, starting at 1), which may hold
       it back where an "empty" bin holds quiet content of its own.
    2. **Its memory is finite.** In place of the GRU, a per-frame projection and three
       causal convolutions over frames (kernel 4 at dilations 1, 4 and 8, residual), each
       one MatMul over its stacked taps (:class:`CausalMix`): the output depends on the last
       ``memory_frames`` frames only (the convolutions' ``receptive_frames``, the hold or the
       cliff gate's memory, whichever is longest), so whatever played before that is
       forgotten exactly, not approximately.

    Streaming state (zeros at start), ``C`` = channels, ``H`` = hidden:

    - ``frames`` ``[C, hop]``; ``ctx1`` ``[C, 3, H]``, ``ctx2`` ``[C, 12, H]``,
      ``ctx3`` ``[C, 24, H]`` (the convolutions' past inputs); ``ola`` ``[C, hop]``;
      with a hold, ``hold`` ``[C, hold - 1, n_band]`` (the last frames' ``1 - mask``; zeros:
      the history of silence; with ``cliff_gate``, ``[C, cliff_hold - 1, 2 * n_band]``: also
      whether a cliff lay under each bin, remembered for ``cliff_hold_ms``, the hold unless
      longer); ``interp`` ``[C, 144]``.
    """

    arch = "cutoff"
    ABS_FLOOR_DB = -72.0  # 11 dB over 16-bit rounding noise in a Blackman-Harris bin (-83 dB)
    HIGH_CUTOFF_HZ = 19500.0  # the default high_cutoff_hz, at 44.1 kHz; the same bin at every rate and hop
    REL_RANGE_DB = 80.0
    MASK_WIDTH_DB = 3.0
    # Content counts for the hold from this far over the threshold: at 0 dB, a bin that
    # touches the threshold in one frame closes the fill for the whole hold, and where the
    # frame grid falls (where the stream started) decides it (1.55 dB RMS in a 1 kHz band's
    # envelope in tests/tools/test_shipped_model.py; 1.26 dB at 3 dB).
    HOLD_MARGIN_DB = 3.0
    DILATIONS = (1, 4, 8)
    K = 4
    CLIFF_BELOW = (3, 6)  # the bins under an empty run's lowest bin that must stand over it
    CLIFF_WIDTH_DB = 1.5
    SHARE_WIDTH = 0.02  # the hold_share rule's soft step, in shares of the hold (about 2 frames)
    FLOOR_SHIFT = 1  # the floor rule copies from 3 hop / 8 below (8.3 kHz at 44.1 kHz), as the fold exciter
    FLOOR_GAIN_DB = -12.0  # and at the fold exciter's level
    FLOOR_WIDTH_DB = 3.0
    FLOOR_SCALE_MAX = 2.0  # a learned floor scale is FLOOR_SCALE_MAX x sigmoid: 1 at a logit of 0, where it starts

    def __init__(self, hidden: int = 128, hop: int = HOP, hold_ms: float = 0.0, over: bool = True,
                 cliff_db: float = 0.0, cliff_gate: bool = False, high_cutoff_hz: float = HIGH_CUTOFF_HZ,
                 hold_share: float = 1.0, over_gate: bool = False, over_holes: bool = False,
                 floor_db: float = 0.0, floor_learned: bool = False, cliff_hold_ms: float = 0.0):
        super().__init__()
        if not (floor_db == 0.0 or 3.0 <= floor_db <= 60.0):
            raise ValueError(f"floor_db must be 0 (off) or in 3..60, got {floor_db}")
        if floor_learned and not floor_db:
            raise ValueError("floor_learned scales the floor rule's copy: it needs floor_db > 0")
        if over_gate and not over:
            raise ValueError("over_gate gates the over gains: it needs over")
        if over_holes and not (over and hold_ms > 0):
            raise ValueError("over_holes moves the over gains into the holes the hold leaves: it needs over and hold_ms > 0")
        if not 0.1 <= hold_share <= 1.0:
            raise ValueError(f"hold_share must be in 0.1..1 (1: empty in every frame of the hold), got {hold_share}")
        if hold_share < 1.0 and (hold_ms <= 0 or cliff_gate):
            raise ValueError("hold_share < 1 needs a hold (hold_ms > 0) and no cliff_gate")
        if hidden < 8:
            raise ValueError(f"hidden must be >= 8, got {hidden}")
        if not 0.0 <= hold_ms <= 400.0:
            raise ValueError(f"hold_ms must be in 0..400, got {hold_ms}")
        if not (cliff_db == 0.0 or 6.0 <= cliff_db <= 60.0):
            raise ValueError(f"cliff_db must be 0 (off) or in 6..60, got {cliff_db}")
        if cliff_gate and not (cliff_db > 0 and hold_ms > 0):
            raise ValueError("cliff_gate needs a hold (hold_ms > 0) and a cliff (cliff_db > 0)")
        if cliff_hold_ms and not (cliff_gate and hold_ms <= cliff_hold_ms <= 4000.0):
            raise ValueError(f"cliff_hold_ms must be 0 (the hold) or, with cliff_gate, in hold_ms..4000, got {cliff_hold_ms}")
        if not 16000.0 <= high_cutoff_hz <= 21000.0:
            raise ValueError(f"high_cutoff_hz must be in 16000..21000 (Hz at 44.1 kHz), got {high_cutoff_hz}")
        geo = Geometry(hop)
        # Frames (at 44.1 kHz) a band bin must have been empty for before it is filled.
        self.hold = int(round(hold_ms * 1e-3 * 44100 / hop))
        # Frames a cliff is remembered for by the cliff gate (the hold, unless cliff_hold_ms is longer).
        self.cliff_hold = max(self.hold, int(round(cliff_hold_ms * 1e-3 * 44100 / hop)))
        self.cliff_hold_ms = cliff_hold_ms if self.cliff_hold > self.hold else 0.0
        self.hold_ms, self.over, self.cliff_db, self.cliff_gate = hold_ms, over, cliff_db, cliff_gate
        self.hold_share = hold_share
        self.over_gate, self.over_holes = over_gate, over_holes
        self.floor_db, self.floor_learned = floor_db, floor_learned
        self.state_names = ("frames", "ctx1", "ctx2", "ctx3", "ola") + (("hold",) if self.hold > 1 else ()) + ("interp",)
        self.geometry, self.hop, self.latency, self.hidden, self.layers = geo, hop, geo.latency, hidden, 0
        for name, value in dsp_matrices(geo).items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)
        n = np.arange(geo.window)
        a = (0.35875, 0.48829, 0.14128, 0.01168)
        bh = sum((-1) ** i * c * np.cos(2 * np.pi * i * n / geo.window) for i, c in enumerate(a))
        arg = 2 * np.pi * np.outer(n, np.arange(geo.band_start, geo.n_bins)) / geo.window
        detect = np.concatenate([bh[:, None] * np.cos(arg), bh[:, None] * np.sin(arg)], axis=1)
        self.register_buffer("detect", torch.tensor(detect, dtype=torch.float32), persistent=False)
        # Blackman-Harris power of the bins below the band, for the frame's reference level.
        arg_lo = 2 * np.pi * np.outer(n, np.arange(1, geo.band_start)) / geo.window
        detect_lo = np.concatenate([bh[:, None] * np.cos(arg_lo), bh[:, None] * np.sin(arg_lo)], axis=1)
        self.register_buffer("detect_lo", torch.tensor(detect_lo, dtype=torch.float32), persistent=False)
        # The cliff test: the bins just under the band, and triangular sums over the band.
        lo, hi = self.CLIFF_BELOW
        arg_under = 2 * np.pi * np.outer(n, np.arange(geo.band_start - hi, geo.band_start)) / geo.window
        under = np.concatenate([bh[:, None] * np.cos(arg_under), bh[:, None] * np.sin(arg_under)], axis=1)
        self.register_buffer("detect_under", torch.tensor(under, dtype=torch.float32), persistent=False)
        ext = hi + geo.n_band
        # from_up[j, k] = 1 for j >= k: x @ from_up sums x over the bins from k up.
        self.register_buffer("from_up", torch.tensor(np.tril(np.ones((ext, ext))), dtype=torch.float32),
                             persistent=False)
        self.high_cutoff_hz = high_cutoff_hz
        self.high_bin = int(round(high_cutoff_hz / 44100 * geo.window)) - geo.band_start  # in the band
        self.n_features = geo.n_bins + 1 + geo.n_band
        self.inp = nn.Linear(self.n_features, hidden)
        self.mixes = nn.ModuleList(CausalMix(hidden, self.K, d) for d in self.DILATIONS)
        self.mid = nn.Linear(hidden, hidden)
        # Two sets of gains per band bin and shift: where the input is empty, and over what
        # the input has (a codec that fills its top band with too little, as Opus and AAC do).
        self.out = nn.Linear(hidden, 2 * len(geo.shifts) * geo.n_band)
        nn.init.constant_(self.out.bias, -2.0)
        self.gate = nn.Parameter(torch.zeros(len(geo.shifts)))
        self.gate_over = nn.Parameter(torch.zeros(len(geo.shifts)))
        if floor_learned:  # per band bin, how much of the floor rule's copy a frame takes (1 at the start)
            self.floor_out = nn.Linear(hidden, geo.n_band)
            nn.init.zeros_(self.floor_out.weight)
            nn.init.zeros_(self.floor_out.bias)

    @property
    def receptive_frames(self) -> int:
        return 1 + sum((self.K - 1) * d for d in self.DILATIONS)

    @property
    def memory_frames(self) -> int:
        """Frames of input the output depends on (beyond the analysis frame and the tails)."""
        return max(self.receptive_frames, self.hold, self.cliff_hold)

    def state_shapes(self, channels: int | str) -> dict[str, tuple]:
        """Shape of each state tensor; ``channels`` may be the string ``"channels"``."""
        ctx = {f"ctx{i + 1}": (channels, (self.K - 1) * d, self.hidden) for i, d in enumerate(self.DILATIONS)}
        width = self.geometry.n_band * (2 if self.cliff_gate else 1)  # has content | cliff under it
        hold = {"hold": (channels, self.cliff_hold - 1, width)} if self.hold > 1 else {}
        return {"frames": (channels, self.hop), **ctx, "ola": (channels, self.hop), **hold,
                "interp": (channels, INTERP_TAPS - 1)}

    def initial_state(self, channels: int) -> list[torch.Tensor]:
        device = self.gate.device
        return [torch.zeros(s, device=device) for s in self.state_shapes(channels).values()]

    @staticmethod
    def _level_db(spec: torch.Tensor) -> torch.Tensor:
        half = spec.shape[-1] // 2
        return 10.0 * torch.log10(spec[..., :half] ** 2 + spec[..., half:] ** 2 + 1e-12)

    def threshold_db(self, frame: torch.Tensor) -> torch.Tensor:
        """The frame's emptiness threshold: ``[C, M, W] -> [C, M, 1]``."""
        ref = self._level_db(frame @ self.detect_lo).amax(dim=2, keepdim=True)
        return torch.clamp(ref - self.REL_RANGE_DB, min=self.ABS_FLOOR_DB)

    def headroom_db(self, frame: torch.Tensor, detect: torch.Tensor | None = None,
                    threshold: torch.Tensor | None = None) -> torch.Tensor:
        """Per bin of ``detect`` (default: the band), how far (dB) the emptiness threshold lies
        above the input's level: positive where the bin is empty. ``[C, M, W] -> [C, M, bins]``."""
        threshold = self.threshold_db(frame) if threshold is None else threshold
        return threshold - self._level_db(frame @ (self.detect if detect is None else detect))

    def cliff_parts(self, under: torch.Tensor, headroom: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """From the headroom of the bins just under the band (``under``, ``[C, M, hi]``) and of the
        band: ``reach``, 1 where a cliff of ``cliff_db`` lies at or under the bin, and ``top``, 1
        where every bin from this one up is empty (see the class docstring). ``[C, M, n_band]`` each."""
        lo, hi = self.CLIFF_BELOW
        room = torch.cat([under, headroom], dim=2)  # [C, M, hi + n_band], from band_start - hi up
        # Top-empty: every bin from k up is empty (a product of soft masks, summed in logs; a
        # 1 dB width, so that 30 bins at 10 dB under the threshold still multiply to ~1).
        # log(sigmoid(x)) written out and clamped: onnxruntime's Sigmoid returns 0 far below
        # zero, and log(0) times the matrix's zeros is NaN.
        top = torch.exp(-torch.log(1.0 + torch.exp(-room.clamp(-15.0, 15.0))) @ self.from_up)
        start = top[..., hi:] * (1.0 - top[..., hi - 1:-1])  # bin k is the lowest of the top-empty run
        # The bins lo..hi under k: their mean level over the threshold (dB; a mean, so that one
        # bin of a noisy decay that happens to stand high does not make a cliff).
        below = torch.stack([-room[..., hi - d:hi - d + self.geometry.n_band] for d in range(lo, hi + 1)]).mean(dim=0)
        edge = start * torch.sigmoid((below - self.cliff_db) / self.CLIFF_WIDTH_DB)
        reach = torch.clamp(edge @ self.from_up[hi:, hi:].T, max=1.0)  # an edge at or under each bin
        return reach, top[..., hi:]

    def empty_mask(self, frame: torch.Tensor) -> torch.Tensor:
        """Per band bin, how empty the input is (1: nothing there). ``[C, M, W] -> [C, M, n_band]``."""
        return torch.sigmoid(self.headroom_db(frame) / self.MASK_WIDTH_DB)

    def restore(self, audio_in: torch.Tensor, frames: torch.Tensor, ctx1: torch.Tensor, ctx2: torch.Tensor,
                ctx3: torch.Tensor, ola: torch.Tensor, hold: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Restored base-rate signal, delayed by ``hop``.

        Shape: ``audio_in [C, N]`` (N a multiple of hop) -> ``restored [C, N]`` plus the new
        ``frames``, ``ctx1``, ``ctx2``, ``ctx3``, ``ola`` states.
        """
        c, n = audio_in.shape
        hop, n_band = self.hop, self.geometry.n_band
        buf = torch.cat([frames, audio_in], dim=1)  # [C, N + hop]
        frame = torch.cat([buf[:, :-hop].reshape(c, -1, hop), buf[:, hop:].reshape(c, -1, hop)], dim=2)
        spec = frame @ self.analysis  # [C, M, 2 * n_bins]: re | im
        logp = torch.log((spec * spec) @ self.power + 1e-9)
        mean = logp.mean(dim=2, keepdim=True)
        threshold = self.threshold_db(frame)
        headroom = self.headroom_db(frame, threshold=threshold)
        mask = torch.sigmoid(headroom / self.MASK_WIDTH_DB)  # [C, M, n_band]
        feat = torch.cat([(logp - mean) * 0.2, mean * 0.1, mask], dim=2)  # [C, M, F]
        h = F.elu(self.inp(feat))  # [C, M, H]
        new_ctx = []
        for mix, ctx in zip(self.mixes, (ctx1, ctx2, ctx3)):
            y, ctx = mix(h, ctx)
            h = h + F.elu(y)
            new_ctx.append(ctx)
        ctx1, ctx2, ctx3 = new_ctx
        h = F.elu(self.mid(h))
        s = len(self.geometry.shifts)
        if self.over:
            z = self.out(h).clamp(-20.0, 6.0)  # [C, M, 2 * S * n_band]: fill | over
        else:  # the fill half only
            z = F.linear(h, self.out.weight[:s * n_band], self.out.bias[:s * n_band]).clamp(-20.0, 6.0)
        new_hold = []
        if self.cliff_db > 0:
            reach, top = self.cliff_parts(self.headroom_db(frame, self.detect_under, threshold), headroom)
        if self.hold > 1:
            # Empty for the last ``hold`` frames: 1 - the running max of "has content". A codec's
            # low-pass empties its bins in every frame; a natural decay or the gaps between
            # hits of a cymbal leave them empty only for a while, and are not filled.
            # Content counts for the hold from HOLD_MARGIN_DB over the threshold, so that a bin at
            # the threshold in one frame does not close the fill for the whole hold.
            content = torch.sigmoid(-(headroom + self.HOLD_MARGIN_DB) / self.MASK_WIDTH_DB)
            if self.cliff_gate:  # and the running max of "a cliff lies under it"
                content = torch.cat([content, reach], dim=2)
            seq = torch.cat([hold, content], dim=1)  # [C, cliff_hold - 1 + M, width]
            if self.hold_share < 1.0:  # empty now, and in at least hold_share of the hold's frames
                share = F.avg_pool1d(seq.transpose(1, 2), self.hold, stride=1).transpose(1, 2)  # [C, M, n_band]
                fill_mask = (1.0 - content) * torch.sigmoid(((1.0 - share) - self.hold_share) / self.SHARE_WIDTH)
            else:
                recent = seq[:, self.cliff_hold - self.hold:, :n_band]  # the hold's frames
                had = F.max_pool1d(recent.transpose(1, 2), self.hold, stride=1).transpose(1, 2)  # [C, M, n_band]
                fill_mask = 1.0 - had
            if self.cliff_gate:  # (hold_share is 1 with a cliff gate): a cliff within cliff_hold frames
                cliff_seen = F.max_pool1d(seq[..., n_band:].transpose(1, 2), self.cliff_hold, stride=1).transpose(1, 2)
                fill_mask = fill_mask * cliff_seen
            new_hold = [seq[:, -(self.cliff_hold - 1):]]
        else:
            fill_mask = mask
        if self.cliff_db > 0:
            fill_mask = torch.maximum(fill_mask, reach * top)
        empty = fill_mask.repeat(1, 1, s)
        low_cutoff = fill_mask[..., self.high_bin:].amin(dim=2, keepdim=True)  # [C, M, 1]
        fill = low_cutoff * GAIN_MAX * torch.tanh(torch.exp(z[..., :s * n_band]) * (10.0 / GAIN_MAX * self.gate).repeat_interleave(n_band))
        gain = fill * empty
        if self.over:
            over = GAIN_MAX * torch.tanh(torch.exp(z[..., s * n_band:]) * (10.0 / GAIN_MAX * self.gate_over).repeat_interleave(n_band))
            if self.over_gate:  # only where a cut-off empties the top, as the fill
                over = over * low_cutoff
            written = fill_mask if self.over_holes and self.hold > 1 else mask  # where the over gains stay out
            gain = gain + over * (1.0 - written.repeat(1, 1, s))
        if self.floor_db > 0:
            # with a cliff test, only in frames where a cliff at or under high_cutoff_hz starts
            # the empty top: a codec's low-pass, not a quiet, rolled-off lossless top
            cut = (reach * top)[..., self.high_bin:self.high_bin + 1] if self.cliff_db > 0 else low_cutoff
            scale = self.FLOOR_SCALE_MAX * torch.sigmoid(self.floor_out(h)) if self.floor_learned else None
            gain = gain + self._floor_gain(frame, threshold, mask, cut, scale)
        folded = (spec @ self.fold) * torch.cat([gain, gain], dim=2)  # [C, M, 2 * S * n_band]
        syn = folded @ self.synthesis  # [C, M, width]
        first, second = syn[:, :, :hop], syn[:, :, hop:]
        prev = torch.cat([ola[:, None, :], second[:, :-1, :]], dim=1)
        restored = buf[:, :-hop] + (first + prev).reshape(c, n)
        return (restored, buf[:, -hop:], ctx1, ctx2, ctx3, second[:, -1, :], *new_hold)

    def _floor_gain(self, frame: torch.Tensor, threshold: torch.Tensor, mask: torch.Tensor,
                    low_cutoff: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The floor rule's gains ``[C, M, S * n_band]``, added to ``gain``: where a band bin is
        empty (``mask``) while its source bin on the shift nearest 8 kHz (``FLOOR_SHIFT``)
        stands ``floor_db`` over the emptiness ``threshold``, in frames whose top is cut
        (``low_cutoff``, ``[C, M, 1]``), that shift gets ``FLOOR_GAIN_DB`` (the fold exciter's
        level) on top of the learned gain: the holes a codec leaves under its cut-off are
        never left emptier than the fold exciter leaves them, and the learned gains, trained
        with the rule on, say how much more a hole takes. With ``floor_learned``, ``scale``
        (``[C, M, n_band]``, in 0..``FLOOR_SCALE_MAX``, from the network) says how much of the copy each bin
        takes: a bin that is empty to the mask but holds quiet content of its own (visible
        in the features) can take less than the fold exciter's level."""
        geo, n_band = self.geometry, self.geometry.n_band
        i = self.FLOOR_SHIFT
        shift = geo.shifts[i]
        lo_db = self._level_db(frame @ self.detect_lo)  # bins 1 .. band_start - 1
        source = lo_db[..., geo.band_start - shift - 1:geo.n_bins - shift - 1]
        lit = torch.sigmoid((source - threshold - self.floor_db) / self.FLOOR_WIDTH_DB)
        weak = mask * lit * low_cutoff
        if scale is not None:
            weak = weak * scale
        level = 10.0 ** (self.FLOOR_GAIN_DB / 20.0)
        parts = [weak * level if j == i else torch.zeros_like(weak) for j in range(len(geo.shifts))]
        return torch.cat(parts, dim=2)

    upsample = Restorer.upsample

    def forward(self, audio_in, *states):
        """One block: ``audio_in [C, N]`` and the states in ``state_names`` order ->
        ``audio_out [C, 4N]`` and the new states."""
        restored, *new = self.restore(audio_in, *states[:-1])
        audio_out, hist = self.upsample(restored, states[-1])
        return (audio_out, *new, hist)


def build_model(arch: str = "gru", hidden: int = 192, layers: int = 2, hop: int = HOP,
                hold_ms: float = 0.0, over: bool = True, cliff_db: float = 0.0, cliff_gate: bool = False,
                high_cutoff_hz: float = CutoffRestorer.HIGH_CUTOFF_HZ, hold_share: float = 1.0,
                over_gate: bool = False, over_holes: bool = False, floor_db: float = 0.0,
                floor_learned: bool = False, cliff_hold_ms: float = 0.0) -> nn.Module:
    """A model of ``arch`` (one of ``ARCHS``); ``layers`` applies to ``gru`` only,
    ``hold_ms``, ``over``, ``cliff_db``, ``cliff_gate``, ``high_cutoff_hz``, ``hold_share``, ``over_gate``, ``over_holes``
    ``floor_db``, ``floor_learned`` and ``cliff_hold_ms`` to ``cutoff`` only (see :class:`CutoffRestorer`)."""
    if arch == "gru":
        return Restorer(hidden, layers, hop)
    if arch == "cutoff":
        return CutoffRestorer(hidden, hop, hold_ms, over, cliff_db, cliff_gate, high_cutoff_hz, hold_share, over_gate,
                              over_holes, floor_db, floor_learned, cliff_hold_ms)
    raise ValueError(f"unknown arch {arch!r}; allowed: {ARCHS}")


def load_weights(model: Restorer, state_dict: dict) -> None:
    """Load a checkpoint's weights; constant buffers an older version saved are ignored, and a
    learned floor scale the checkpoint lacks keeps its initialisation (the rule's full copy)."""
    wanted = model.state_dict()
    new = {k: v for k, v in wanted.items() if k.startswith("floor_out.") and k not in state_dict}
    model.load_state_dict({**new, **{k: v for k, v in state_dict.items() if k in wanted}})


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_widened(model: Restorer, small: dict) -> None:
    """Warm-start ``model`` from the weights of one as wide or narrower, with the same number
    of GRU layers (at the same width this is a plain copy).

    Net2Net-style: the small model's units keep their weights; every weight from a new unit
    into an old unit (and into the output gains) is zero, so the widened model computes
    exactly what the small one did, while the new units keep ``model``'s own random
    initialisation and so receive gradients from the first step (their outgoing weights
    start at zero and learn).
    """
    layers = sum(1 for k in small if k.startswith("gru.weight_ih_l"))
    small = {k: v for k, v in small.items() if k in model.state_dict()}
    h = small["mid.weight"].shape[0]
    big_h = model.hidden
    if layers != model.layers:
        raise ValueError(f"can widen only with the same number of GRU layers: checkpoint {layers}, model {model.layers}")
    if h > big_h:
        raise ValueError(f"checkpoint is wider ({h}) than the model ({big_h})")
    new = {k: v.clone() for k, v in model.state_dict().items()}
    for name, old in small.items():
        t = new[name]
        if name in ("inp.weight", "inp.bias"):
            t[:h] = old
        elif name.startswith("gru.weight"):
            # [3 * H, H_in]: gate blocks r, z, n; old units' rows take the old weights and
            # zero from every new input (old units never see the new ones).
            for g in range(3):
                rows = t[g * big_h:g * big_h + h]
                rows.zero_()
                rows[:, :old.shape[1]] = old[g * h:(g + 1) * h]
        elif name.startswith("gru.bias"):
            for g in range(3):
                t[g * big_h:g * big_h + h] = old[g * h:(g + 1) * h]
        elif name == "mid.weight":
            t[:h].zero_()
            t[:h, :h] = old
        elif name == "mid.bias":
            t[:h] = old
        elif name == "out.weight":
            t.zero_()
            t[:, :h] = old
        else:  # out.bias, gate
            t.copy_(old)
    model.load_state_dict(new)


def load_rehopped(model: Restorer, other: dict, other_hop: int) -> None:
    """Warm-start ``model`` from the weights of a model with a longer hop (``other_hop`` a
    multiple of ``model.hop``), the same width and layers: a start for fine-tuning, not the
    same function.

    Bin ``k`` of the shorter frame spans bins ``r k .. r k + r - 1`` of the longer one
    (``r = other_hop / model.hop``), so its input weight is the sum of theirs (a feature that
    is the same in those bins reaches the GRU as before); each output gain takes the gain of
    the bin at its own frequency. The GRU, the middle layer and the gate are copied; the GRU
    now steps ``r`` times as often, which the fine-tuning has to learn.
    """
    if other_hop % model.hop or other_hop <= model.hop:
        raise ValueError(f"can re-hop only to a shorter hop that divides the checkpoint's: {other_hop} -> {model.hop}")
    r = other_hop // model.hop
    geo, old_geo = model.geometry, Geometry(other_hop)
    other = {k: v for k, v in other.items() if k in model.state_dict()}
    if other["mid.weight"].shape[0] != model.hidden or sum(k.startswith("gru.weight_ih_l") for k in other) != model.layers:
        raise ValueError("can re-hop only at the same width and number of GRU layers")
    new = {k: v.clone() for k, v in other.items()}
    old_in = other["inp.weight"]  # [H, old_bins + 1]: bins, then the frame's mean
    w = torch.zeros(model.hidden, geo.n_bins + 1, dtype=old_in.dtype)
    for k in range(geo.n_bins):
        w[:, k] = old_in[:, r * k:min(r * k + r, old_geo.n_bins)].sum(dim=1)
    w[:, -1] = old_in[:, -1]
    new["inp.weight"] = w
    rows = [s * old_geo.n_band + r * j for s in range(len(geo.shifts)) for j in range(geo.n_band)]
    new["out.weight"] = other["out.weight"][rows].clone()
    new["out.bias"] = other["out.bias"][rows].clone()
    model.load_state_dict(new)
