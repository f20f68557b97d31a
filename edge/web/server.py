"""Runs the owner's page in one thread of the daemon: uvicorn (h11, asyncio, no lifespan, no signal handlers,
no forwarded headers), restarted with a back-off if it crashes, stopped by the daemon."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.clock import Clock, SystemClock
from edge.config import Config

log = logging.getLogger(__name__)

RESTART_MIN_S = 1.0
RESTART_MAX_S = 60.0


def build_web(config: Config, clock: Clock | None = None, frame_source: Callable[[], bytes | None] | None = None,
              emit: Callable[[Any], object] | None = None) -> Any:
    """The ASGI app for `config` (TLS material made or checked first); returns (starlette app, TlsFiles)."""
    from edge.web.app import WebApp
    from edge.web.auth import AuthStore
    from edge.web.backend import Backend
    from edge.web.tls import ensure_tls, fingerprint

    clock = clock or SystemClock()
    tls = ensure_tls(config)
    ca_fp = fingerprint(tls.ca.read_bytes()) if tls.ca is not None else None
    auth = AuthStore(config.state_dir, config.web, lambda: clock.now().timestamp())
    web = WebApp(Backend(config, clock, frame_source, emit), auth, tls.ca, ca_fp)
    return web.starlette(), tls


class WebServer:
    """A daemon component: start() spawns the thread, stop() asks uvicorn to exit and waits briefly."""

    def __init__(self, config: Config, clock: Clock | None = None,
                 frame_source: Callable[[], bytes | None] | None = None,
                 emit: Callable[[Any], object] | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.frame_source = frame_source
        self.emit = emit
        self._stop = threading.Event()
        self._server: Any = None
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self.started = threading.Event()
        self.crashes = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(2.0)

    def _serve_once(self) -> None:
        import uvicorn

        app, tls = build_web(self.config, self.clock, self.frame_source, self.emit)
        web = self.config.web
        uconfig = uvicorn.Config(
            app, host=web.listen, port=web.port, ssl_certfile=str(tls.cert), ssl_keyfile=str(tls.key),
            lifespan="off", http="h11", loop="asyncio", ws="none", proxy_headers=False, server_header=False,
            date_header=False, log_config=None, access_log=False, timeout_graceful_shutdown=1,
            limit_concurrency=64, h11_max_incomplete_event_size=64 * 1024,
        )
        self._server = uvicorn.Server(uconfig)
        if self._stop.is_set():
            return
        # Server.run() off the main thread installs no signal handlers: SIGTERM stays the daemon's.
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve(self._server))
        finally:
            loop.close()

    async def _serve(self, server: Any) -> None:
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.05)
        if server.started:
            self.started.set()
            log.info("owner's page on https://%s:%d/", self.config.web.hostname or "<this host>", self.config.web.port)
        await task

    def _run(self) -> None:
        delay = RESTART_MIN_S
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self._serve_once()
            except Exception:
                self.crashes += 1
                log.exception("the owner's page crashed; restarting it in %.0f s (capture and MQTT go on)", delay)
            else:
                if self._stop.is_set():
                    return
                self.crashes += 1
                log.error("the owner's page stopped by itself; restarting it in %.0f s", delay)
            if time.monotonic() - began > RESTART_MAX_S:
                delay = RESTART_MIN_S
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, RESTART_MAX_S)

