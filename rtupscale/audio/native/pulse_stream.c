/* See pulse_stream.h. The callbacks copy and count; nothing in them allocates, logs or
 * blocks (pa_stream_begin_write hands out the server's own shared-memory buffer). */
#include "pulse_stream.h"

#include <pulse/pulseaudio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ZERO_FRAMES 1024
#define MAX_CHANNELS 8
#define RETRY_US 1000     /* a request the ring could not meet is retried this often */
#define STARVED_US 50000  /* the ring empty this long: disarm (the worker re-arms) */
#define LATENCY_EVERY_US 250000 /* the streams' latencies are sampled this often (see latency_cb) */

struct rtu_pulse {
    pa_threaded_mainloop *ml;
    pa_context *ctx;
    pa_stream *rec, *play;
    void *cap_ring, *play_ring;
    rtu_ring_ops ops;
    size_t in_fb, out_fb; /* bytes per frame, both streams (float32 interleaved) */
    uint32_t rate, out_rate;
    rtu_stats st;
    int timed_out;
    int started; /* uncorked by the first rtu_arm() */
    uint64_t tlength_us;
    uint64_t report_window_us; /* the underflow report looks this far back: the queue's length and a margin */
    uint64_t empty_since; /* when a request first found the ring empty (0: it was not) */
    /* for the underflow report (all on the main-loop thread): the server's last requests
     * and capture deliveries, the playback's off time (see rtu_history), and the last
     * stretch of time the ring stayed empty */
    rtu_history req, cap;
    uint64_t off_since;           /* the playback is off since (0: it is on) */
    uint64_t off_from, off_to;    /* the last off time ended by rtu_arm(), for the next request */
    uint64_t empty_len, empty_end;
    /* the server's debt over time (see rtu_owed_area): written on the main-loop thread
     * under a sequence count, read by the worker without a lock */
    unsigned owed_seq;
    uint64_t owed_area;  /* frame-microseconds owed up to owed_since; since then st.owed_frames */
    uint64_t owed_since;
    pa_time_event *retry; /* disabled until a request is left partly unmet */
    pa_time_event *timer;
    pa_time_event *latency_ev; /* samples the streams' latencies (latency_cb) */
    int wake_fd; /* an eventfd the worker waits on: written after each capture delivery (-1: none) */
    float zeros[ZERO_FRAMES * MAX_CHANNELS];
};

#define INC(x) __atomic_fetch_add(&(x), 1, __ATOMIC_RELAXED)
#define ADD(x, n) __atomic_fetch_add(&(x), (n), __ATOMIC_RELAXED)
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---------------------------------------------------------------- the audio callbacks */
static void read_cb(pa_stream *s, size_t nbytes, void *u) {
    rtu_pulse *p = u;
    (void)nbytes;
    INC(p->st.callbacks_in);
    p->cap.at[p->cap.n++ % RTU_REQUEST_HISTORY] = now_us();
    while (pa_stream_readable_size(s) > 0) {
        const void *data;
        size_t n;
        if (pa_stream_peek(s, &data, &n) < 0) {
            STORE(p->st.failed, 1);
            return;
        }
        if (n == 0)
            break;
        long frames = (long)(n / p->in_fb);
        long written = 0;
        if (data == NULL) { /* a hole: the server lost this much capture */
            ADD(p->st.holes, (uint64_t)frames);
            while (written < frames) {
                long k = frames - written < ZERO_FRAMES ? frames - written : ZERO_FRAMES;
                long w = p->ops.write(p->cap_ring, p->zeros, k);
                written += w;
                if (w < k)
                    break;
            }
        } else {
            written = p->ops.write(p->cap_ring, data, frames);
        }
        if (written < frames) {
            INC(p->st.capture_full);
            ADD(p->st.capture_lost, (uint64_t)(frames - written));
        }
        ADD(p->st.frames_in, (uint64_t)frames);
        pa_stream_drop(s);
    }
    /* wake the worker: the audio is in its ring (a non-blocking 8-byte write to an
     * eventfd, the way JACK and PipeWire hand a period to the next thread; it cannot
     * block, and a counter that is already set just grows) */
    int fd = LOAD(p->wake_fd);
    if (fd >= 0) {
        uint64_t one = 1;
        ssize_t r = write(fd, &one, sizeof one);
        (void)r;
    }
}

static void schedule_retry(rtu_pulse *p) {
    if (p->retry)
        pa_context_rttime_restart(p->ctx, p->retry, pa_rtclock_now() + RETRY_US);
}

