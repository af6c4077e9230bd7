"""Record two PulseAudio sources at once, with PortAudio's capture timestamps (a test tool).

    python record_monitors.py OUT.npz SECONDS SOURCE_A RATE_A SOURCE_B RATE_B

Both streams are opened in this one process through ALSA's ``pulse`` device, routed with
PULSE_SOURCE; every callback stores where its block starts, PortAudio's
``inputBufferAdcTime`` and ``currentTime`` for it, and ``time.monotonic()`` when it ran,
so that the two recordings can be put on one clock (the delay between them is measured,
not assumed) and a place in them on the clock of the stall probe and the daemon's
``xrun_times``. Prints ``READY`` once both streams run.
Input overflows of its own streams are counted and saved (``a_overflows``, ``b_overflows``):
a gap in the recording must not be mistaken for one in the daemon's output. It runs at
normal priority: at SCHED_FIFO, its PortAudio threads spun on both cores once the sound
server was killed under them (seen in a clean-clone CI run), starving everything else.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np


def main() -> int:
    out, seconds = sys.argv[1], float(sys.argv[2])
    specs = [(sys.argv[3], int(sys.argv[4])), (sys.argv[5], int(sys.argv[6]))]
    import sounddevice as sd

    streams, bufs, stamps, pos, overflows = [], [], [], [], [0, 0]
    for k, (source, rate) in enumerate(specs):
        n = int((seconds + 5) * rate)
        buf = np.zeros((n, 2), np.float32)
        st = np.zeros((int((seconds + 5) * 2000), 4), np.float64)
        bufs.append(buf)
        stamps.append(st)
        pos.append([0, 0])

        def cb(indata, frames, t, status, k=k, buf=buf, st=st):
            if status.input_overflow:
                overflows[k] += 1
            p = pos[k]
            i = p[0]
            if i + frames <= buf.shape[0] and p[1] < st.shape[0]:
                buf[i:i + frames] = indata
                st[p[1]] = (i, t.inputBufferAdcTime, t.currentTime, time.monotonic())
                p[1] += 1
                p[0] = i + frames

        os.environ["PULSE_SOURCE"] = source
        s = sd.InputStream(device="pulse", channels=2, samplerate=rate, dtype="float32", latency=float(os.environ.get("RECORD_LATENCY", "0.02")), callback=cb)
        streams.append(s)
    for s in streams:
        s.start()
    print("READY", flush=True)
    time.sleep(seconds)
    for s in streams:
        s.stop()
        s.close()
    np.savez(
        out,
        a=bufs[0][: pos[0][0]], a_stamps=stamps[0][: pos[0][1]], a_rate=specs[0][1],
        b=bufs[1][: pos[1][0]], b_stamps=stamps[1][: pos[1][1]], b_rate=specs[1][1],
        a_overflows=overflows[0], b_overflows=overflows[1],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
