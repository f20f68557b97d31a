"""The owner's page as an ASGI app: the route table, the setup gate, the Host allow-list, sessions, CSRF and
security headers. The handlers live by concern: edge.web.entry (setup, login, account), edge.web.decisions
(footage requests) and edge.web.views (now, events, faces, audit).

Every page is server-rendered and every action is a plain <form method=post>, so it all works with JavaScript
off; the two scripts refresh the Now picture and warn before the session times out. Blocking work (argon2, SQLite,
the footage desk) runs in the thread pool, never on the event loop."""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from edge.cli.common import human_time
from edge.clock import parse_rfc3339
from edge.web.auth import MIN_PASSWORD, AuthStore
from edge.web.backend import BUTTONS, Backend
from edge.web.sessions import Session, SessionStore, boot_id
from edge.web.tls import device_names, is_ip
from edge.web.webdb import Reset, StoreReset

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "__Host-doorbell_sid"
PRE_COOKIE = "__Host-doorbell_pre"  # the CSRF token of the login and setup forms (no session yet)
OPEN_PATHS = ("/setup", "/healthz", "/ca.crt")  # everything else waits for an owner to exist
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
MAX_FORM_BYTES = 64 * 1024  # a form without files
MAX_UPLOAD_BYTES = 24 * 1024 * 1024  # the enrolment photos, all together
HOSTS_REFRESH_S = 60.0  # a Host that is an IP literal not in the list: look at the device's addresses again
WARN_BEFORE_S = 120.0  # the timeout warning shows this long before the idle timeout (at most half of it)
NO_RETURN = ("/now.jpg", "/clips/", "/snapshots/", "/session")  # not pages: login does not come back to them

FormHandler = Callable[[Request, FormData, Session | None], Response]


class Forbidden(Exception):
    """403: the form is not ours (CSRF), or the user's role may not do this."""


def client_of(request: Request) -> str:
    """The TCP peer: no proxy sits in front of the page, so forwarded headers are never trusted."""
    return request.client.host if request.client else "unknown"