/* Write up to `nbytes` from the playback ring (all of it that is there). A request the ring
 * cannot meet in full is retried every RETRY_US with what the worker has added since: the
 * server does not ask again for bytes it asked for once. */
static void fill(rtu_pulse *p, pa_stream *s, size_t nbytes) {
    long want = (long)(nbytes / p->out_fb);
    if (want <= 0 || !LOAD(p->st.playing))
        return;
    long avail = p->ops.read_available(p->play_ring);
    if (avail <= 0) { /* the ring is empty; the server still has its queue */
        uint64_t t = now_us();
        if (!p->empty_since) {
            p->empty_since = t;
            INC(p->st.ring_empty);
        } else if (t - p->empty_since > STARVED_US) {
            /* starved (capture stopped, or the worker stalled): longer than any server
             * queue, so a gap. The worker re-arms with a fresh pre-fill once audio is back.
             * The stretch stays on record for an underflow reported after the re-arm. */
            STORE(p->st.playing, 0);
            INC(p->st.starved);
            p->empty_end = t;
            p->empty_len = t - p->empty_since;
            p->empty_since = 0;
            /* the server asks on until its queue has drained, then waits for us */
            p->off_since = t + p->tlength_us;
            return; /* every caller of fill() notes the debt after it: none now */
        }
        schedule_retry(p);
        return;
    }
    if (p->empty_since) {
        p->empty_end = now_us();
        p->empty_len = p->empty_end - p->empty_since;
        p->empty_since = 0;
    }
    long n = want < avail ? want : avail;
    if (n < want)
        schedule_retry(p);
    while (n > 0) {
        void *buf;
        size_t sz = (size_t)n * p->out_fb;
        if (pa_stream_begin_write(s, &buf, &sz) < 0 || sz < p->out_fb) {
            STORE(p->st.failed, 1);
            return;
        }
        long k = (long)(sz / p->out_fb);
        if (k > n)
            k = n;
        k = p->ops.read(p->play_ring, buf, k);
        if (pa_stream_write(s, buf, (size_t)k * p->out_fb, NULL, 0, PA_SEEK_RELATIVE) < 0) {
            STORE(p->st.failed, 1);
            return;
        }
        ADD(p->st.frames_out, (uint64_t)k);
        n -= k;
    }
}

/* What the server asked for and we have not written yet, frames (0 while corked or
 * disarmed: we write nothing then on purpose), into st.owed_frames and its time integral.
 * Called after every fill(). */
static uint64_t note_owed(rtu_pulse *p) {
    size_t w = pa_stream_writable_size(p->play);
    uint64_t owed = w == (size_t)-1 || !LOAD(p->st.playing) ? 0 : w / p->out_fb;
    uint64_t t = now_us();
    __atomic_fetch_add(&p->owed_seq, 1, __ATOMIC_RELAXED); /* odd: being written */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    if (p->owed_since)
        STORE(p->owed_area, LOAD(p->owed_area) + LOAD(p->st.owed_frames) * (t - p->owed_since));
    STORE(p->owed_since, t);
    STORE(p->st.owed_frames, owed);
    __atomic_fetch_add(&p->owed_seq, 1, __ATOMIC_RELEASE); /* even: done */
    return owed;
}

uint64_t rtu_owed_area(rtu_pulse *p, uint64_t *now) {
    unsigned s1, s2;
    uint64_t area, since, owed, t;
    do {
        s1 = __atomic_load_n(&p->owed_seq, __ATOMIC_ACQUIRE);
        area = LOAD(p->owed_area);
        since = LOAD(p->owed_since);
        owed = LOAD(p->st.owed_frames);
        t = now_us();
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        s2 = __atomic_load_n(&p->owed_seq, __ATOMIC_RELAXED);
    } while ((s1 & 1) || s1 != s2);
    *now = t;
    return since && t > since ? area + owed * (t - since) : area;
}

static void retry_cb(pa_mainloop_api *a, pa_time_event *e, const struct timeval *tv, void *u) {
    rtu_pulse *p = u;
    (void)a; (void)e; (void)tv;
    size_t w = pa_stream_writable_size(p->play);
    if (w != (size_t)-1 && w > 0)
        fill(p, p->play, w);
    note_owed(p);
}

