"""Slow and flooding clients against the real page thread (edge/web/guard.py): one address cannot take the page
from another, a half-sent head, a bare TCP connection and a dribbled body are closed after their deadlines, the
page's own limit caps its sockets, refusals (bad requests too) are logged once per client, and normal keep-alive
still works."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from edge.config import WebConfig
from edge.web import server as web_server

from .slowclient import DEADLINE_S, HOST, closed_by_server, eventually, head, refused, serving, still_open

pytestmark = pytest.mark.slow

DEFAULT_PER_CLIENT = WebConfig().max_connections_per_client
HALF_HEAD = f"GET /healthz HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: slow".encode()


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.close()


@pytest.mark.parametrize("per_client", [DEFAULT_PER_CLIENT, 100])
def test_eighty_slow_connections_from_one_address_leave_the_page_to_another(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, per_client: int) -> None:
    """The old server answered 503 to everyone while 64 such connections were open. With the default limit (12)
    the address gets 12 and the rest are refused; with a limit above 80 (all of them held) others still get in."""
    caplog.set_level(logging.INFO)
    with serving(tmp_path, max_connections_per_client=per_client, header_timeout_s=300) as page:
        held: list[socket.socket] = []
        refusals = 0
        try:
            for _ in range(80):
                try:
                    sock = page.tls("127.0.0.2")
                except OSError:
                    refusals += 1
                    continue
                sock.sendall(HALF_HEAD)
                held.append(sock)
            assert len(held) == min(80, per_client) and refusals == 80 - len(held)
            assert page.get("/healthz") == (200, b"ok")
            status, body = page.get("/login")
            assert status == 200 and b'name="password"' in body
            assert page.get("/healthz", source="127.0.0.3") == (200, b"ok")
            assert still_open(held[0]) and still_open(held[-1])  # nothing was closed to make room
        finally:
            close_all(held)
    lines = [r.getMessage() for r in caplog.records if "refused 127.0.0.2" in r.getMessage()]
    if per_client == DEFAULT_PER_CLIENT:
        assert lines == [f"web: refused 127.0.0.2: {per_client} connections from this client are open "
                         "(web.max_connections_per_client)"]  # 68 refusals, one line
    else:
        assert lines == []
    assert "Exceeded concurrency limit" not in caplog.text


def test_the_per_client_limit_holds_and_a_closed_connection_gives_its_slot_back(tmp_path: Path) -> None:
    with serving(tmp_path, max_connections_per_client=3, header_timeout_s=300) as page:
        held = [page.tls("127.0.0.4") for _ in range(3)]
        try:
            assert refused(page, "127.0.0.4")  # the 4th
            assert refused(page, "127.0.0.4")
            assert page.get("/healthz", source="127.0.0.5") == (200, b"ok")  # another address is not affected
            held.pop().close()
            held.append(eventually(lambda: page.tls("127.0.0.4")))
        finally:
            close_all(held)


def test_the_page_holds_at_most_max_connections_in_all(tmp_path: Path) -> None:
    """Many addresses together can fill the page (then nobody new gets in), but never past its own cap: the
    daemon's open files stay bounded whatever the network does."""
    with serving(tmp_path, max_connections=8, max_connections_per_client=2, handshake_timeout_s=60) as page:
        held = [page.tcp(f"127.0.1.{i}") for i in range(1, 5) for _ in range(2)]  # 8 bare TCP connections
        try:
            extra = page.tcp("127.0.1.9")
            assert closed_by_server(extra)  # closed on arrival, before TLS
            extra.close()
            assert refused(page, "127.0.0.1")
            assert all(still_open(s, 0.05) for s in held)
            held.pop().close()
            assert eventually(lambda: page.get("/healthz")) == (200, b"ok")
        finally:
            close_all(held)


def test_a_half_sent_head_is_closed_after_the_header_timeout_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with serving(tmp_path, header_timeout_s=1) as page:
        slow = [page.tls("127.0.0.2") for _ in range(3)]
        try:
            for sock in slow:
                sock.sendall(HALF_HEAD)
            assert all(closed_by_server(s) for s in slow)
            idle = page.tls("127.0.0.6")  # TLS done, nothing sent: closed too (politely, not logged)
            assert closed_by_server(idle)
            idle.close()
            assert page.get("/healthz") == (200, b"ok")
        finally:
            close_all(slow)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("web: refused")]
    assert lines == ["web: refused 127.0.0.2: no whole request head within 1 s"]


def test_a_kept_alive_connection_cannot_stall_its_next_head(tmp_path: Path) -> None:
    """uvicorn's keep-alive timer stops at the first byte of the next request; the head deadline does not."""
    with serving(tmp_path, header_timeout_s=1) as page:
        sock = page.tls("127.0.0.2")
        try:
            sock.sendall(head("/healthz"))
            sock.settimeout(DEADLINE_S)
            answer = b""
            while not answer.endswith(b"ok"):
                answer += sock.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            sock.sendall(b"G")
            assert closed_by_server(sock)
        finally:
            sock.close()


