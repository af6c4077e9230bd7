"""The worker thread: capture ring -> Engine -> drift control -> playback ring.

It re-arms the streams, collects their xrun counts, and marks its session failed on a
stall. It never logs or waits on a lock: it appends ``(level, message)`` to a deque that
the main thread logs. Everything it uses per block is allocated when the session or
pipeline is built.
"""

from __future__ import annotations

import threading
import time

from rtupscale.audio import priority

WORKER_POLL_S = 0.001
"""The worker's wait when no block is waiting, with streams that cannot wake it (PortAudio:
rtmixer's callbacks cannot signal; 1000 wake-ups/s, a few % of a core)."""
WORKER_WAIT_S = 0.005
"""The longest wait with streams whose capture callback wakes the worker (the timeout only
paces the bookkeeping while no audio arrives)."""
STATS_EVERY_S = 0.2
STALL_S = 2.0
"""No capture callback for this long (or a device that takes no audio) is a stall: recover."""
LATE_WAKE_S = 0.002
"""A worker back from its wait this much later than the wait may last counts as a late wake."""


class Worker:
    """Runs ``session``'s pipeline on its own thread until :meth:`stop`."""

    def __init__(self, session, events):
        self.session = session
        self.events = events
        self.stopping = False
        self.started = threading.Event()
        """Set once the worker has its priority (``session.state.priority``)."""
        self.thread = threading.Thread(target=self._run, name="rtupscale-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Ask the loop to end and wait up to ``timeout_s``; True when it ended."""
        self.stopping = True
        if self.thread is threading.current_thread():
            return True  # the loop ends when this call returns to it
        if self.thread.is_alive():
            self.thread.join(timeout=timeout_s)
        return not self.thread.is_alive()

    def _run(self) -> None:
        s = self.session
        try:
            s.state.priority = priority.promote(0, priority.WORKER_PRIO)
            self.started.set()
            self.loop()
        except Exception as e:  # a broken session must not kill the daemon: recover instead
            why = f"worker error: {type(e).__name__}: {e}"
            s.fail(why)
            self.events.append(("error", why))

    def loop(self) -> None:
        s = self.session
        st = s.state
        events = self.events
        streams = s.streams
        cap_ring, play_ring = s.cap_ring, s.play_ring
        next_stats = time.monotonic() + STATS_EVERY_S
        last_callbacks = last_callbacks_out = -1
        wait_s = WORKER_WAIT_S if streams.wakes_worker else WORKER_POLL_S
        last_capture_progress = last_playback_progress = time.monotonic()
        waited_from = None
        cap_after = None  # the capture ring's level after the last steps (woken streams)
        while not self.stopping:
            now = time.monotonic()
            st.heartbeat = now
            if waited_from is not None:
                # back from the wait later than it may last: the worker was kept from
                # running (the GIL held by another thread, or preempted), not slow
                late = now - waited_from - wait_s
                if late > LATE_WAKE_S:
                    st.late_wakes += 1
                if late > st.max_late_wake_s:
                    st.max_late_wake_s = late
            pipe = s.pipeline
            if s.pending_pipeline is not None and pipe.engine.model_gain == 0.0:
                new = s.pending_pipeline
                new.adopt(pipe)
                s.pipeline = pipe = new
                s.engine = new.engine
                s.pending_pipeline = None
                events.append(("info", f"switched to block {new.block_size}, prefill {new.prefill_frames} frames"))
            # Woken by a capture delivery, the worker would see the capture ring at its
            # highest every time: for the status's average it counts the level its last
            # steps left, which stands until this delivery (the playback level, for the
            # drift control, is taken now)
            pipe.sample_levels(now, streams.playing, cap_level=cap_after, owed=streams.owed_average())
            if not streams.playing and cap_ring.fill >= pipe.block_size:
                if st.first_audio_at is None:
                    st.first_audio_at = now
                pipe.prefill(streams.arm_frames)
                streams.arm_playback()
            while pipe.step():
                pass
            cap_ended, play_ended = streams.poll()
            if cap_ended:
                pipe.engine.request_reset()
                events.append(("warning", "capture ring overflowed (the worker fell behind): state reset"))
            if play_ended and not s.fading_out:
                pipe.engine.request_reset()
                events.append(("warning", f"playback ring ran dry (level {play_ring.fill} frames): refilled, state reset"))
            if now >= next_stats:
                next_stats = now + STATS_EVERY_S
                x = streams.xruns
                under_before = x.output_underflows
                before = x.input_overflows + under_before
                new_xruns = streams.collect_stats()
                if new_xruns:
                    st.xrun_times.append((now, new_xruns))
                    pipe.engine.request_reset()
                    why = f"; last underflow: {x.last_underflow}" if x.output_underflows > under_before and x.last_underflow else ""
                    events.append(("warning", f"device xrun (input overflows {x.input_overflows}, output underflows {x.output_underflows}, was {before}): state reset{why}"))
                if x.callbacks_in != last_callbacks:
                    last_callbacks = x.callbacks_in
                    last_capture_progress = now
                elif now - last_capture_progress > STALL_S:
                    s.fail(f"no audio from {s.capture_ep} for {STALL_S:g} s (device gone or server down)")
                if x.callbacks_out != last_callbacks_out or not streams.playing:
                    last_callbacks_out = x.callbacks_out
                    last_playback_progress = now
                elif now - last_playback_progress > STALL_S:
                    s.fail(f"{s.playback_ep} took no audio for {STALL_S:g} s (device gone or server down)")
            if streams.wakes_worker:
                cap_after = cap_ring.fill
            waited_from = time.monotonic()
            streams.wait(wait_s)
