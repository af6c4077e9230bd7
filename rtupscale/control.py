"""Talking to the running daemon: a unix socket (mode 0600) and optional Prometheus metrics.

Protocol: one JSON object per connection, one JSON answer, e.g. ``{"cmd": "status"}`` ->
``{"ok": true, "status": {...}}``; ``{"cmd": "bypass", "on": true}`` -> ``{"ok": true}``.
Anything else (bytes that are not JSON, JSON that is not an object, a request that does
not arrive within ``CONNECTION_DEADLINE_S``) is answered with ``{"ok": false, "error": ...}``.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from rtupscale.errors import UserError
from rtupscale.metrics import CONTENT_TYPE, prometheus_text
from rtupscale.lockfile import LockError, LockHeld, OwnerLock

log = logging.getLogger("rtupscale.control")

SOCKET_NAME = "rtupscale.sock"
CLIENT_TIMEOUT_S = 3.0
CONNECTION_DEADLINE_S = 2.0
"""A client has this long to send its whole request (and the metrics endpoint waits this
long for each read); then its connection is answered with an error and closed."""
MAX_REQUEST_BYTES = 65536
"""A request longer than this is refused unread past this point."""
MAX_CLIENTS = 64
"""Connections served at once (each by its own thread); more wait in the listen backlog."""
LISTEN_BACKLOG = 512
ACCEPT_POLL_S = 0.5
DRAIN_S = 0.5
"""After the answer, what a client still sends is read and dropped for at most this long."""
METRICS_DEADLINE_S = 5.0
"""A metrics connection is closed this long after it was accepted, whatever its state."""
MAX_SOCKET_PATH = 107
"""The longest unix socket path Linux takes, bytes (``sun_path`` holds 108 with the NUL)."""


class ControlError(UserError):
    """No daemon answers, or the socket cannot be used."""


def socket_path(setting: str) -> Path:
    """``control.socket``: ``auto`` = ``$XDG_RUNTIME_DIR/rtupscale.sock``."""
    if setting != "auto":
        return Path(os.path.expanduser(setting))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if not runtime:
        raise ControlError(
            "control.socket: auto needs $XDG_RUNTIME_DIR (set by a login session); set control.socket to a path"
        )
    return Path(runtime) / SOCKET_NAME


def request(path: Path, message: dict, timeout: float = CLIENT_TIMEOUT_S) -> dict:
    """Send one request to the daemon at ``path``; raises ControlError if none answers."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(str(path))
        s.sendall(json.dumps(message).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except (FileNotFoundError, ConnectionRefusedError):
        raise ControlError(f"no daemon running (nothing answers on {path}); start one with `rtupscale run`") from None
    except socket.timeout:
        raise ControlError(f"the daemon on {path} did not answer within {timeout:g} s") from None
    except OSError as e:
        raise ControlError(f"cannot talk to the daemon on {path}: {e.strerror or e}") from None
    finally:
        s.close()
    try:
        return json.loads(b"".join(chunks))
    except json.JSONDecodeError:
        raise ControlError(f"the daemon on {path} sent an unreadable answer") from None


class _MetricsServer(http.server.ThreadingHTTPServer):
    """One thread per connection, at most ``MAX_CLIENTS`` at a time (more are closed at
    once); each connection's reads time out after ``CONNECTION_DEADLINE_S``."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address, handler):
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        log.debug("metrics client %s: %s", client_address, sys.exc_info()[1])


@dataclass
class _Listener:
    """The control socket, its lock and its accept thread."""

    path: Path
    sock: socket.socket
    lock: OwnerLock
    thread: threading.Thread | None = None
    stopping: bool = False


def lock_path(path: Path) -> Path:
    """The single-instance lock beside the control socket: ``SOCKET.lock``."""
    return path.with_name(path.name + ".lock")


class ControlServer:
    """The daemon's side: the control socket and the optional Prometheus endpoint.

    Each connection is served by its own thread with a deadline and a bounded read, so no
    client (silent, slow, hostile) can hold the others up; a bad request gets an error
    answer. One daemon per socket: a ``flock`` on ``SOCKET.lock``, held for the server's
    life, decides (see :mod:`rtupscale.lockfile`); a socket file is removed only by the
    holder of that lock, and a path that exists and is not a socket is refused.
    """

    def __init__(self, daemon, control_config):
        self.daemon = daemon
        self.config = control_config
        self.path = socket_path(control_config.socket)
        self._listener: _Listener | None = None
        self._http: _MetricsServer | None = None
        self._answer_lock = threading.Lock()
        """Calls into the daemon (status, bypass) run one at a time."""
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Listen on the socket (and the metrics port). Raises ControlError with one line
        (another daemon holds the socket, the path is not a socket, the port is taken);
        then nothing is left behind."""
        listener = self._open_listener(self.path)
        try:
            if self.config.metrics_port:
                self._http = self._bind_metrics(self.config.metrics_port)
        except BaseException:
            self._close_listener(listener)
            raise
        self._start_listener(listener)
        if self._http is not None:
            self._start_metrics()

    def stop(self) -> None:
        if self._listener is not None:
            self._close_listener(self._listener)
            self._listener = None
        self._stop_metrics()

    def restart(self, control_config) -> None:
        """Move to a changed control config. Everything new is opened before anything old
        is closed: on a ControlError (port taken, socket refused) the running socket and
        metrics stay exactly as they were."""
        if control_config == self.config:
            return
        new_path = socket_path(control_config.socket)
        port, old_port = control_config.metrics_port, self.config.metrics_port
        new_http = self._bind_metrics(port) if port and port != old_port else None
        listener = None
        if new_path != self.path:
            try:
                listener = self._open_listener(new_path)
            except BaseException:
                if new_http is not None:
                    new_http.server_close()
                raise
        if listener is not None:
            if self._listener is not None:
                self._close_listener(self._listener)
            self._start_listener(listener)
        if port != old_port:
            self._stop_metrics()
            if new_http is not None:
                self._http = new_http
                self._start_metrics()
        self.config, self.path = control_config, new_path
        log.info("control socket %s%s", self.path, f", metrics on 127.0.0.1:{port}" if port else "")

    # -- the socket ---------------------------------------------------------------------
    def _open_listener(self, p: Path) -> _Listener:
        """Lock, check and bind ``p``; a listening socket, mode 0600."""
        if len(os.fsencode(p)) > MAX_SOCKET_PATH:
            raise ControlError(f"control.socket: {str(p)[:80]} is longer than {MAX_SOCKET_PATH} bytes, the limit for a unix socket")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ControlError(f"control.socket: cannot create the folder {p.parent} ({e.strerror})") from None
        lock = OwnerLock(lock_path(p))
        try:
            lock.acquire()
        except LockHeld as e:
            who = f"pid {e.pid}" if e.pid else "another process"
            raise ControlError(f"another rtupscale daemon is running ({who} holds {e.path}); stop it first") from None
        except LockError as e:
            raise ControlError(f"control.socket: {e}") from None
        try:
            self._remove_stale_socket(p)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # the socket is created 0600: only this user may control us
            try:
                sock.bind(str(p))
            except OSError as e:
                sock.close()
                raise ControlError(f"control.socket: cannot create {p} ({e.strerror})") from None
            finally:
                os.umask(old)
            os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)
            sock.listen(LISTEN_BACKLOG)
            sock.settimeout(ACCEPT_POLL_S)
        except BaseException:
            lock.release()
            raise
        return _Listener(p, sock, lock)

    @staticmethod
    def _remove_stale_socket(p: Path) -> None:
        """Remove a socket left at ``p`` by a daemon that died (the caller holds the lock,
        so no live daemon owns it); refuse anything that is not a socket."""
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return
        except OSError as e:
            raise ControlError(f"control.socket: cannot use {p} ({e.strerror})") from None
        if not stat.S_ISSOCK(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a file"
            raise ControlError(f"control.socket: {p} exists and is {kind}, not a socket; move it away or choose another path")
        p.unlink()
        log.info("removed the socket %s left by a daemon that is gone", p)

    def _start_listener(self, listener: _Listener) -> None:
        listener.thread = threading.Thread(target=self._accept, args=(listener,), name="rtupscale-control", daemon=True)
        self._listener = listener
        listener.thread.start()

    def _close_listener(self, listener: _Listener) -> None:
        """Stop accepting, remove the socket file (ours: we hold its lock), release the lock."""
        listener.stopping = True
        if listener.thread is not None:
            listener.thread.join(timeout=2.0)
        listener.sock.close()
        try:
            if stat.S_ISSOCK(os.lstat(listener.path).st_mode):
                listener.path.unlink()
        except OSError:
            pass
        listener.lock.release()

    def _accept(self, listener: _Listener) -> None:
        while not listener.stopping:
            if not self._slots.acquire(timeout=ACCEPT_POLL_S):
                continue  # MAX_CLIENTS connections in service: the rest wait in the backlog
            try:
                conn, _ = listener.sock.accept()
            except socket.timeout:
                self._slots.release()
                continue
            except OSError:
                self._slots.release()
                if listener.stopping:
                    break
                log.warning("control socket: accept failed; retrying", exc_info=True)
                time.sleep(ACCEPT_POLL_S)
                continue
            try:
                threading.Thread(target=self._serve_client, args=(conn,), name="rtupscale-control-client", daemon=True).start()
            except RuntimeError:  # no thread to be had: answer nothing, keep accepting
                conn.close()
                self._slots.release()

    def _serve_client(self, conn: socket.socket) -> None:
        """One connection: read the request (deadline, size limit), answer, close."""
        try:
            with conn:
                answer = self.answer(_read_request(conn))
                conn.settimeout(CONNECTION_DEADLINE_S)
                conn.sendall(json.dumps(answer, default=str).encode())
                _drain(conn)
        except OSError:
            pass  # the client went away
        finally:
            self._slots.release()

    def answer(self, data: bytes | None) -> dict:
        """The answer to one raw request; every problem becomes ``{"ok": false, "error": ...}``."""
        if data is None:
            return {"ok": False, "error": f"bad request: no complete request within {CONNECTION_DEADLINE_S:g} s"}
        if len(data) > MAX_REQUEST_BYTES:
            return {"ok": False, "error": f"bad request: longer than {MAX_REQUEST_BYTES} bytes"}
        try:
            req = json.loads(data.decode("utf-8")) if data.strip() else {}
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            return {"ok": False, "error": f"bad request: not JSON ({str(e)[:80]})"}
        if not isinstance(req, dict):
            return {"ok": False, "error": f'bad request: expected a JSON object such as {{"cmd": "status"}}, got {type(req).__name__}'}
        with self._answer_lock:
            try:
                return self.handle(req)
            except Exception as e:  # a bug in a handler: answered, logged, never fatal
                log.exception("control request %s failed", str(req)[:80])
                return {"ok": False, "error": f"internal error: {type(e).__name__}: {str(e)[:200]}"}

    def handle(self, req: dict) -> dict:
        cmd = req.get("cmd")
        if cmd == "ping":
            return {"ok": True}
        if cmd == "status":
            return {"ok": True, "status": self.daemon.status()}
        if cmd == "bypass":
            on = req.get("on")
            if not isinstance(on, bool):
                return {"ok": False, "error": "bypass: 'on' must be true or false"}
            self.daemon.set_bypass(on)
            return {"ok": True, "bypass": on}
        return {"ok": False, "error": f"unknown command {str(cmd)[:80]!r}; allowed: ping, status, bypass"}

    # -- Prometheus -----------------------------------------------------------------------
    def _bind_metrics(self, port: int) -> _MetricsServer:
        """A metrics server bound to 127.0.0.1:``port`` (not serving yet)."""
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = CONNECTION_DEADLINE_S  # per read: an idle client is dropped

            def setup(self):
                super().setup()
                # however slowly a client trickles its request, its connection ends here
                self._cutoff = threading.Timer(METRICS_DEADLINE_S, _shut, args=(self.connection,))
                self._cutoff.daemon = True
                self._cutoff.start()

            def finish(self):
                self._cutoff.cancel()
                super().finish()

            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.rstrip("/") not in ("/metrics", ""):
                    self.send_error(404)
                    return
                try:
                    with server._answer_lock:
                        body = prometheus_text(server.daemon.status()).encode()
                except Exception:
                    log.exception("metrics: the status could not be read")
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        try:
            return _MetricsServer(("127.0.0.1", port), Handler)
        except OSError as e:
            raise ControlError(
                f"control.metrics_port: cannot listen on 127.0.0.1:{port} ({e.strerror}); "
                "choose another port, or 0 for no metrics"
            ) from None

    def _start_metrics(self) -> None:
        threading.Thread(target=self._http.serve_forever, name="rtupscale-metrics", daemon=True).start()
        log.info("Prometheus metrics on http://127.0.0.1:%d/metrics", self._http.server_address[1])

    def _stop_metrics(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


def _shut(conn: socket.socket) -> None:
    """End both directions of ``conn``: a read blocked on it returns at once."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _drain(conn: socket.socket) -> None:
    """End our side and discard what the client still sends (for a short, bounded time):
    closing with unread bytes would reset the connection and lose the answer."""
    conn.shutdown(socket.SHUT_WR)
    deadline = time.monotonic() + DRAIN_S
    left_bytes = MAX_REQUEST_BYTES * 16
    while left_bytes > 0:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        conn.settimeout(left)
        try:
            chunk = conn.recv(65536)
        except (socket.timeout, OSError):
            return
        if not chunk:
            return
        left_bytes -= len(chunk)


def _read_request(conn: socket.socket) -> bytes | None:
    """The request's bytes, up to a newline, the client's end of writing or just past
    ``MAX_REQUEST_BYTES``; None if the client did not finish within ``CONNECTION_DEADLINE_S``
    (however slowly it trickles)."""
    deadline = time.monotonic() + CONNECTION_DEADLINE_S
    data = bytearray()
    while b"\n" not in data and len(data) <= MAX_REQUEST_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        conn.settimeout(left)
        try:
            chunk = conn.recv(4096)
        except socket.timeout:
            return None
        if not chunk:
            break
        data += chunk
    return bytes(data)
