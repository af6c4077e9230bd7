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

void rtu_sinc_read(const float *buf, long buf_stride, long channels, double t, double step, long n,
                   const float *table, const float *slope, long phases, long taps, float *out) {
    long half = taps / 2;
    for (long j = 0; j < n; j++) {
        double pos = t + (double)j * step;
        double fl = floor(pos);
        long i = (long)fl;
        double p = (pos - fl) * (double)phases;
        double pfl = floor(p);
        long row = (long)pfl;
        float a = (float)(p - pfl);
        const float *w0 = table + row * taps, *dw = slope + row * taps;
        for (long c = 0; c < channels; c++) {
            const float *x = buf + c * buf_stride + i - half + 1;
            float acc = 0.0f;
            for (long k = 0; k < taps; k++)
                acc += x[k] * (w0[k] + a * dw[k]);
            out[j * channels + c] = acc;
        }
    }
}
