"""The page inside the daemon: served over HTTPS the device CA verifies, SIGTERM still stops everything with exit 0,
the page's thread installs no signal handler, and a crash of the page is logged and restarted."""

from __future__ import annotations

import logging
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge.clock import FakeClock
from edge.web import server as web_server
from edge.web.server import WebServer

from ..service.test_daemon import REPO, daemon_env, read_lines_until
from .browser import free_port
from .conftest import NOW
from .helpers import make_config


def fetch(url: str, ca: Path) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return int(response.status), response.read()


@pytest.mark.slow
def test_the_daemon_serves_the_page_and_sigterm_stops_it_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    config = tmp_path / "web.yaml"
    config.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {free_port()}\nfaces:\n  enabled: false\n"
                      f"web:\n  enabled: true\n  listen: 127.0.0.1\n  port: {port}\n  hostname: doorbell.test\n"
                      "  argon2_memory_kib: 19456\n  argon2_time_cost: 2\n")
    proc = subprocess.Popen([sys.executable, "-m", "edge", "run", "--config", str(config)], cwd=REPO,
                            env=daemon_env(state, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        events = read_lines_until(proc, lambda e: e["type"] == "system" and e.get("status") == "started", 30)
        assert events and events[-1].get("status") == "started"
        ca = state / "web" / "tls" / "ca.crt"
        status, body = 0, b""
        for _ in range(100):  # the page's thread may still be binding
            try:
                status, body = fetch(f"https://127.0.0.1:{port}/healthz", ca)
                break
            except OSError:
                time.sleep(0.1)
        assert (status, body) == (200, b"ok")  # the certificate verified against the device CA, for 127.0.0.1
        status, body = fetch(f"https://127.0.0.1:{port}/setup", ca)
        assert status == 200 and b"Setup code" in body
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 0, err
    assert "Traceback" not in err


def test_the_page_thread_installs_no_signal_handler_and_restarts_after_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    real = web_server.build_web
    calls: list[int] = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the page broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(web_server, "build_web", flaky)
    monkeypatch.setattr(web_server, "RESTART_MIN_S", 0.05)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    config = make_config(tmp_path, listen="127.0.0.1", port=free_port())
    server = WebServer(config, FakeClock(NOW), lambda: None, lambda e: None)
    server.start()
    try:
        assert server.started.wait(20)
        assert server.crashes == 1 and len(calls) == 2
        assert "the owner's page crashed; restarting it" in caplog.text
        assert {s: signal.getsignal(s) for s in handlers} == handlers
        status, body = fetch(f"https://127.0.0.1:{config.web.port}/healthz", tmp_path / "web" / "tls" / "ca.crt")
        assert (status, body) == (200, b"ok")
    finally:
        server.stop()
    assert not server._thread.is_alive()


class HttpsClient:
    """A small cookie-keeping HTTPS client for the page in its thread (no redirects followed)."""

    def __init__(self, port: int, ca: Path) -> None:
        self.port = port
        self.context = ssl.create_default_context(cafile=str(ca))
        self.cookies: dict[str, str] = {}

    def __call__(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        import http.client
        from urllib.parse import urlencode

        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=20)
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        body = urlencode(form) if form is not None else None
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body, headers)
            response = conn.getresponse()
            text = response.read().decode(errors="replace")
        finally:
            conn.close()
        for value in response.headers.get_all("set-cookie") or []:
            name, _, rest = value.partition("=")
            if "max-age=0" in rest.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = rest.split(";")[0]
        return response.status, response.headers.get("location", ""), text


def test_the_running_page_survives_a_damaged_web_db_and_clock_steps(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The page in its uvicorn thread: web.db overwritten with garbage while it runs gives the setup page, never a
    500, and the thread carries on; a new owner sets up with a new code; then the clock steps back two hours
    (the session ends) and forward ten years (nothing breaks, login works)."""
    import re

    from edge.web.auth import AuthStore

    from .helpers import OWNER, PASSWORD

    caplog.set_level(logging.INFO)
    config = make_config(tmp_path, listen="127.0.0.1", port=free_port())
    clock = FakeClock(NOW)
    server = WebServer(config, clock, lambda: None, lambda e: None)

    def new_code() -> str:  # what `doorbell-edge web setup-code` does, in a process of its own
        return AuthStore(config.state_dir, config.web, lambda: clock.now().timestamp()).new_setup_code()

    server.start()
    try:
        assert server.started.wait(20)
        page = HttpsClient(config.web.port, tmp_path / "web" / "tls" / "ca.crt")

        def set_up(code: str) -> None:
            _, _, html = page("GET", "/setup")
            token = re.search(r'name="csrf" value="([^"]+)"', html)
            assert token
            status, location, _ = page("POST", "/setup", {"csrf": token.group(1), "code": code, "username": OWNER,
                                                          "password": PASSWORD, "password2": PASSWORD})
            assert (status, location) == (303, "/")

        set_up(new_code())
        assert page("GET", "/")[0] == 200
        (tmp_path / "web" / "web.db").write_bytes(os.urandom(30_000))
        answers = [page("GET", p)[:2] for p in ("/", "/events", "/account", "/requests") * 5]
        assert set(answers) == {(303, "/setup")}, answers
        assert server.crashes == 0 and server._thread.is_alive()
        assert "moved aside to web.db.unreadable-" in caplog.text
        set_up(new_code())
        assert page("GET", "/")[0] == 200

        clock.step(-2 * 3600)
        assert page("GET", "/")[:2] == (303, "/login")
        clock.step(2 * 3600 + 10 * 365 * 86400)
        assert page("GET", "/account")[:2] == (303, "/login?next=%2Faccount")
        _, _, html = page("GET", "/login")
        token = re.search(r'name="csrf" value="([^"]+)"', html)
        assert token
        status, location, _ = page("POST", "/login", {"csrf": token.group(1), "username": OWNER,
                                                      "password": PASSWORD, "next": "/account"})
        assert (status, location) == (303, "/account")
        assert page("GET", "/account")[0] == 200
        assert server.crashes == 0
    finally:
        server.stop()
    assert "Traceback" not in caplog.text