def test_bare_tcp_connections_that_never_start_tls_are_closed_and_give_their_slots_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with serving(tmp_path, handshake_timeout_s=1, max_connections_per_client=2) as page:
        bare = [page.tcp("127.0.0.7") for _ in range(2)]
        half_hello = page.tcp("127.0.0.8")
        half_hello.sendall(bytes.fromhex("16030100c8010000c40303"))  # the start of a ClientHello, then nothing
        try:
            assert all(closed_by_server(s) for s in [*bare, half_hello])
            assert eventually(lambda: page.get("/healthz", source="127.0.0.7")) == (200, b"ok")
        finally:
            close_all([*bare, half_hello])
    assert "web: refused 127.0.0.7: no TLS handshake within 1 s" in caplog.text
    assert "web: refused 127.0.0.8: no TLS handshake within 1 s" in caplog.text


def test_bad_requests_get_400_and_one_log_line_per_client(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with serving(tmp_path) as page:
        for _ in range(5):
            sock = page.tls("127.0.0.2")
            try:
                sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
                sock.settimeout(DEADLINE_S)
                assert sock.recv(4096).startswith(b"HTTP/1.1 400")
            finally:
                sock.close()
    lines = [r.getMessage() for r in caplog.records if "Invalid HTTP request" in r.getMessage()]
    assert lines == ["web: refused 127.0.0.2: 400: Invalid HTTP request received."]  # uvicorn's own are off


def login_post(length: int) -> tuple[bytes, bytes]:
    body = b"username=alice&password=" + b"x" * (length - len(b"username=alice&password="))
    headers = head("/login", "POST", Content_Type="application/x-www-form-urlencoded", Content_Length=str(length))
    return headers, body


def test_a_dribbled_body_is_closed_and_an_honest_slow_one_is_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The body must bring body_min_rate bytes/s over each body_timeout_s window (here 200 bytes per 2 s)."""
    caplog.set_level(logging.INFO)
    with serving(tmp_path, body_timeout_s=2, body_min_rate=100) as page:
        headers, body = login_post(6000)
        honest = page.tls("127.0.0.2")
        try:
            honest.sendall(headers)
            for i in range(0, len(body), 1000):  # 1000 bytes every 0.2 s: slow, but far above the minimum
                time.sleep(0.2)
                honest.sendall(body[i:i + 1000])
            honest.settimeout(DEADLINE_S)
            answer = honest.recv(4096)
            # read in full: the app answered (its CSRF check refuses the form), the guard did not cut it off
            assert answer.startswith(b"HTTP/1.1 403"), answer[:80]
        finally:
            honest.close()

        dribbler = page.tls("127.0.0.9")
        sent = 0
        try:
            dribbler.sendall(headers)
            end = time.monotonic() + DEADLINE_S
            with contextlib.suppress(OSError):
                while sent < len(body) and time.monotonic() < end and still_open(dribbler, 0.25):
                    dribbler.sendall(body[sent:sent + 1])  # 4 bytes a second
                    sent += 1
            assert closed_by_server(dribbler, 1.0)
            assert sent < len(body)
        finally:
            dribbler.close()
        assert page.get("/healthz") == (200, b"ok")
    assert "web: refused 127.0.0.9: request body slower than 100 bytes/s over 2 s" in caplog.text
    assert "refused 127.0.0.2" not in caplog.text
    assert "Exception in ASGI application" not in caplog.text  # the cut-off form is no crash of the app


def test_a_client_waiting_for_100_continue_is_not_blamed_for_a_page_slow_to_ask(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The body windows pass while the page has not asked for the body yet (here it waits 3 windows)."""
    caplog.set_level(logging.INFO)
    real = web_server.build_web

    def slow_to_read(*args: Any, **kwargs: Any) -> Any:
        app, tls = real(*args, **kwargs)

        async def late(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "POST":
                await asyncio.sleep(3)
            await app(scope, receive, send)

        return late, tls

    monkeypatch.setattr(web_server, "build_web", slow_to_read)
    with serving(tmp_path, body_timeout_s=1, body_min_rate=100) as page:
        headers, body = login_post(2000)
        sock = page.tls("127.0.0.2")
        try:
            sock.sendall(headers.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
            sock.settimeout(DEADLINE_S)
            assert sock.recv(4096).startswith(b"HTTP/1.1 100")
            sock.sendall(body)
            assert sock.recv(4096).startswith(b"HTTP/1.1 403")  # read and answered by the app
        finally:
            sock.close()
    assert "web: refused" not in caplog.text


def test_a_normal_request_and_a_kept_alive_second_one_still_work(tmp_path: Path) -> None:
    with serving(tmp_path) as page:
        conn = page.https("127.0.0.1")
        try:
            for path, expected in (("/healthz", b"ok"), ("/healthz", b"ok")):
                conn.request("GET", path, headers={"Host": HOST})
                response = conn.getresponse()
                assert (response.status, response.read()) == (200, expected)
            first = conn.sock
            conn.request("GET", "/login", headers={"Host": HOST})
            response = conn.getresponse()
            assert response.status == 200 and b'name="password"' in response.read()
            assert conn.sock is first  # one connection for all three
        finally:
            conn.close()


def test_stopping_the_page_drops_slow_connections_and_the_thread_ends(tmp_path: Path) -> None:
    with serving(tmp_path, header_timeout_s=300, handshake_timeout_s=60) as page:
        slow = [page.tls("127.0.0.2") for _ in range(4)]
        bare = [page.tcp("127.0.0.3") for _ in range(4)]
        for sock in slow:
            sock.sendall(HALF_HEAD)
        try:
            page.server.stop()
            assert all(closed_by_server(s) for s in [*slow, *bare])
            assert not page.server._thread.is_alive()
        finally:
            close_all([*slow, *bare])
