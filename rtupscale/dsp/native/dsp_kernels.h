/* The worker's per-block DSP loops in C: the x4 polyphase interpolator and the output
 * rate adjuster's cubic resampling. Each does what its numpy reference in rtupscale/dsp
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

/* Catmull-Rom resampling: output frame j (j < n) is read at position t + j * step of each
 * channel's row of buf (row c at buf + c * buf_stride), from the samples at floor - 1 ..
 * floor + 2; written interleaved: out[j * channels + c]. */
void rtu_cubic_read(const float *buf, long buf_stride, long channels, double t, double step, long n, float *out);

#endif
