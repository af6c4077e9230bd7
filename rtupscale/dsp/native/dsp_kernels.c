/* See dsp_kernels.h. */
#include "dsp_kernels.h"

#include <math.h>

void rtu_interp4(const float *buf, long buf_stride, long channels, long n, const float *rev, long taps,
                 float *out, long out_stride) {
    for (long c = 0; c < channels; c++) {
        const float *x = buf + c * buf_stride;
        float *y = out + c * out_stride;
        for (long i = 0; i < n; i++) {
            float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            const float *xi = x + i;
            for (long k = 0; k < taps; k++) {
                float v = xi[k];
                const float *h = rev + 4 * k;
                a0 += v * h[0];
                a1 += v * h[1];
                a2 += v * h[2];
                a3 += v * h[3];
            }
            y[4 * i + 0] = a0;
            y[4 * i + 1] = a1;
            y[4 * i + 2] = a2;
            y[4 * i + 3] = a3;
        }
    }
}

void rtu_cubic_read(const float *buf, long buf_stride, long channels, double t, double step, long n, float *out) {
    for (long j = 0; j < n; j++) {
        double pos = t + (double)j * step;
        double fl = floor(pos);
        long i = (long)fl;
        float f = (float)(pos - fl);
        /* the weights as the numpy reference computes them (float32) */
        float f2 = f * f;
        float w2 = (f2 * f - f2) * 0.5f;
        float wm1 = (f2 - f) * 0.5f - w2;
        float w0 = w2 * 3.0f - f2 + 1.0f;
        float w1 = 1.0f - (wm1 + w0 + w2);
        for (long c = 0; c < channels; c++) {
            const float *x = buf + c * buf_stride + i;
            out[j * channels + c] = x[0] * w0 + x[-1] * wm1 + x[1] * w1 + x[2] * w2;
        }
    }
}
