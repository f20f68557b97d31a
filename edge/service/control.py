"""The local control socket: `doorbell-edge ring` and integrators' scripts talk to the running daemon."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096

Handler = Callable[[dict[str, Any]], dict[str, Any]]


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


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
        sock.sendall(json.dumps(command).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    try:
        reply = json.loads(data or b"{}")
    except json.JSONDecodeError as exc:
        raise EdgeError(f"unreadable reply from the daemon: {data[:100]!r}") from exc
    return reply if isinstance(reply, dict) else {"ok": False, "error": "bad reply"}


class ControlServer:
    """Accepts one JSON line per connection and answers with one JSON line; unknown commands are refused."""

    def __init__(self, state_dir: Path, handlers: dict[str, Handler]) -> None:
        self.path = socket_path(state_dir)
        self.handlers = handlers
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(self.path))
        os.chmod(self.path, 0o660)  # the service user and its group only
        sock.listen(8)
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
            with conn:
                conn.settimeout(2.0)
                try:
                    reply = self._handle(self._read_line(conn))
                except Exception as exc:  # a bad client must never take the daemon down
                    log.warning("control: bad request: %s", exc)
                    reply = {"ok": False, "error": str(exc)}
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(reply).encode() + b"\n")

    @staticmethod
    def _read_line(conn: socket.socket) -> bytes:
        data = b""
        while b"\n" not in data:
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
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
