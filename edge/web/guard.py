"""The page's connections from accept to close: a slot per client address taken before TLS, the TLS handshake
with a deadline, then uvicorn's h11 protocol with deadlines for the request head and a minimum body rate.

uvicorn hands TLS to asyncio's create_server without a handshake timeout (60 s), and its protocol only sees a
connection once TLS is done, so neither a client's address nor a stalled handshake can be acted on there. The
page's uvicorn therefore runs plain TCP with this protocol class (`uvicorn.Config(http=...)`), which takes the
slot and starts TLS itself (`loop.start_tls`). Everything uvicorn-specific (H11Protocol's conn, flow,
transport and on_response_complete) stays in this module."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from edge.web.limits import Limits, RefusalLog, Slots, client_of

log = logging.getLogger(__name__)

# A closed connection waits this long for the client's TLS close_notify before its socket is dropped.
TLS_SHUTDOWN_S = 5.0
HEAD, BODY, APP = "head", "body", "app"


class Guard:
    """What the page's connections share: the limits, the slots, the refusal log, the TLS context and the
    connections still open (so a stopping server can drop them)."""

    def __init__(self, limits: Limits, context: ssl.SSLContext, monotonic: Callable[[], float]) -> None:
        self.limits = limits
        self.context = context
        self.refusals = RefusalLog(log, monotonic)
        self.slots = Slots(limits.per_client, limits.total)
        self.open: set[GuardedH11Protocol] = set()
        self.handshakes: set[asyncio.Task[None]] = set()

    def protocol_class(self) -> type[GuardedH11Protocol]:
        """A protocol class bound to this guard, for `uvicorn.Config(http=...)`."""
        return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": self})

    async def close_all(self) -> None:
        """Drops every connection still open (after uvicorn's graceful shutdown) and waits for their handshakes."""
        for protocol in list(self.open):
            protocol.drop()
        if self.handshakes:
            await asyncio.wait(list(self.handshakes), timeout=2.0)
        for _ in range(10):  # the transports close their sockets, then tell the protocols, on the next turns
            await asyncio.sleep(0)
            if not self.open:
                break


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol behind a slot, a TLS handshake deadline, a request-head deadline and a minimum
    body rate. Created by uvicorn per accepted TCP connection; `guard` is set by Guard.protocol_class()."""

    guard: ClassVar[Guard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer = ""
        self._raw: asyncio.Transport | None = None  # the TCP transport, until TLS takes it over
        self._holds_slot = False
        self._ready = False  # TLS done and uvicorn's protocol started on the TLS transport
        self._gone = False
        self._early: list[bytes] = []  # what TLS delivered before uvicorn's protocol started
        self._phase = ""
        self._timer: asyncio.TimerHandle | None = None
        self._received = 0  # bytes in the current head phase or body window
        self._excused = False  # the client was excused (waiting on the page) at the last body check

    # --- accept and TLS ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        guard = self.guard
        self.peer = client_of(transport.get_extra_info("peername"))
        why = guard.slots.take(self.peer)
        if why is not None:
            # Closed before TLS: a refused connection costs no handshake and keeps no file descriptor.
            guard.refusals.refused(self.peer, why)
            self._gone = True
            transport.abort()
            return
        self._holds_slot = True
        self._raw = transport
        guard.open.add(self)
        task = self.loop.create_task(self._start_tls(transport))
        guard.handshakes.add(task)
        task.add_done_callback(guard.handshakes.discard)

    async def _start_tls(self, raw: asyncio.Transport) -> None:
        limits = self.guard.limits
        tls = None
        if self._gone or raw.is_closing():  # the client left before this task started
            self._give_back()
            return
        try:
            tls = await self.loop.start_tls(raw, self, self.guard.context, server_side=True,
                                            ssl_handshake_timeout=limits.handshake_s,
                                            ssl_shutdown_timeout=TLS_SHUTDOWN_S)
        except ConnectionAbortedError:  # asyncio's handshake deadline
            self.guard.refusals.refused(self.peer, f"no TLS handshake within {limits.handshake_s:g} s")
        except (OSError, EOFError) as exc:  # a bad handshake, a reset, a browser that does not trust the CA yet
            log.debug("web: TLS handshake with %s failed: %s", self.peer, exc)
        except Exception as exc:  # not expected; said once a minute per client, never a dead task's traceback
            self.guard.refusals.refused(self.peer, f"TLS could not start: {exc!r}")
        finally:
            if tls is None or self._gone:  # failed, cancelled, or the client left before this task resumed
                raw.abort()
                self._give_back()
        if tls is None or self._gone:
            return
        self._ready = True
        super().connection_made(tls)
        self._watch()
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def drop(self) -> None:
        """Closes the connection at once, without the TLS goodbye."""
        if self._raw is not None:
            self._raw.abort()

    def _give_back(self) -> None:
        self._gone = True
        self._stop_timer()
        self.guard.open.discard(self)
        if self._holds_slot:
            self._holds_slot = False
            self.guard.slots.give_back(self.peer)

    # --- uvicorn's protocol, watched ---

    def connection_lost(self, exc: Exception | None) -> None:
        self._give_back()
        if self._ready:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._ready:
            self._early.append(data)
            return
        self._received += len(data)
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def send_400_response(self, msg: str) -> None:
        self.guard.refusals.refused(self.peer, f"400: {msg}")
        super().send_400_response(msg)

    def pause_writing(self) -> None:
        if self._ready:
            super().pause_writing()

    def resume_writing(self) -> None:
        if self._ready:
            super().resume_writing()

    def _watch(self) -> None:
        """Starts the deadline of the phase the connection is in when that phase changes: the client owes a
        request head (HEAD), a request body (BODY), or nothing while the page works and answers (APP)."""
        if self._gone or self.transport.is_closing():
            self._stop_timer()
            return
        phase = {h11.IDLE: HEAD, h11.SEND_BODY: BODY}.get(self.conn.their_state, APP)
        if phase == self._phase:
            return
        self._stop_timer()
        self._phase = phase
        self._received = 0
        self._excused = False
        limits = self.guard.limits
        if phase == HEAD:
            self._timer = self.loop.call_later(limits.head_s, self._head_late)
        elif phase == BODY:
            self._timer = self.loop.call_later(limits.body_window_s, self._body_check)

    def _head_late(self) -> None:
        self._timer = None
        if self._phase != HEAD or self.transport.is_closing():
            return
        if not self._received:
            # An idle connection (a browser's spare one, or one kept alive after a response): closed politely.
            self.transport.close()
            return
        self._refuse(f"no whole request head within {self.guard.limits.head_s:g} s")

    def _body_check(self) -> None:
        self._timer = None
        if self._phase != BODY or self.transport.is_closing():
            return
        limits = self.guard.limits
        # A pause is the page's doing (uvicorn stops reading while the app has not taken the body), and a client
        # that sent "Expect: 100-continue" waits for the app to ask for the body: neither window counts.
        # A window that began while the client was excused is excused too: the wait may have ended just before
        # this check (the 100 Continue sent a moment ago), so the client has not had a whole window to send in.
        waiting = self.flow.read_paused or self.conn.they_are_waiting_for_100_continue
        excused, self._excused = waiting or self._excused, waiting
        if self._received < limits.body_min_bytes and not excused:
            self._refuse(f"request body slower than {limits.body_min_rate} bytes/s over {limits.body_window_s:g} s")
            return
        self._received = 0
        self._timer = self.loop.call_later(limits.body_window_s, self._body_check)

    def _refuse(self, why: str) -> None:
        self.guard.refusals.refused(self.peer, why)
        self._stop_timer()
        self.transport.abort()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
