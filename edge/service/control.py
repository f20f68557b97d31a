"""The local control socket: `doorbell-edge ring` and integrators' scripts talk to the running daemon."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import ControlConfig
from edge.errors import EdgeError
from edge.layout import StateLayout
from edge.ratelimit import RateLimiter

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
BACKLOG = 64  # connections the kernel queues before accept(); a burst of clients waits there, not refused

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def socket_path(state_dir: Path) -> Path:
    return StateLayout.of(state_dir).control_socket


def send_command(state_dir: Path, command: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    path = socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise EdgeError(f"the daemon is not running (no control socket at {path})") from exc
        except PermissionError as exc:
            raise EdgeError(f"no permission to use {path}: run as the service user or a member of its group") from exc
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # The daemon may have answered and closed already ("busy", "timed out"): its reply is still to be
            # read. Never let this EPIPE reach the CLI, which would call it a closed stdout.
            sock.sendall(json.dumps(command).encode() + b"\n")
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    if not data:
        raise EdgeError(f"the daemon closed the control connection ({path}) without a reply; see its log")
    try:
        reply = json.loads(data or b"{}")
    except json.JSONDecodeError as exc:
        raise EdgeError(f"unreadable reply from the daemon: {data[:100]!r}") from exc
    return reply if isinstance(reply, dict) else {"ok": False, "error": "bad reply"}


def rate_limited(handler: Handler, limiter: RateLimiter, key: Callable[[dict[str, Any]], str]) -> Handler:
    """`handler` behind `limiter`: a refused request gets a "rate limited" reply saying when to retry.

    A key the limiter does not know (a camera that does not exist) goes to the handler, which refuses it.
    """

    def limited(request: dict[str, Any]) -> dict[str, Any]:
        name = key(request)
        if limiter.knows(name):
            refusal = limiter.check(name)
            if refusal is not None:
                return refusal.reply()
        return handler(request)

    return limited


class ControlServer:
    """Accepts one JSON line per connection and answers with one JSON line; unknown commands are refused.

    Every client is served on its own thread, at most `max_clients` at once (one more is told "busy"), and
    must send its line within `timeout_s` (else it is told "timed out"): an idle or slow client never holds
    up another, and the accept loop itself never waits on a client.
    """

    def __init__(self, state_dir: Path, handlers: dict[str, Handler], config: ControlConfig | None = None) -> None:
        self.path = socket_path(state_dir)
        self.handlers = handlers
        self.config = config or ControlConfig()
        self._slots = threading.BoundedSemaphore(self.config.max_clients)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.busy_refusals = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)  # the service user and its group only
        sock.listen(BACKLOG)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            if not self._slots.acquire(blocking=False):
                self.busy_refusals += 1
                if self.busy_refusals == 1 or self.busy_refusals % 1000 == 0:
                    log.warning("control: %d clients already connected (control.max_clients); refused %d so far",
                                self.config.max_clients, self.busy_refusals)
                self._answer(conn, {"ok": False, "busy": True,
                                    "error": f"busy: {self.config.max_clients} clients are already connected "
                                             "(control.max_clients); try again"}, timeout=0.2)
                continue
            try:
                threading.Thread(target=self._client, args=(conn,), name="control-client", daemon=True).start()
            except RuntimeError:  # no thread to be had: answer here rather than leave the client hanging
                self._slots.release()
                self._answer(conn, {"ok": False, "busy": True, "error": "busy: cannot start a thread; try again"},
                             timeout=0.2)

    def _client(self, conn: socket.socket) -> None:
        try:
            try:
                line = self._read_line(conn, time.monotonic() + self.config.timeout_s)
            except TimeoutError:
                reply: dict[str, Any] = {
                    "ok": False,
                    "error": f"timed out: no complete request line within {self.config.timeout_s:g} s "
                             "(control.timeout_s)",
                }
            except (OSError, ValueError) as exc:
                reply = {"ok": False, "error": f"cannot read the request: {exc}"}
            else:
                try:
                    reply = self._handle(line)
                except Exception as exc:  # a bad client must never take the daemon down
                    log.warning("control: bad request: %s", exc)
                    reply = {"ok": False, "error": str(exc)}
            self._answer(conn, reply, timeout=self.config.timeout_s)
        finally:
            self._slots.release()

    @staticmethod
    def _answer(conn: socket.socket, reply: dict[str, Any], timeout: float) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(timeout)  # a client that never reads cannot hold the thread for longer
            conn.sendall(json.dumps(reply).encode() + b"\n")

    @staticmethod
    def _read_line(conn: socket.socket, deadline: float) -> bytes:
        """The first line, read before `deadline` (monotonic) however slowly the bytes trickle in."""
        data = b""
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("request line not complete")
            conn.settimeout(remaining)
            chunk = conn.recv(1024)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST:
                raise ValueError(f"request longer than {MAX_REQUEST} bytes")
        return data.split(b"\n", 1)[0]

    def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from exc
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            raise ValueError("expected an object with a 'cmd' string")
        handler = self.handlers.get(request["cmd"])
        if handler is None:
            raise ValueError(f"unknown command {request['cmd']!r}; known: {', '.join(sorted(self.handlers))}")
        return handler(request)

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # a read-only state dir: the socket file stays, one line, no traceback
            log.warning("cannot remove the control socket %s: %s", self.path, exc)
