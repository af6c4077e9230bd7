"""How long an app moved onto a newly loaded PulseAudio null sink waits for its first sound.

A measurement, not a test. Starts a private PulseAudio, plays a 48 kHz tone with pacat to a
sink A, loads a null sink B, records B's monitor with parec (20 ms), moves the tone to B and
prints the time from the move to the first loud sample on the monitor.

    python tests/audio/null_sink_wait.py MODE [WAIT_S]

MODE: ``direct`` (move at once), ``park`` (via a third null sink first, as a rate switch
does), ``kick`` / ``kickpark`` (suspend and resume B after parec connects, before the move:
the daemon does not do it: see docs/measurements/2026-12-06-rate-switch-and-holes.md), ``after`` (suspend and resume B after the move).
WAIT_S: seconds between loading B (parec connecting) and the move (default 0.2).
"""
from pathlib import Path
import sys, time, subprocess, tempfile, threading, numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.audio.pulse_harness import PulseServer
root = Path(tempfile.mkdtemp(prefix='nullsink-'))
srv = PulseServer(root); srv.start()
env = srv.env
def pactl(*a): return subprocess.run(['pactl', *a], env=env, capture_output=True, text=True, check=True).stdout.strip()
mode = sys.argv[1]
try:
    a = pactl('load-module', 'module-null-sink', 'sink_name=A', 'rate=44100')
    t = np.arange(int(20 * 48000)) / 48000
    tone = np.repeat(0.5 * np.sin(2 * np.pi * 997 * t)[:, None], 2, 1).astype(np.float32).tobytes()
    app = subprocess.Popen(['pacat', '--raw', '--format=float32le', '--rate=48000', '--channels=2', '-d', 'A', '--client-name=tone'],
                           env=env, stdin=subprocess.PIPE)
    def feed():
        try:
            app.stdin.write(tone)
            app.stdin.close()
        except (BrokenPipeError, ValueError):
            pass  # the app was killed at the end
    threading.Thread(target=feed, daemon=True).start()
    time.sleep(1.5)
    idx = [l.split()[0] for l in pactl('list', 'short', 'sink-inputs').splitlines() if l]
    if mode == 'park':
        pactl('load-module', 'module-null-sink', 'sink_name=P', 'rate=48000')
        for i in idx: pactl('move-sink-input', i, 'P')
        time.sleep(0.3)
    b = pactl('load-module', 'module-null-sink', 'sink_name=B', 'rate=48000')
    rec = subprocess.Popen(['parec', '--raw', '--format=float32le', '--rate=48000', '--channels=2', '--latency-msec=20', '-d', 'B.monitor'],
                           env=env, stdout=subprocess.PIPE)
    buf = bytearray()
    threading.Thread(target=lambda: [buf.extend(c) for c in iter(lambda: rec.stdout.read(4096), b'')], daemon=True).start()
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.2)
    if 'kick' in mode:
        pactl('suspend-sink', 'B', '1'); pactl('suspend-sink', 'B', '0')
    n0 = len(buf); t0 = time.monotonic()
    for i in idx: pactl('move-sink-input', i, 'B')
    if 'after' in mode:
        pactl('suspend-sink', 'B', '1'); pactl('suspend-sink', 'B', '0')
    first = None
    while time.monotonic() - t0 < 5:
        y = np.frombuffer(bytes(buf[n0 - n0 % 8:]), np.float32)
        loud = np.flatnonzero(np.abs(y) > 0.05)
        if loud.size: first = time.monotonic() - t0; break
        time.sleep(0.005)
    print(f"{mode} wait={sys.argv[2] if len(sys.argv)>2 else 0.2}: sound on B.monitor {first if first is None else round(first,3)} s after the move; rec bytes before move {n0}")
    app.kill(); rec.kill()
finally:
    srv.stop()
