"""The page inside the daemon: served over HTTPS the device CA verifies, SIGTERM still stops everything with exit 0,
the page's thread installs no signal handler, and a crash of the page is logged and restarted."""

from __future__ import annotations

import logging
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