static void write_cb(pa_stream *s, size_t nbytes, void *u) {
    rtu_pulse *p = u;
    INC(p->st.callbacks_out);
    unsigned i = p->req.n++ % RTU_REQUEST_HISTORY;
    p->req.at[i] = now_us();
    p->req.off_from[i] = p->off_from;
    p->req.off_to[i] = p->off_to;
    p->off_from = p->off_to = 0;
    fill(p, s, nbytes);
    p->req.val[i] = note_owed(p);
}

void rtu_look_back(const rtu_history *h, uint64_t off_from, uint64_t off_to, uint64_t now, uint64_t window_us,
                   rtu_lookback *out) {
    uint64_t t = now, longest = 0, peak = 0;
    unsigned n = h->n < RTU_REQUEST_HISTORY ? h->n : RTU_REQUEST_HISTORY;
    for (unsigned k = 0; k < n; k++) {
        unsigned i = (h->n - 1 - k) % RTU_REQUEST_HISTORY;
        if (now - t > window_us)
            break;
        uint64_t a = h->at[i], wait = t - a;
        uint64_t lo = off_from > a ? off_from : a, hi = off_to < t ? off_to : t;
        if (hi > lo)
            wait -= hi - lo;
        if (wait > longest)
            longest = wait;
        if (h->val[i] > peak)
            peak = h->val[i];
        off_from = h->off_from[i]; /* the off time before this event, in the wait that ends at it */
        off_to = h->off_to[i];
        t = a;
    }
    out->longest_wait_us = longest;
    out->peak = peak;
    out->oldest_us = t;
}

/* The server found our queue empty when its sink mixed ahead ("implicit underrun" in
 * PulseAudio's log). Data that arrives while the sink can still rewind is put in place;
 * the rest of the silence is played (measured here: gaps of 1 to 4 ms), and with prebuf
 * the stream resumes once a request's worth has arrived. Counted as an output underflow. */
static void underflow_cb(pa_stream *s, void *u) {
    rtu_pulse *p = u;
    (void)s;
    /* What led to it: a long wait between the server's requests reaching us (the server,
     * the machine or this thread stalled while our ring held audio), or a ring that stayed
     * empty while the server asked (the worker's output came late). The notice comes with
     * the server's next request, so both are looked for over the last requests, back as
     * far as the queue reaches (a stall that ended before that was covered since). The
     * history goes on across a re-arm: the notice of a stall can come after the worker
     * re-armed a ring that the stall left empty. */
    uint64_t now = now_us(), empty = 0;
    rtu_lookback req, cap;
    if (p->off_since)
        rtu_look_back(&p->req, p->off_since, now, now, p->report_window_us, &req);
    else
        rtu_look_back(&p->req, p->off_from, p->off_to, now, p->report_window_us, &req);
    /* the longest wait for capture over the same stretch: with none, the worker had
     * nothing to process, however fast it was (the source stalled, or delivered late) */
    rtu_look_back(&p->cap, 0, 0, now, p->report_window_us, &cap);
    if (p->empty_since)
        empty = now - p->empty_since;
    else if (p->empty_end && p->empty_end >= req.oldest_us)
        empty = p->empty_len;
    STORE(p->st.uf_request_gap_us, req.longest_wait_us);
    STORE(p->st.uf_ring_empty_us, empty);
    STORE(p->st.uf_owed_frames, req.peak);
    STORE(p->st.uf_capture_gap_us, cap.longest_wait_us);
    long backlog = p->ops.read_available(p->cap_ring);
    STORE(p->st.uf_capture_frames, (uint64_t)(backlog > 0 ? backlog : 0));
    /* release: a reader that sees the new count sees this report */
    __atomic_fetch_add(&p->st.underflows, 1, __ATOMIC_RELEASE);
}

/* The server's account of both streams' latencies, asked for every LATENCY_EVERY_US on the
 * main-loop thread (a timing update: one small request on our connection) and stored for
 * rtu_get_stats: Python reads them without the main-loop lock, and without asking pactl (a
 * new client of the server, and two processes, every second). The figures are those of
 * `pactl list sink-inputs / source-outputs`: our queue in the server (write index less
 * read index, at the update) and the sink's latency; the capture waiting in the server and
 * in transit, and the source's latency. (pa_stream_get_latency's interpolation between
 * updates was measured off by hundreds of ms on these streams.) */
