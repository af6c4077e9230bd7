/* Keep CPUs out of their idle halt, for `latency.keep_cpus_awake` (rtupscale.audio.cpuawake).
 *
 * One thread per CPU (at most MAX_THREADS), pinned to it and set to SCHED_IDLE, spins
 * with a pause instruction until stopped. SCHED_IDLE runs only when nothing else on that
 * CPU wants to: any other thread (ours, the sound server's, an app's) preempts it at once,
 * so the CPU time it takes is time that would have been spent halted. What it buys: a CPU
 * that never halts takes a wake-up (a timer, or another thread's signal) without first
 * being woken itself. On a virtual machine a halted vCPU is descheduled by the host, and
 * each wake-up of it waits for the host's scheduler; a chain of them (sound server, our
 * stream thread, the sound server again) adds up. What it costs: every idle CPU draws full power.
 *
 * No GIL, no allocation in the loop; each thread is created on its CPU and set to
 * SCHED_IDLE at once by its creator. */
#define _GNU_SOURCE
#include "cpu_awake.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define MAX_THREADS 256

static int stop_flag;
static pthread_t threads[MAX_THREADS];
static int n_threads;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

static void *spin(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&stop_flag, __ATOMIC_RELAXED))
        cpu_relax();
    return NULL;
}

/* Stop and join the spinners; the caller holds `lock`. */
static void join_all_locked(void) {
    __atomic_store_n(&stop_flag, 1, __ATOMIC_RELAXED);
    for (int k = 0; k < n_threads; k++)
        pthread_join(threads[k], NULL);
    n_threads = 0;
}

/* Start one spinner on each of `cpus[0..n)`. Returns how many run (all or none: on an
 * error the ones started are stopped and `err` says why, return -1); while they run, a
 * second call returns their number. */
int rtu_awake_start(const int *cpus, int n, char *err, int errlen) {
    pthread_mutex_lock(&lock);
    if (n_threads) { /* idempotent: the running set stays */
        int k = n_threads;
        pthread_mutex_unlock(&lock);
        return k;
    }
    __atomic_store_n(&stop_flag, 0, __ATOMIC_RELAXED);
    if (n > MAX_THREADS)
        n = MAX_THREADS;
    for (int i = 0; i < n; i++) {
        if (cpus[i] < 0 || cpus[i] >= CPU_SETSIZE) {
            snprintf(err, (size_t)errlen, "no CPU %d", cpus[i]);
            join_all_locked();
            pthread_mutex_unlock(&lock);
            return -1;
        }
        pthread_attr_t attr;
        struct sched_param sp = {0};
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(cpus[i], &set);
        const char *what = "create";
        int r = pthread_attr_init(&attr);
        if (!r) r = pthread_attr_setaffinity_np(&attr, sizeof set, &set);
        if (!r) r = pthread_attr_setstacksize(&attr, 64 * 1024);
        if (!r) r = pthread_create(&threads[n_threads], &attr, spin, NULL);
        pthread_attr_destroy(&attr);
        /* glibc's attributes take no SCHED_IDLE: the policy is set right after creation
         * (the kernel takes it for any thread of ours; the new thread has only begun to spin) */
        if (!r) {
            n_threads++;
            what = "set SCHED_IDLE for";
            r = pthread_setschedparam(threads[n_threads - 1], SCHED_IDLE, &sp);
        }
        if (r) {
            snprintf(err, (size_t)errlen, "cannot %s a spinner thread on CPU %d: %s", what, cpus[i], strerror(r));
            join_all_locked();
            pthread_mutex_unlock(&lock);
            return -1;
        }
    }
    pthread_mutex_unlock(&lock);
    return n_threads;
}

int rtu_awake_running(void) {
    pthread_mutex_lock(&lock);
    int n = n_threads;
    pthread_mutex_unlock(&lock);
    return n;
}

void rtu_awake_stop(void) {
    pthread_mutex_lock(&lock);
    join_all_locked();
    pthread_mutex_unlock(&lock);
}
