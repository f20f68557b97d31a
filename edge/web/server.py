"""Runs the owner's page in one thread of the daemon: uvicorn (h11, asyncio, no lifespan, no signal handlers,
no forwarded headers) behind the connection guard (edge/web/guard.py: TLS, per-client slots, deadlines),
restarted with a back-off if it crashes, stopped by the daemon."""

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
KEEP_ALIVE_S = 5  # an idle connection after a response is closed after this (uvicorn's default, said here)


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

        from edge.web.guard import Guard
        from edge.web.limits import Limits
        from edge.web.tls import server_context

        app, tls = build_web(self.config, self.clock, self.frame_source, self.emit)
        web = self.config.web
        guard = Guard(Limits.of(web), server_context(tls), self.clock.monotonic)
        # uvicorn serves plain TCP: the guard's protocol takes a slot per client and does TLS itself. Its own
        # limit_concurrency (503 to everyone once N connections are open, slow ones included) is off: the guard
        # caps connections per client and in all before they cost a handshake.
        uconfig = uvicorn.Config(
            app, host=web.listen, port=web.port, http=guard.protocol_class(),
            lifespan="off", loop="asyncio", ws="none", proxy_headers=False, server_header=False,
            date_header=False, log_config=None, access_log=False, timeout_graceful_shutdown=1,
            timeout_keep_alive=KEEP_ALIVE_S, limit_concurrency=None, h11_max_incomplete_event_size=64 * 1024,
        )
        # uvicorn warns once per bad request (the guard logs those, at most once a minute per client), and its
        # start line would say http:// since TLS is the guard's: only its errors reach the journal.
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
        self._server = uvicorn.Server(uconfig)
        if self._stop.is_set():
            return
        # Server.run() off the main thread installs no signal handlers: SIGTERM stays the daemon's.
        loop = asyncio.new_event_loop()
        try:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self._serve(self._server, guard))
        finally:
            loop.close()

    async def _serve(self, server: Any, guard: Any) -> None:
        task = asyncio.ensure_future(server.serve())
        try:
            while not server.started and not task.done():
                await asyncio.sleep(0.05)
            if server.started:
                self.started.set()
                log.info("owner's page on https://%s:%d/", self.config.web.hostname or "<this host>",
                         self.config.web.port)
            await task
        finally:
            await guard.close_all()  # what uvicorn's graceful shutdown left open, handshakes included

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