static uint64_t queued_us(const pa_timing_info *ti, size_t fb, uint32_t rate) {
    if (ti->write_index_corrupt || ti->read_index_corrupt || ti->write_index <= ti->read_index)
        return 0;
    return (uint64_t)(ti->write_index - ti->read_index) / fb * 1000000u / rate;
}

static void timing_cb(pa_stream *s, int success, void *u) {
    rtu_pulse *p = u;
    const pa_timing_info *ti;
    if (!success || !(ti = pa_stream_get_timing_info(s)))
        return;
    if (s == p->play) {
        if (!ti->read_index_corrupt && !ti->write_index_corrupt) {
            __atomic_fetch_add(&p->st.lat_play_seq, 1, __ATOMIC_ACQ_REL);
            STORE(p->st.lat_play_read_index, ti->read_index);
            STORE(p->st.lat_play_write_index, ti->write_index);
            STORE(p->st.lat_play_at_us, (uint64_t)pa_timeval_load(&ti->timestamp));
            __atomic_fetch_add(&p->st.lat_play_seq, 1, __ATOMIC_RELEASE);
        }
        STORE(p->st.lat_playback_buffer_us, queued_us(ti, p->out_fb, p->out_rate));
        STORE(p->st.lat_sink_us, (uint64_t)ti->sink_usec);
        INC(p->st.lat_samples);
    } else {
        STORE(p->st.lat_capture_buffer_us, queued_us(ti, p->in_fb, p->rate));
        STORE(p->st.lat_source_us, (uint64_t)ti->source_usec);
    }
}

static void latency_cb(pa_mainloop_api *a, pa_time_event *e, const struct timeval *tv, void *u) {
    rtu_pulse *p = u;
    (void)a; (void)tv;
    pa_operation *o;
    /* capture first: a sample (counted by the playback's answer) then has both */
    if ((o = pa_stream_update_timing_info(p->rec, timing_cb, p)))
        pa_operation_unref(o);
    if ((o = pa_stream_update_timing_info(p->play, timing_cb, p)))
        pa_operation_unref(o);
    pa_context_rttime_restart(p->ctx, e, pa_rtclock_now() + LATENCY_EVERY_US);
}

/* ---------------------------------------------------------------- state and set-up */
static void context_state_cb(pa_context *c, void *u) {
    rtu_pulse *p = u;
    pa_context_state_t st = pa_context_get_state(c);
    if (st == PA_CONTEXT_FAILED || st == PA_CONTEXT_TERMINATED)
        STORE(p->st.failed, 1);
    pa_threaded_mainloop_signal(p->ml, 0);
}

static void stream_state_cb(pa_stream *s, void *u) {
    rtu_pulse *p = u;
    pa_stream_state_t st = pa_stream_get_state(s);
    if (st == PA_STREAM_FAILED || st == PA_STREAM_TERMINATED)
        STORE(p->st.failed, 1);
    pa_threaded_mainloop_signal(p->ml, 0);
}

static void timeout_cb(pa_mainloop_api *a, pa_time_event *e, const struct timeval *tv, void *u) {
    rtu_pulse *p = u;
    (void)a; (void)e; (void)tv;
    p->timed_out = 1;
    pa_threaded_mainloop_signal(p->ml, 0);
}

static void arm_timer(rtu_pulse *p, uint32_t ms) {
    pa_mainloop_api *api = pa_threaded_mainloop_get_api(p->ml);
    if (p->timer)
        api->time_free(p->timer);
    p->timed_out = 0;
    p->timer = pa_context_rttime_new(p->ctx, pa_rtclock_now() + (pa_usec_t)ms * 1000, timeout_cb, p);
}

static void disarm_timer(rtu_pulse *p) {
    if (p->timer) {
        pa_threaded_mainloop_get_api(p->ml)->time_free(p->timer);
        p->timer = NULL;
    }
}

static uint32_t usec_bytes(uint32_t us, uint32_t rate, size_t fb) {
    return (uint32_t)(((uint64_t)us * rate / 1000000) * fb);
}

/* Wait (lock held) until `s` is ready; 0 on success, else a message in err. */
static int wait_stream(rtu_pulse *p, pa_stream *s, const char *what, uint32_t timeout_ms, char *err, int errlen) {
    arm_timer(p, timeout_ms);
    for (;;) {
        pa_stream_state_t st = pa_stream_get_state(s);
        if (st == PA_STREAM_READY)
            break;
        if (st == PA_STREAM_FAILED || st == PA_STREAM_TERMINATED) {
            snprintf(err, errlen, "%s stream: %s", what, pa_strerror(pa_context_errno(p->ctx)));
            disarm_timer(p);
            return -1;
        }
        if (p->timed_out) {
            snprintf(err, errlen, "%s stream: not ready after %u ms", what, timeout_ms);
            disarm_timer(p);
            return -1;
        }
        pa_threaded_mainloop_wait(p->ml);
    }
    disarm_timer(p);
    return 0;
}

