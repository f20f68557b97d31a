"""Misbehaving clients for the page's connection guard: raw TCP and TLS sockets from any 127.0.0.0/8 address (all
loopback on Linux), and the page served by the real uvicorn thread to aim them at."""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from edge.clock import FakeClock
from edge.web.server import WebServer

from .browser import free_port
from .conftest import NOW
from .helpers import Site, make_config, setup_owner

HOST = "doorbell.test"
DEADLINE_S = 30.0  # generous: waiting for something to happen, never asserting it was quick
T = TypeVar("T")


class Page:
    """The page in its thread, on 127.0.0.1:<port>, with an owner set up (so /login is a login page)."""

    def __init__(self, tmp: Path, **web: Any) -> None:
        self.port = free_port()
        self.config = make_config(tmp, listen="127.0.0.1", port=self.port, **web)
        self.clock = FakeClock(NOW)
        site = Site(self.config, self.clock)
        setup_owner(site, site.client())
        assert site.tls.ca is not None
        self.ca = site.tls.ca
        self.server = WebServer(self.config, self.clock, lambda: None, lambda e: None)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def tcp(self, source: str) -> socket.socket:
        """A plain TCP connection from `source` that never starts TLS."""
        return socket.create_connection(("127.0.0.1", self.port), timeout=DEADLINE_S, source_address=(source, 0))

    def tls(self, source: str) -> ssl.SSLSocket:
        """A TLS connection from `source`, handshake done (raises if the page refuses it)."""
        raw = self.tcp(source)
        try:
            return self.context().wrap_socket(raw, server_hostname=HOST)
        except BaseException:
            raw.close()
            raise

    def https(self, source: str) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=DEADLINE_S, context=self.context(),
                                           source_address=(source, 0))

    def get(self, path: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
        conn = self.https(source)
        try:
            conn.request("GET", path, headers={"Host": HOST})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@contextmanager
def serving(tmp: Path, **web: Any) -> Iterator[Page]:
    page = Page(tmp, **web)
    page.server.start()
    try:
        assert page.server.started.wait(20), "the page did not start"
        yield page
    finally:
        page.server.stop()


def refused(page: Page, source: str) -> bool:
    """True if a TLS connection from `source` is closed before its handshake completes."""
    try:
        page.tls(source).close()
    except (ssl.SSLError, OSError):
        return True
    return False


def eventually(attempt: Callable[[], T]) -> T:
    """attempt() once it stops failing with a connection error (the page frees a slot when its loop sees the
    close), up to the deadline."""
    end = time.monotonic() + DEADLINE_S
    while True:
        try:
            return attempt()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def closed_by_server(sock: socket.socket, deadline_s: float = DEADLINE_S) -> bool:
    """Waits (up to the deadline) for the server to close `sock`: end of stream, a reset or a TLS error.
    Anything the server sends first is read and dropped; False if it is still open at the deadline."""
    end = time.monotonic() + deadline_s
    try:
        while (left := end - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except TimeoutError:
        return False
    except OSError:  # a reset, or TLS cut without its goodbye (ssl.SSLError is an OSError)
        return True
    return False


def still_open(sock: socket.socket, wait_s: float = 0.3) -> bool:
    """True if `sock` has not been closed by the server (nothing to read within wait_s)."""
    return not closed_by_server(sock, wait_s)


def head(path: str = "/healthz", method: str = "GET", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
