"""The control socket under load and abuse: idle and slow clients, a full house, rate-limited rings, the button."""

from __future__ import annotations

import json
import logging
import select
import socket
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.clock import FakeClock
from edge.config import ButtonConfig, ControlConfig
from edge.ratelimit import RateLimiter
from edge.service.button import GpioButton
from edge.service.control import ControlServer, rate_limited, send_command, socket_path


def connect(state: Path) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(str(socket_path(state)))
    return client


def reply_of(client: socket.socket) -> dict[str, Any]:
    data = b""
    while not data.endswith(b"\n"):
        chunk = client.recv(4096)
        if not chunk:
            break
        data += chunk
    return json.loads(data)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ControlServer]:
    calls: list[dict[str, Any]] = []
    handlers = {"echo": lambda request: (calls.append(request), {"ok": True, "echo": request.get("x")})[1]}
    srv = ControlServer(tmp_path, handlers, ControlConfig(max_clients=10, timeout_s=30))
    srv.start()
    yield srv
    srv.stop()


def test_a_ninth_client_is_answered_while_eight_idle_clients_hold_connections(tmp_path: Path,
                                                                               server: ControlServer) -> None:
    idle = [connect(tmp_path) for _ in range(8)]
    try:
        # The idle clients may stay for 30 s (timeout_s); the ninth is answered without waiting for any of them.
        assert send_command(tmp_path, {"cmd": "echo", "x": 9}, timeout=5) == {"ok": True, "echo": 9}
        # ...and so is an idle one that finally speaks.
        idle[3].sendall(b'{"cmd": "echo", "x": 3}\n')
        assert reply_of(idle[3]) == {"ok": True, "echo": 3}
    finally:
        for client in idle:
            client.close()


def test_one_client_too_many_is_told_busy_and_a_slot_frees_when_a_client_leaves(tmp_path: Path,
                                                                                 server: ControlServer) -> None:
    holders = [connect(tmp_path) for _ in range(10)]
    try:
        # accept() runs on the server's own thread: wait until it has taken all ten (each answers "busy" or not
        # only once it is accepted), by asking an eleventh until the server says it is full
        busy = send_command(tmp_path, {"cmd": "echo", "x": 11}, timeout=5)
        assert busy["ok"] is False and busy["busy"] is True
        assert "busy: 10 clients are already connected (control.max_clients)" in busy["error"]
        assert server.busy_refusals == 1
        holders[0].sendall(b'{"cmd": "echo", "x": 0}\n')
        assert reply_of(holders[0]) == {"ok": True, "echo": 0}
        holders.pop(0).close()
        # the slot is released after the reply is sent; ask until it is (a bounded loop, not a timing assertion)
        for _ in range(200):
            reply = send_command(tmp_path, {"cmd": "echo", "x": 12}, timeout=5)
            if reply.get("ok"):
                break
            threading.Event().wait(0.01)
        assert reply == {"ok": True, "echo": 12}
    finally:
        for client in holders:
            client.close()


