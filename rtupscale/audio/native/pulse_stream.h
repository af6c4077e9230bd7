/* A capture and a playback stream on a PulseAudio (or pipewire-pulse) server, whose
 * callbacks only copy between the server and two PortAudio ring buffers (rtmixer's rings,
 * reached through the function pointers in rtu_ring_ops).
 *
 * Threads: libpulse's threaded main loop runs every callback; the worker thread owns the
 * other side of both rings and calls rtu_arm() (rarely: start, refill after a gap); the
 * main thread opens and closes. Counters, and the streams' latencies (sampled by a timer of
 * the main loop), are written on the main-loop thread and read with relaxed atomic loads by
 * rtu_get_stats(): reading them takes no lock.
 */
#ifndef RTU_PULSE_STREAM_H
#define RTU_PULSE_STREAM_H

#include <stdint.h>

enum { RTU_REQUEST_HISTORY = 64 }; /* requests remembered for the underflow report */

typedef struct rtu_pulse rtu_pulse;

typedef struct {
    long (*read_available)(void *ring);
    long (*write)(void *ring, const void *data, long frames);
    long (*read)(void *ring, void *data, long frames);
} rtu_ring_ops;

typedef struct {
    uint32_t rate;            /* capture rate, Hz; playback runs at out_rate */
    uint32_t out_rate;
    uint32_t channels;
    uint32_t fragsize_us;     /* capture: the server's fragment (ADJUST_LATENCY) */
    uint32_t tlength_us;      /* playback: the server-side queue (EARLY_REQUESTS: all of it ahead of the sink) */
    uint32_t minreq_us;       /* playback: the request size, and the sink's latency; 0 = the server's choice */
    uint32_t timeout_ms;      /* connecting and opening, each */
} rtu_params;

typedef struct {
    uint64_t frames_in;        /* captured frames handed to the capture ring (holes as zeros) */
    uint64_t frames_out;       /* frames written to the server */
    uint64_t callbacks_in;
    uint64_t callbacks_out;
    uint64_t capture_lost;     /* frames that did not fit the capture ring */
    uint64_t capture_full;     /* callbacks that found the capture ring full */
    uint64_t ring_empty;       /* times a request found the playback ring empty (retried) */
    uint64_t starved;          /* times the ring stayed empty past STARVED_US (disarmed) */
    uint64_t underflows;       /* the server ran out of our queue (see underflow_cb) */
    uint64_t holes;            /* frames of capture the server marked as lost */
    uint64_t owed_frames;      /* the server asked for these and we have not written them yet (after the last fill) */
    /* At the last underflow (see underflow_cb), what led to it: */
    uint64_t uf_request_gap_us; /* the longest wait between the server's last requests */
    uint64_t uf_ring_empty_us;  /* the longest the playback ring stayed empty, over the same requests */
    uint64_t uf_owed_frames;    /* the most the server had asked for and we had not written, after each of those requests */
    uint64_t uf_capture_frames; /* the capture ring's fill (the worker's backlog) when the underflow was reported */
    uint64_t uf_capture_gap_us; /* the longest wait between capture deliveries, over the same stretch */
    /* The server's latencies of our streams, sampled every 250 ms on the main-loop thread
     * (lat_samples counts the samples; 0: none yet), us: */
    uint64_t lat_samples;
    uint64_t lat_capture_buffer_us;  /* capture waiting in the server and in transit */
    uint64_t lat_source_us;          /* the source's own latency */
    uint64_t lat_playback_buffer_us; /* our queue in the server, ahead of the sink */
    uint64_t lat_sink_us;            /* the sink's own latency */
    /* The playback stream's indexes (bytes) at the last timing update and when it was
     * current (us, pa_timing_info.timestamp): how much the sink has taken from our queue
     * over time (the DAC gap check, see PulseStreams.dac_consumed). lat_play_seq is odd
     * while they are written: rtu_get_stats reads them whole. */
    int64_t lat_play_read_index;
    int64_t lat_play_write_index;
    uint64_t lat_play_at_us;
    uint64_t lat_play_seq;
    int32_t playing;           /* armed, and not starved since */
    int32_t failed;            /* the context or a stream failed (server gone, device gone) */
} rtu_stats;

/* Connect and open both streams (capture of `source`, playback to `sink`; NULL: defaults).
 * On failure returns NULL with a message in err. The streams run from the start; playback
 * writes nothing until rtu_arm(). */
rtu_pulse *rtu_open(const char *client_name, const char *source, const char *sink,
                    const rtu_params *params, void *capture_ring, void *playback_ring,
                    const rtu_ring_ops *ops, char *err, int errlen);

/* After each capture delivery, write 1 to the eventfd `fd` (-1: stop), which the worker
 * waits on. The caller keeps fd open until rtu_close() or rtu_set_wake(p, -1). */
void rtu_set_wake(rtu_pulse *p, int fd);
/* Start writing the playback ring to the server (takes the main-loop lock). */
void rtu_arm(rtu_pulse *p);

/* The buffer attributes the server granted, bytes. */
void rtu_granted(rtu_pulse *p, uint32_t *fragsize, uint32_t *tlength, uint32_t *minreq, uint32_t *prebuf);

void rtu_get_stats(rtu_pulse *p, rtu_stats *out);

/* What the server has been owed, summed over time: frame-microseconds since the streams
 * opened, up to `*now` (us, CLOCK_MONOTONIC, set here). The difference of two calls over
 * the time between them is the average debt (frames) over that time: the drift control's
 * measure, unlike st.owed_frames, which is the debt after the last fill. No lock. */
uint64_t rtu_owed_area(rtu_pulse *p, uint64_t *now);

/* A history of events for the underflow report: the server's requests, or the capture
 * deliveries. A ring of the last RTU_REQUEST_HISTORY; `n` counts all recorded, the newest
 * is at (n - 1) % RTU_REQUEST_HISTORY. */
typedef struct {
    uint64_t at[RTU_REQUEST_HISTORY];       /* when (us, CLOCK_MONOTONIC) */
    uint64_t val[RTU_REQUEST_HISTORY];      /* requests: frames asked for and not written after the fill */
    uint64_t off_from[RTU_REQUEST_HISTORY]; /* requests: [off_from, off_to) before this one, the playback */
    uint64_t off_to[RTU_REQUEST_HISTORY];   /*   was off (corked, or disarmed and the queue drained); 0 0: not */
    unsigned n;
} rtu_history;

typedef struct {
    uint64_t longest_wait_us; /* the longest wait between two events, or from the newest to now */
    uint64_t peak;            /* the largest val of those events */
    uint64_t oldest_us;       /* the oldest event looked at (now if none) */
} rtu_lookback;

/* The underflow report's look back over `h`, from `now` back over at most `window_us`.
 * Of each wait, the part that overlaps the playback's off time before the event that ends
 * it (for the wait up to now: [off_from, off_to)) is not counted: the server had nothing
 * to ask then. Pure: the streams' reports use it, and the tests call it. */
void rtu_look_back(const rtu_history *h, uint64_t off_from, uint64_t off_to, uint64_t now, uint64_t window_us,
                   rtu_lookback *out);

/* Stop the main loop and free everything. NULL is allowed. */
void rtu_close(rtu_pulse *p);

#endif
