/* Keep CPUs out of their idle halt: one busy thread per CPU at SCHED_IDLE (see cpu_awake.c). */
int rtu_awake_start(const int *cpus, int n, char *err, int errlen);
int rtu_awake_running(void);
void rtu_awake_stop(void);