rtu_pulse *rtu_open(const char *client_name, const char *source, const char *sink,
                    const rtu_params *prm, void *capture_ring, void *playback_ring,
                    const rtu_ring_ops *ops, char *err, int errlen) {
    if (prm->channels < 1 || prm->channels > MAX_CHANNELS) {
        snprintf(err, errlen, "channels must be 1..%d, got %u", MAX_CHANNELS, prm->channels);
        return NULL;
    }
    rtu_pulse *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->wake_fd = -1;
    p->cap_ring = capture_ring;
    p->play_ring = playback_ring;
    p->ops = *ops;
    p->in_fb = p->out_fb = sizeof(float) * prm->channels;
    p->rate = prm->rate;
    p->out_rate = prm->out_rate;
    p->off_since = now_us(); /* corked until the first rtu_arm() */
    p->ml = pa_threaded_mainloop_new();
    if (!p->ml) {
        snprintf(err, errlen, "cannot create the PulseAudio main loop");
        free(p);
        return NULL;
    }
    p->ctx = pa_context_new(pa_threaded_mainloop_get_api(p->ml), client_name);
    pa_context_set_state_callback(p->ctx, context_state_cb, p);
    if (pa_context_connect(p->ctx, NULL, PA_CONTEXT_NOAUTOSPAWN, NULL) < 0) {
        snprintf(err, errlen, "cannot connect to the sound server: %s", pa_strerror(pa_context_errno(p->ctx)));
        rtu_close(p);
        return NULL;
    }
    pa_threaded_mainloop_lock(p->ml);
    if (pa_threaded_mainloop_start(p->ml) < 0) {
        pa_threaded_mainloop_unlock(p->ml);
        snprintf(err, errlen, "cannot start the PulseAudio main loop");
        rtu_close(p);
        return NULL;
    }
    arm_timer(p, prm->timeout_ms);
    for (;;) {
        pa_context_state_t st = pa_context_get_state(p->ctx);
        if (st == PA_CONTEXT_READY)
            break;
        if (!PA_CONTEXT_IS_GOOD(st) || p->timed_out) {
            if (p->timed_out)
                snprintf(err, errlen, "the sound server did not answer within %u ms", prm->timeout_ms);
            else
                snprintf(err, errlen, "cannot connect to the sound server: %s", pa_strerror(pa_context_errno(p->ctx)));
            disarm_timer(p);
            pa_threaded_mainloop_unlock(p->ml);
            rtu_close(p);
            return NULL;
        }
        pa_threaded_mainloop_wait(p->ml);
    }
    disarm_timer(p);
    p->retry = pa_context_rttime_new(p->ctx, PA_USEC_INVALID, retry_cb, p);

    pa_sample_spec in_ss = {PA_SAMPLE_FLOAT32LE, prm->rate, (uint8_t)prm->channels};
    pa_sample_spec out_ss = {PA_SAMPLE_FLOAT32LE, prm->out_rate, (uint8_t)prm->channels};
    pa_channel_map map;
    pa_channel_map_init_extend(&map, prm->channels, PA_CHANNEL_MAP_DEFAULT);
    /* the server must not move our streams: the playback's fallback could be our own
     * virtual sink (a feedback loop); a stream whose device is gone fails, and we reopen */
    pa_stream_flags_t flags = PA_STREAM_ADJUST_LATENCY | PA_STREAM_DONT_MOVE | PA_STREAM_AUTO_TIMING_UPDATE |
                              PA_STREAM_INTERPOLATE_TIMING;
    /* playback: EARLY_REQUESTS, so that the sink's own latency is one request (minreq) and
     * the whole tlength is our queue ahead of it, asked for a request at a time: the queue
     * covers a stall of the server's requests, or of our worker, for about
     * tlength - 2 minreq (with ADJUST_LATENCY the server would keep only minreq of it as
     * cover; see pulse_streams.py). rtu_arm() uncorks it. */
    pa_stream_flags_t play_flags = (flags & ~PA_STREAM_ADJUST_LATENCY) | PA_STREAM_EARLY_REQUESTS | PA_STREAM_START_CORKED;

    /* Node names of their own on PipeWire (pipewire-pulse names a stream's node after the
     * client otherwise): `pw-play --target rtupscale` must find the virtual sink, not one of
     * our streams, which would also be called "rtupscale". */
    pa_proplist *pl_rec = pa_proplist_new(), *pl_play = pa_proplist_new();
    pa_proplist_sets(pl_rec, "node.name", "rtupscale-capture");
    pa_proplist_sets(pl_play, "node.name", "rtupscale-playback");
    p->rec = pa_stream_new_with_proplist(p->ctx, "rtupscale capture", &in_ss, &map, pl_rec);
    p->play = pa_stream_new_with_proplist(p->ctx, "rtupscale playback", &out_ss, &map, pl_play);
    pa_proplist_free(pl_rec);
    pa_proplist_free(pl_play);
    if (!p->rec || !p->play) {
        snprintf(err, errlen, "cannot create the streams: %s", pa_strerror(pa_context_errno(p->ctx)));
        pa_threaded_mainloop_unlock(p->ml);
        rtu_close(p);
        return NULL;
    }
    pa_stream_set_state_callback(p->rec, stream_state_cb, p);
    pa_stream_set_read_callback(p->rec, read_cb, p);
    pa_stream_set_state_callback(p->play, stream_state_cb, p);
    pa_stream_set_write_callback(p->play, write_cb, p);
    pa_stream_set_underflow_callback(p->play, underflow_cb, p);

    pa_buffer_attr ra = {(uint32_t)-1, (uint32_t)-1, (uint32_t)-1, (uint32_t)-1,
                         usec_bytes(prm->fragsize_us, prm->rate, p->in_fb)};
    uint32_t tl = usec_bytes(prm->tlength_us, prm->out_rate, p->out_fb);
    p->tlength_us = prm->tlength_us;
    p->report_window_us = (uint64_t)prm->tlength_us + 10000;
    uint32_t mr = prm->minreq_us ? usec_bytes(prm->minreq_us, prm->out_rate, p->out_fb) : (uint32_t)-1;
    /* prebuf one request: after an underrun the server waits for that much, then rewinds
     * the sink to put the late data in place where it still can (prebuf 0 would instead
     * drop the part that is late: measured as clicks here). The worker, not the server,
     * holds the pre-fill. */
    uint32_t pb = mr != (uint32_t)-1 ? mr : (uint32_t)p->out_fb;
    pa_buffer_attr pa_ = {(uint32_t)-1, tl, pb, mr, (uint32_t)-1};

    if (pa_stream_connect_record(p->rec, source, &ra, flags) < 0 ||
        wait_stream(p, p->rec, "capture", prm->timeout_ms, err, errlen) < 0 ||
        pa_stream_connect_playback(p->play, sink, &pa_, play_flags, NULL, NULL) < 0 ||
        wait_stream(p, p->play, "playback", prm->timeout_ms, err, errlen) < 0) {
        if (!err[0])
            snprintf(err, errlen, "cannot open the streams: %s", pa_strerror(pa_context_errno(p->ctx)));
        pa_threaded_mainloop_unlock(p->ml);
        rtu_close(p);
        return NULL;
    }
    p->latency_ev = pa_context_rttime_new(p->ctx, pa_rtclock_now() + LATENCY_EVERY_US, latency_cb, p);
    pa_threaded_mainloop_unlock(p->ml);
    return p;
}