def test_busy_reply_sent_before_the_request_is_still_read_not_a_broken_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server answers "busy" and closes as soon as it accepts; a client that sends after that close got EPIPE,
    and `doorbell-edge ring` printed "output closed early (broken pipe)" (exit 141) instead of "busy"."""
    srv = ControlServer(tmp_path, {"echo": lambda r: {"ok": True}}, ControlConfig(max_clients=1, timeout_s=30))
    srv.start()
    holder = connect(tmp_path)
    real_sendall = socket.socket.sendall

    def sendall_after_the_server_closed(self: socket.socket, data: bytes, *args: Any) -> None:
        if threading.current_thread() is not threading.main_thread():  # the server's own replies go out as usual
            return real_sendall(self, data, *args)
        poller = select.poll()
        poller.register(self, select.POLLRDHUP)
        assert poller.poll(10_000), "the server never closed the refused connection"
        real_sendall(self, data, *args)

    try:
        with monkeypatch.context() as patch:
            patch.setattr(socket.socket, "sendall", sendall_after_the_server_closed)
            reply = send_command(tmp_path, {"cmd": "echo"}, timeout=10)
        assert reply["ok"] is False and reply["busy"] is True, reply
    finally:
        holder.close()
        srv.stop()


def test_an_idle_or_trickling_client_is_told_it_timed_out(tmp_path: Path) -> None:
    srv = ControlServer(tmp_path, {"echo": lambda r: {"ok": True}}, ControlConfig(max_clients=4, timeout_s=0.3))
    srv.start()
    try:
        silent = connect(tmp_path)
        trickle = connect(tmp_path)
        # one byte at a time, never a newline: the deadline is for the whole line, not per byte
        stop = threading.Event()

        def drip() -> None:
            while not stop.wait(0.05):
                try:
                    trickle.sendall(b" ")
                except OSError:
                    return

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        for client in (silent, trickle):
            reply = reply_of(client)
            assert reply["ok"] is False
            assert reply["error"] == "timed out: no complete request line within 0.3 s (control.timeout_s)"
        stop.set()
        dripper.join(2)
        # the slots came back: all four can be used again
        assert [send_command(tmp_path, {"cmd": "echo"})["ok"] for _ in range(4)] == [True] * 4
    finally:
        srv.stop()


def test_bad_requests_get_an_error_reply_and_the_server_lives_on(tmp_path: Path, server: ControlServer) -> None:
    client = connect(tmp_path)
    client.sendall(b"x" * 5000)
    assert reply_of(client) == {"ok": False, "error": "cannot read the request: request longer than 4096 bytes"}
    client.close()
    client = connect(tmp_path)
    client.sendall(b"[1]\n")
    assert reply_of(client) == {"ok": False, "error": "expected an object with a 'cmd' string"}
    client.close()
    assert send_command(tmp_path, {"cmd": "nope"})["error"] == "unknown command 'nope'; known: echo"
    assert send_command(tmp_path, {"cmd": "echo", "x": 1}) == {"ok": True, "echo": 1}


def ring_handler(events: list[str]) -> Any:
    def handle(request: dict[str, Any]) -> dict[str, Any]:
        camera = request.get("camera") or "porch"
        if camera not in ("porch", "gate"):
            return {"ok": False, "error": f"no camera named {camera!r}"}
        events.append(camera)
        return {"ok": True}

    return handle


def test_rings_are_rate_limited_per_camera_with_a_clear_reply(tmp_path: Path) -> None:
    clock = FakeClock()
    events: list[str] = []
    limiter = RateLimiter("ring on {key}", 3.0, ["porch", "gate"], clock.monotonic, "button.ring_interval_s")
    handler = rate_limited(ring_handler(events), limiter, lambda r: str(r.get("camera") or "porch"))
    srv = ControlServer(tmp_path, {"ring": handler})
    srv.start()
    try:
        assert send_command(tmp_path, {"cmd": "ring"}) == {"ok": True}
        clock.advance(1.0)
        refused = send_command(tmp_path, {"cmd": "ring", "camera": "porch"})
        assert refused == {
            "ok": False, "rate_limited": True, "retry_after_s": 2.0,
            "error": "rate limited: ring on 'porch' was accepted 1.0 s ago; at most one per 3 s "
                     "(button.ring_interval_s); retry in 2.0 s",
        }
        assert send_command(tmp_path, {"cmd": "ring", "camera": "gate"}) == {"ok": True}  # its own limit
        # an unknown camera is the handler's to refuse, and does not grow the limiter
        assert send_command(tmp_path, {"cmd": "ring", "camera": "attic"}) == {
            "ok": False, "error": "no camera named 'attic'"}
        clock.advance(2.0)
        assert send_command(tmp_path, {"cmd": "ring"}) == {"ok": True}
    finally:
        srv.stop()
    assert events == ["porch", "gate", "porch"]
    assert limiter.refused_total == 1


def test_the_limiter_logs_a_flood_once_and_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    limiter = RateLimiter("ring on {key}", 3.0, ["porch"], clock.monotonic, "button.ring_interval_s")
    caplog.set_level(logging.DEBUG, logger="edge.ratelimit")
    assert limiter.check("porch") is None
    for _ in range(400):
        clock.advance(0.0025)
        assert limiter.check("porch") is not None
    assert [r.getMessage() for r in caplog.records] == [
        "ring on porch: rate limited (at most one per 3 s, button.ring_interval_s); further refusals are counted"]
    clock.advance(2.0)
    assert limiter.check("porch") is None
    assert caplog.records[-1].getMessage() == "ring on porch accepted after 400 rate-limited attempt(s)"
    assert limiter.refused_total == 400


def test_a_limit_of_zero_is_no_limit_and_a_clock_going_back_never_locks_rings_out() -> None:
    clock = FakeClock()
    off = RateLimiter("ring on {key}", 0, ["porch"], clock.monotonic, "button.ring_interval_s")
    assert all(off.check("porch") is None for _ in range(100))
    limiter = RateLimiter("ring on {key}", 3.0, ["porch"], clock.monotonic, "button.ring_interval_s")
    assert limiter.check("porch") is None
    clock._mono -= 3600  # a broken or replaced monotonic source: accept rather than refuse for an hour
    assert limiter.check("porch") is None
    refusal = limiter.check("attic")
    assert refusal is not None and refusal.reason == "ring on 'attic': not one of porch"


class FakeButton:
    """gpiozero.Button(pin, *, pull_up=True, bounce_time=None) with when_pressed and close()."""

    def __init__(self, pin: int, *, pull_up: bool = True, bounce_time: float | None = None) -> None:
        self.when_pressed: Any = None

    def press(self) -> None:
        self.when_pressed()

    def close(self) -> None:
        pass


def test_a_hammered_button_rings_once_per_interval_and_shares_the_limit_with_the_socket(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiozero", types.SimpleNamespace(Button=FakeButton))
    clock = FakeClock()
    events: list[str] = []
    limiter = RateLimiter("ring on {key}", 3.0, ["porch", "gate"], clock.monotonic, "button.ring_interval_s")
    button = GpioButton(ButtonConfig(gpio_pin=17, debounce_ms=50), lambda: events.append("button"), clock.monotonic,
                        limiter=limiter, camera="porch")
    button.start()
    srv = ControlServer(tmp_path, {"ring": rate_limited(ring_handler(events), limiter, lambda r: "porch")})
    srv.start()
    try:
        for _ in range(400):  # 400 presses a second, each past the 50 ms debounce of the last accepted one
            button.device.press()
            clock.advance(0.0025)
        assert events == ["button"]
        assert send_command(tmp_path, {"cmd": "ring"})["rate_limited"] is True  # the same doorbell: one limit
        clock.advance(2.5)
        button.device.press()
        assert events == ["button", "button"]
    finally:
        srv.stop()
        button.stop()
