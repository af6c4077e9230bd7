/* The worker's per-block DSP loops in C: the x4 polyphase interpolator and the output
 * rate adjuster's windowed-sinc resampling. Each does what its numpy reference in rtupscale/dsp
 * and rtupscale/audio/drift.py does (tests/dsp/test_kernels.py holds them to it), in one
 * pass and without temporaries: measured on this project's machine, the numpy versions
 * cost 0.4 and 0.2 ms per 128-frame block once the caches had gone cold between blocks.
 * No allocation, no locking; the caller owns every buffer. */
#ifndef RTU_DSP_KERNELS_H
#define RTU_DSP_KERNELS_H

/* out[c * out_stride + 4 i + p] = sum_k buf[c * buf_stride + i + k] * rev[4 k + p],
 * for channels c, frames i < n, phases p < 4, taps k < taps (buf holds taps - 1 + n
 * frames per channel: the history, then the block). */
void rtu_interp4(const float *buf, long buf_stride, long channels, long n, const float *rev, long taps,
                 float *out, long out_stride);

/* Variable-ratio resampling with a windowed-sinc kernel: output frame j (j < n) is read at
 * position t + j * step of each channel's row of buf (row c at buf + c * buf_stride), from
 * the taps samples floor - taps/2 + 1 .. floor + taps/2, weighted by row r = floor(frac *
 * phases) of table plus (frac * phases - r) times the same row of slope (both [phases,
 * taps]); written interleaved: out[j * channels + c]. */
void rtu_sinc_read(const float *buf, long buf_stride, long channels, double t, double step, long n,
                   const float *table, const float *slope, long phases, long taps, float *out);

#endif