void rtu_set_wake(rtu_pulse *p, int fd) {
    STORE(p->wake_fd, fd);
}

void rtu_arm(rtu_pulse *p) {
    pa_threaded_mainloop_lock(p->ml);
    STORE(p->st.playing, 1);
    if (p->off_since) { /* the wait while corked or disarmed is not the server's */
        uint64_t t = now_us();
        if (t > p->off_since) {
            p->off_from = p->off_since;
            p->off_to = t;
        }
        p->off_since = 0;
    }
    size_t w = pa_stream_writable_size(p->play);
    if (w != (size_t)-1)
        fill(p, p->play, w);
    note_owed(p);
    if (!p->started) {
        pa_operation *o = pa_stream_cork(p->play, 0, NULL, NULL);
        if (o)
            pa_operation_unref(o);
        p->started = 1;
    }
    pa_threaded_mainloop_unlock(p->ml);
}

void rtu_granted(rtu_pulse *p, uint32_t *fragsize, uint32_t *tlength, uint32_t *minreq, uint32_t *prebuf) {
    pa_threaded_mainloop_lock(p->ml);
    const pa_buffer_attr *r = pa_stream_get_buffer_attr(p->rec);
    const pa_buffer_attr *w = pa_stream_get_buffer_attr(p->play);
    *fragsize = r ? r->fragsize : 0;
    *tlength = w ? w->tlength : 0;
    *minreq = w ? w->minreq : 0;
    *prebuf = w ? w->prebuf : 0;
    pa_threaded_mainloop_unlock(p->ml);
}