class WebApp:
    """Holds the stores the routes share and the plumbing every route goes through; `starlette()` builds the
    ASGI app."""

    def __init__(self, backend: Backend, auth: AuthStore, ca_file: Path | None = None,
                 ca_fingerprint: str | None = None) -> None:
        from edge.web.decisions import Decisions
        from edge.web.entry import Entry
        from edge.web.views import Views

        self.backend = backend
        self.auth = auth
        self.ca_file = ca_file
        self.ca_fingerprint = ca_fingerprint
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.sessions = SessionStore(auth.db, auth.config, auth.now, backend.clock.monotonic, boot_id())
        self.templates.env.globals.update(
            min_password=MIN_PASSWORD, buttons=BUTTONS, warn_s=int(warn_before(self.sessions.idle)),
            idle_words=amount(auth.config.idle_timeout_min, "minute"),
            absolute_words=amount(auth.config.absolute_timeout_h, "hour"))
        self.templates.env.filters.update(when=human_time, local_iso=local_iso, clock=local_clock)
        self._owner_exists = False
        self.hosts = HostList(lambda: device_names(backend.config))
        self.entry = Entry(self)
        self.decisions = Decisions(self)
        self.views = Views(self)
        auth.db.listen(self._store_reset)  # a reset at start (a damaged file moved aside) is told at once
        self._lost_at_start()

    def _store_reset(self, reset: Reset) -> None:
        """web.db was lost or damaged: no account exists any more, so the page offers only setup (which needs a
        new code from the device), and the audit log says the accounts were reset."""
        self._owner_exists = False
        self.backend.audit("web_reset", why=reset.why, kept=reset.kept.name if reset.kept else None,
                           detail=reset.detail[:200])

    def _lost_at_start(self) -> None:
        """web.db was missing or empty at start (removed while the daemon was stopped, or lost) after an owner had
        been set up: the audit log says so once."""
        if self.auth.has_owner():
            return
        last = self.backend.last_record_of(("web_setup", "web_reset"))
        if last is not None and last["kind"] == "web_setup":
            log.warning("web: %s had no accounts at start although an owner was set up before; the page's accounts "
                        "are reset: run `doorbell-edge web setup-code` to set the owner up again", self.auth.path)
            self.backend.audit("web_reset", why="missing or empty at start", kept=None,
                               detail="no owner in web.db at start, after a web_setup")

    def owner_exists(self) -> bool:
        if not self._owner_exists:
            self._owner_exists = self.auth.has_owner()  # once true it stays true (no web route removes the owner)
        return self._owner_exists

    def starlette(self) -> Starlette:
        get, post = ["GET"], ["POST"]
        e, d, v = self.entry, self.decisions, self.views
        routes = [
            Route("/healthz", lambda r: PlainTextResponse("ok"), methods=get),
            Route("/ca.crt", e.ca_cert, methods=get),
            Route("/setup", e.setup_page, methods=get),
            Route("/setup", self.form(e.setup, public=True), methods=post),
            Route("/login", e.login_page, methods=get),
            Route("/login", self.form(e.login, public=True), methods=post),
            Route("/logout", self.form(e.logout), methods=post),
            Route("/session", self.session_status, methods=get),
            Route("/session/extend", self.form(lambda r, f, s: Response(status_code=204)), methods=post),
            Route("/", self.page(v.now_page), methods=get),
            Route("/now.jpg", self.page(v.now_jpeg, touch=False), methods=get),  # refreshed by a script: no person
            Route("/events", self.page(v.events_page), methods=get),
            Route("/clips/{clip_id}", self.page(v.clip), methods=get),
            Route("/snapshots/{event_id}", self.page(v.snapshot), methods=get),
            Route("/requests", self.page(d.requests_page), methods=get),
            Route("/requests/{request_id}", self.page(d.request_page), methods=get),
            Route("/requests/{request_id}/decide", self.form(d.decide, owner=True, draft=d.keep_draft),
                  methods=post),
            Route("/requests/{request_id}/deny", self.form(d.deny, owner=True), methods=post),
            Route("/requests/{request_id}/export", self.form(d.export, owner=True), methods=post),
            Route("/faces", self.page(v.faces_page, owner=True), methods=get),
            Route("/faces/enrol", self.form(v.enrol, owner=True, files=True), methods=post),
            Route("/faces/forget", self.form(v.forget, owner=True), methods=post),
            Route("/faces/consent", self.form(v.renew, owner=True), methods=post),
            Route("/audit", self.page(v.audit_page), methods=get),
            Route("/account", self.page(e.account_page), methods=get),
            Route("/account/password", self.form(e.change_password), methods=post),
            Route("/account/viewers", self.form(e.add_viewer, owner=True), methods=post),
            Route("/account/viewers/remove", self.form(e.remove_viewer, owner=True), methods=post),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=self.gate)])

    async def gate(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        """A Host that is not one of the device's names is refused (DNS rebinding); in a fresh state only setup,
        static files, the CA and the health check; then security headers on every answer."""
        if not self.hosts.allows(request.headers.get("host", "")):
            return _secure(PlainTextResponse("this doorbell does not answer to that name", status_code=421))
        path = request.url.path
        try:
            if (not path.startswith("/static/") and path not in OPEN_PATHS
                    and not await run_in_threadpool(self.owner_exists)):
                return _secure(RedirectResponse("/setup", status_code=303))
            return _secure(await call_next(request))
        except StoreReset:  # web.db was lost or damaged while this request ran: a fresh store has no owner
            return _secure(RedirectResponse("/setup", status_code=303))
        except sqlite3.Error:
            log.exception("web: the page's store failed on %s", path)
            return _secure(PlainTextResponse("the doorbell's page could not read its store; try again shortly",
                                             status_code=503, headers={"Retry-After": "5"}))

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("session", None)
        context.setdefault("error", None)
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def session(self, request: Request, touch: bool = True) -> Session | None:
        return self.sessions.session(request.cookies.get(COOKIE), touch)

    async def session_status(self, request: Request) -> Response:
        """For the timeout warning: how long the session has left, without touching it (401: it has ended)."""
        session = await run_in_threadpool(self.session, request, False)
        if session is None:
            return JSONResponse({"live": False}, status_code=401)
        return JSONResponse({"live": True, "idle_left": int(session.idle_left),
                             "absolute_left": int(session.absolute_left)})

    def page(self, handler: Callable[[Request, Session], Response], *, owner: bool = False, touch: bool = True
             ) -> Callable[[Request], Awaitable[Response]]:
        """A GET page for a logged-in user (owner=True: the owner only, 403 for a viewer). touch=False: a request
        a script makes by itself (the Now picture) does not count as someone using the page."""

        def run(request: Request) -> Response:
            session = self.session(request, touch)
            if session is None:
                return RedirectResponse(login_url(request), status_code=303)
            if owner and not session.user.owner:
                return self.render(request, "error.html", 403, session=session,
                                   error="Only the owner may open this page.")
            return handler(request, session)

        async def endpoint(request: Request) -> Response:
            return await run_in_threadpool(run, request)

        return endpoint

    def form(self, handler: FormHandler, *, public: bool = False, owner: bool = False, files: bool = False,
             draft: FormHandler | None = None) -> Callable[[Request], Awaitable[Response]]:
        """A POST action: same-origin check and the session (public: none needed) from the headers alone, then
        the body is read and its CSRF token checked (public: the login/setup token). So nobody without a session
        (or a viewer on an owner's action) makes the daemon read, spool or parse a body.
        files: the form may carry uploaded files (up to MAX_UPLOAD_BYTES in all).
        draft: when the session timed out (idle or absolute) before the form was sent, a form with that session's
        cookie and CSRF token from the same origin goes to `draft` instead, which keeps what may be kept."""

        def before_body(request: Request) -> tuple[Session | None, FormHandler, Response | None]:
            session = None if public else self.session(request)
            try:
                check_origin(request)
                if not public and session is None:
                    ended = self.sessions.ended(request.cookies.get(COOKIE)) if draft is not None else None
                    if draft is not None and ended is not None and (ended.user.owner or not owner):
                        return ended, draft, None
                    return None, handler, RedirectResponse("/login", status_code=303)
                if owner and session is not None and not session.user.owner:
                    raise Forbidden("only the owner may do this")
            except Forbidden as exc:
                return session, handler, self.render(request, "error.html", 403, session=session, error=str(exc))
            return session, handler, None

        def run(request: Request, form: FormData, session: Session | None, chosen: FormHandler) -> Response:
            expected = request.cookies.get(PRE_COOKIE) if public else session.csrf if session else None
            given = form.get("csrf")
            if not expected or not isinstance(given, str) or not secrets.compare_digest(given, expected):
                if chosen is not handler:  # the session has ended: nothing is kept without its token
                    return RedirectResponse("/login", status_code=303)
                return self.render(request, "error.html", 403, session=session, error=(
                    "this form has expired or did not come from this page; reload and try again"))
            return chosen(request, form, session)

        async def endpoint(request: Request) -> Response:
            limit = MAX_UPLOAD_BYTES if files else MAX_FORM_BYTES
            size = request.headers.get("content-length", "")
            if not size.isdigit():
                return PlainTextResponse("a form must say its length (Content-Length)", status_code=411)
            if int(size) > limit:
                return PlainTextResponse(f"a form here may carry at most {limit // 1024} KiB", status_code=413)
            session, chosen, refused = await run_in_threadpool(before_body, request)
            if refused is not None:
                return refused
            try:
                form = await request.form(max_files=10 if files else 0, max_fields=200)
            except ClientDisconnect:
                # the client left, or the connection guard cut off a body that came too slowly (and logged it);
                # the parser has dropped what it spooled, and nobody is left to read an answer
                return PlainTextResponse("the form did not arrive", status_code=400)
            try:
                return await run_in_threadpool(run, request, form, session, chosen)
            finally:
                await form.close()  # uploaded files are spooled to temporary files: gone now

        return endpoint

    def failed(self, client: str, what: str, name: str) -> None:
        """One failed login (or setup code, or re-authentication): counted and audited; a lockout too."""
        locked = self.auth.record_failure(client)
        self.backend.audit("web_login_failed", user=name[:64], client=client, at=what)
        if locked:
            wait = self.auth.retry_after(client)
            log.warning("web: client %s reached the failed-login limit; it must wait %d s", client, wait)
            self.backend.audit("web_lockout", client=client, seconds=wait,
                               failures=self.auth.config.login_max_failures)


class HostList:
    """The names the page answers to (the certificate's: the hostname, <hostname>.local, extra names, localhost
    and the device's addresses). Another Host header is a page of another site whose name now points here (DNS
    rebinding): refused before anything else runs."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self._names = names
        self._allowed = self._load()
        self._loaded = time.monotonic()

    def _load(self) -> frozenset[str]:
        return frozenset(n.lower().rstrip(".") for n in self._names())

    def allows(self, header: str) -> bool:
        host = host_of(header)
        if host in self._allowed:
            return True
        if is_ip(host) and time.monotonic() - self._loaded > HOSTS_REFRESH_S:
            # the device may have a new address since the list was made (DHCP); another name never gets in
            self._allowed, self._loaded = self._load(), time.monotonic()
            return host in self._allowed
        return False


def host_of(header: str) -> str:
    """The name in a Host header, without the port, lower case: "[::1]:8443" -> "::1". Anything but a name or
    an address with at most a numeric port ("doorbell.test:1@evil.test") gives "", which no list allows."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        name, rest = (header[1:end], header[end + 1:]) if end > 0 else ("", "")
    elif header.count(":") == 1:
        name, rest = header.split(":")[0], header[header.find(":"):]
    else:
        name, rest = header, ""
    if rest and not (rest[0] == ":" and rest[1:].isdigit() and rest[1:].isascii()):
        return ""
    return name.rstrip(".")


def check_origin(request: Request) -> None:
    """Refuse a POST another site made the browser send (Fetch Metadata, then Origin)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise Forbidden("this form was sent from another site")
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own:
            raise Forbidden("this form was sent from another site")


def warn_before(idle_s: float) -> float:
    """How long before the idle timeout the page warns: 2 minutes, or half the timeout when it is shorter (the
    config's shortest, 1 minute, still leaves the 20 s WCAG 2.2.1 asks for)."""
    return min(WARN_BEFORE_S, idle_s / 2)


def amount(value: float, unit: str) -> str:
    """30 -> "30 minutes", 1 -> "1 minute", 1.5 -> "1.5 minutes"."""
    return f"{value:g} {unit}{'' if value == 1 else 's'}"


def login_url(request: Request) -> str:
    """The login page, coming back to this page afterwards (not for a picture, a clip or the session check)."""
    path = request.url.path
    if path == "/" or path.startswith(NO_RETURN):
        return "/login"
    target = path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(target, safe="")


def safe_next(value: object) -> str:
    """Where to go after login: a path of this site only (no scheme, no host, no "//" or backslash that a browser
    would read as another host, no control characters); anything else is "/"."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return "/"
    if value.startswith("//") or "\\" in value or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.path in ("/login", "/logout", "/setup"):
        return "/"
    return value


def _aware(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None


def local_iso(value: object) -> str:
    """A stored UTC time as local ISO 8601 with its offset (for <time datetime>); other text as it is."""
    moment = _aware(value)
    return moment.astimezone().isoformat(timespec="seconds") if moment else str(value or "")


def local_clock(value: object) -> str:
    """The local time of day, HH:MM:SS (the events page lists one local day)."""
    moment = _aware(value)
    return f"{moment.astimezone():%H:%M:%S}" if moment else str(value or "")


def set_session_cookie(response: Response, sid: str) -> None:
    response.set_cookie(COOKIE, sid, httponly=True, secure=True, samesite="strict", path="/")


def _secure(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    # not no-referrer: with it Chromium sends `Origin: null` on our own form posts, which check_origin refuses
    headers["Referrer-Policy"] = "same-origin"
    headers.setdefault("Cache-Control", "no-store")
    return response