void rtu_get_stats(rtu_pulse *p, rtu_stats *o) {
    o->frames_in = LOAD(p->st.frames_in);
    o->frames_out = LOAD(p->st.frames_out);
    o->callbacks_in = LOAD(p->st.callbacks_in);
    o->callbacks_out = LOAD(p->st.callbacks_out);
    o->capture_lost = LOAD(p->st.capture_lost);
    o->capture_full = LOAD(p->st.capture_full);
    o->underflows = __atomic_load_n(&p->st.underflows, __ATOMIC_ACQUIRE);
    o->ring_empty = LOAD(p->st.ring_empty);
    o->starved = LOAD(p->st.starved);
    o->holes = LOAD(p->st.holes);
    o->uf_request_gap_us = LOAD(p->st.uf_request_gap_us);
    o->uf_ring_empty_us = LOAD(p->st.uf_ring_empty_us);
    o->uf_owed_frames = LOAD(p->st.uf_owed_frames);
    o->uf_capture_frames = LOAD(p->st.uf_capture_frames);
    o->playing = LOAD(p->st.playing);
    o->failed = LOAD(p->st.failed);
    o->uf_capture_gap_us = LOAD(p->st.uf_capture_gap_us);
    o->owed_frames = LOAD(p->st.owed_frames);
    o->lat_samples = LOAD(p->st.lat_samples);
    o->lat_capture_buffer_us = LOAD(p->st.lat_capture_buffer_us);
    o->lat_source_us = LOAD(p->st.lat_source_us);
    o->lat_playback_buffer_us = LOAD(p->st.lat_playback_buffer_us);
    o->lat_sink_us = LOAD(p->st.lat_sink_us);
    for (int tries = 0; tries < 100; tries++) {
        uint64_t seq = __atomic_load_n(&p->st.lat_play_seq, __ATOMIC_ACQUIRE);
        if (seq & 1)
            continue;
        o->lat_play_read_index = LOAD(p->st.lat_play_read_index);
        o->lat_play_write_index = LOAD(p->st.lat_play_write_index);
        o->lat_play_at_us = LOAD(p->st.lat_play_at_us);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&p->st.lat_play_seq, __ATOMIC_RELAXED) == seq) {
            o->lat_play_seq = seq;
            break;
        }
    }
}

void rtu_close(rtu_pulse *p) {
    if (!p)
        return;
    if (p->ml)
        pa_threaded_mainloop_stop(p->ml);
    /* the loop is stopped: no callback runs from here on */
    if (p->timer) {
        pa_threaded_mainloop_get_api(p->ml)->time_free(p->timer);
        p->timer = NULL;
    }
    if (p->retry) {
        pa_threaded_mainloop_get_api(p->ml)->time_free(p->retry);
        p->retry = NULL;
    }
    if (p->latency_ev) {
        pa_threaded_mainloop_get_api(p->ml)->time_free(p->latency_ev);
        p->latency_ev = NULL;
    }
    if (p->rec) {
        pa_stream_set_read_callback(p->rec, NULL, NULL);
        pa_stream_set_state_callback(p->rec, NULL, NULL);
        pa_stream_disconnect(p->rec);
        pa_stream_unref(p->rec);
    }
    if (p->play) {
        pa_stream_set_write_callback(p->play, NULL, NULL);
        pa_stream_set_state_callback(p->play, NULL, NULL);
        pa_stream_set_underflow_callback(p->play, NULL, NULL);
        pa_stream_disconnect(p->play);
        pa_stream_unref(p->play);
    }
    if (p->ctx) {
        pa_context_set_state_callback(p->ctx, NULL, NULL);
        pa_context_disconnect(p->ctx);
        pa_context_unref(p->ctx);
    }
    if (p->ml)
        pa_threaded_mainloop_free(p->ml);
    free(p);
}
