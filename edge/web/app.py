"""The owner's page as an ASGI app: routes, the setup gate, sessions, CSRF and security headers.

Every page is server-rendered and every action is a plain <form method=post>, so it all works with JavaScript
off; the only script refreshes the Now picture. Blocking work (argon2, SQLite, the footage desk) runs in the
thread pool, never on the event loop."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from edge.errors import EdgeError
from edge.web.auth import MIN_PASSWORD, AuthError, AuthStore, Session, User
from edge.web.backend import BUTTONS, Backend, today

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
COOKIE = "__Host-doorbell_sid"
PRE_COOKIE = "__Host-doorbell_pre"  # the CSRF token of the login and setup forms (no session yet)
OPEN_PATHS = ("/setup", "/healthz", "/ca.crt")  # everything else waits for an owner to exist
PUBLIC_PATHS = (*OPEN_PATHS, "/login")
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")


class Forbidden(Exception):
    """403: the form is not ours (CSRF), or the user's role may not do this."""


def client_of(request: Request) -> str:
    """The TCP peer: no proxy sits in front of the page, so forwarded headers are never trusted."""
    return request.client.host if request.client else "unknown"


class WebApp:
    """Holds the stores the routes share; `starlette()` builds the ASGI app."""

    def __init__(self, backend: Backend, auth: AuthStore, ca_file: Path | None = None,
                 ca_fingerprint: str | None = None) -> None:
        self.backend = backend
        self.auth = auth
        self.ca_file = ca_file
        self.ca_fingerprint = ca_fingerprint
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(min_password=MIN_PASSWORD, buttons=BUTTONS)
        self._owner_exists = False

    def owner_exists(self) -> bool:
        if not self._owner_exists:
            self._owner_exists = self.auth.has_owner()  # once true it stays true (no web route removes the owner)
        return self._owner_exists

    # --- plumbing -----------------------------------------------------------------------------------------

    def starlette(self) -> Starlette:
        get = ["GET"]
        post = ["POST"]
        routes = [
            Route("/healthz", lambda r: PlainTextResponse("ok"), methods=get),
            Route("/ca.crt", self.ca_cert, methods=get),
            Route("/setup", self.setup_page, methods=get),
            Route("/setup", self.form(self.setup, public=True), methods=post),
            Route("/login", self.login_page, methods=get),
            Route("/login", self.form(self.login, public=True), methods=post),
            Route("/logout", self.form(self.logout), methods=post),
            Route("/", self.page(self.now_page), methods=get),
            Route("/now.jpg", self.page(self.now_jpeg), methods=get),
            Route("/events", self.page(self.events_page), methods=get),
            Route("/requests", self.page(self.requests_page), methods=get),
            Route("/requests/{request_id}", self.page(self.request_page), methods=get),
            Route("/requests/{request_id}/decide", self.form(self.decide, owner=True), methods=post),
            Route("/requests/{request_id}/deny", self.form(self.deny, owner=True), methods=post),
            Route("/faces", self.page(self.faces_page, owner=True), methods=get),
            Route("/faces/forget", self.form(self.forget, owner=True), methods=post),
            Route("/audit", self.page(self.audit_page), methods=get),
            Route("/account", self.page(self.account_page), methods=get),
            Route("/account/password", self.form(self.change_password), methods=post),
            Route("/account/viewers", self.form(self.add_viewer, owner=True), methods=post),
            Route("/account/viewers/remove", self.form(self.remove_viewer, owner=True), methods=post),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        return Starlette(routes=routes, middleware=[Middleware(BaseHTTPMiddleware, dispatch=self.gate)])

    async def gate(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        """Fresh state: only setup, static files, the CA and the health check; then security headers on all."""
        path = request.url.path
        if (not path.startswith("/static/") and path not in OPEN_PATHS
                and not await run_in_threadpool(self.owner_exists)):
            response: Response = RedirectResponse("/setup", status_code=303)
            return _secure(response)
        return _secure(await call_next(request))

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        context.setdefault("session", None)
        context.setdefault("error", None)
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def session(self, request: Request) -> Session | None:
        return self.auth.session(request.cookies.get(COOKIE))

    def page(self, handler: Callable[[Request, Session], Response], *, owner: bool = False
             ) -> Callable[[Request], Awaitable[Response]]:
        """A GET page for a logged-in user (owner=True: the owner only, 403 for a viewer)."""

        def run(request: Request) -> Response:
            session = self.session(request)
            if session is None:
                return RedirectResponse("/login", status_code=303)
            if owner and not session.user.owner:
                return self.render(request, "error.html", 403, session=session,
                                   error="Only the owner may open this page.")
            return handler(request, session)

        async def endpoint(request: Request) -> Response:
            return await run_in_threadpool(run, request)

        return endpoint

    def form(self, handler: Callable[[Request, FormData, Session | None], Response], *, public: bool = False,
             owner: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """A POST action: same-origin check, CSRF token, then the session (public: the login/setup token)."""

        def run(request: Request, form: FormData) -> Response:
            session = None if public else self.session(request)
            try:
                check_origin(request)
                if public:
                    expected = request.cookies.get(PRE_COOKIE)
                else:
                    if session is None:
                        return RedirectResponse("/login", status_code=303)
                    expected = session.csrf
                given = form.get("csrf")
                if not expected or not isinstance(given, str) or not secrets.compare_digest(given, expected):
                    raise Forbidden("this form has expired or did not come from this page; reload and try again")
                if owner and session is not None and not session.user.owner:
                    raise Forbidden("only the owner may do this")
            except Forbidden as exc:
                return self.render(request, "error.html", 403, session=session, error=str(exc))
            return handler(request, form, session)

        async def endpoint(request: Request) -> Response:
            form = await request.form(max_files=0, max_fields=200)
            return await run_in_threadpool(run, request, form)

        return endpoint

    # --- setup, login, logout -----------------------------------------------------------------------------

    def ca_cert(self, request: Request) -> Response:
        if self.ca_file is None or not self.ca_file.is_file():
            return PlainTextResponse("this doorbell uses the owner's own certificate", status_code=404)
        return FileResponse(self.ca_file, media_type="application/x-x509-ca-cert", filename="doorbell-ca.crt")

    def _with_pre_token(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        token = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
        response = self.render(request, name, status, csrf=token, **context)
        response.set_cookie(PRE_COOKIE, token, httponly=True, secure=True, samesite="strict", path="/")
        return response

    async def setup_page(self, request: Request) -> Response:
        if await run_in_threadpool(self.owner_exists):
            return RedirectResponse("/login", status_code=303)
        return self._with_pre_token(request, "setup.html", fingerprint=self.ca_fingerprint)

    def setup(self, request: Request, form: FormData, _session: Session | None) -> Response:
        client = client_of(request)
        if self.owner_exists():
            return RedirectResponse("/login", status_code=303)
        wait = self.auth.retry_after(client)
        if wait:
            return self._too_many(request, wait, "setup.html", fingerprint=self.ca_fingerprint)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        try:
            if password != str(form.get("password2", "")):
                raise AuthError("the two passwords differ")
            user = self.auth.create_owner(str(form.get("code", "")), name, password)
        except AuthError as exc:
            if "setup code" in str(exc):
                self._failed(client, "setup", name)
            return self._with_pre_token(request, "setup.html", 400, error=str(exc), fingerprint=self.ca_fingerprint,
                                        username=name)
        self.backend.audit("web_setup", user=user.name, client=client)
        self._owner_exists = True
        return self._logged_in(user, client)

    async def login_page(self, request: Request) -> Response:
        if await run_in_threadpool(self.session, request) is not None:
            return RedirectResponse("/", status_code=303)
        return self._with_pre_token(request, "login.html")

    def login(self, request: Request, form: FormData, _session: Session | None) -> Response:
        client = client_of(request)
        name = str(form.get("username", "")).strip()
        wait = self.auth.retry_after(client)
        if wait:
            return self._too_many(request, wait, "login.html", username=name)
        user = self.auth.check(name, str(form.get("password", "")))
        if user is None:
            self._failed(client, "login", name)
            wait = self.auth.retry_after(client)
            if wait:
                return self._too_many(request, wait, "login.html", username=name)
            return self._with_pre_token(request, "login.html", 401, username=name,
                                        error="That user name and password do not match.")
        self.auth.clear_failures(client)
        self.backend.audit("web_login", user=user.name, client=client)
        return self._logged_in(user, client)

    def _failed(self, client: str, what: str, name: str) -> None:
        """One failed login (or setup code, or re-authentication): counted and audited; a lockout too."""
        locked = self.auth.record_failure(client)
        self.backend.audit("web_login_failed", user=name[:64], client=client, at=what)
        if locked:
            wait = self.auth.retry_after(client)
            log.warning("web: client %s reached the failed-login limit; it must wait %d s", client, wait)
            self.backend.audit("web_lockout", client=client, seconds=wait,
                               failures=self.auth.config.login_max_failures)

    def _too_many(self, request: Request, wait: int, template: str, **context: Any) -> Response:
        response = self._with_pre_token(request, template, 429, error=(
            f"Too many wrong attempts from this device. Try again in {wait} seconds."), **context)
        response.headers["Retry-After"] = str(wait)
        return response

    def _logged_in(self, user: User, client: str) -> Response:
        sid = self.auth.open_session(user, client)
        response = RedirectResponse("/", status_code=303)
        _set_session_cookie(response, sid)
        response.delete_cookie(PRE_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    def logout(self, request: Request, form: FormData, session: Session | None) -> Response:
        assert session is not None
        self.auth.close_session(request.cookies.get(COOKIE, ""))
        self.backend.audit("web_logout", user=session.user.name, client=client_of(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    # --- pages --------------------------------------------------------------------------------------------

    def now_page(self, request: Request, session: Session) -> Response:
        return self.render(request, "now.html", session=session, has_frame=self.backend.latest_jpeg() is not None,
                           ring=self.backend.latest("ring"), face=self.backend.latest("face"))

    def now_jpeg(self, request: Request, session: Session) -> Response:
        jpeg = self.backend.latest_jpeg()  # the newest frame in memory, masks applied; nothing is written
        if jpeg is None:
            return PlainTextResponse("no picture yet", status_code=404)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    def events_page(self, request: Request, session: Session) -> Response:
        try:
            day = date.fromisoformat(request.query_params.get("day", "")) if request.query_params.get("day") \
                else today()
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return self.render(request, "error.html", 400, session=session, error="That is not a date (YYYY-MM-DD).")
        events, more = self.backend.events(day, after_seq=after)
        return self.render(request, "events.html", session=session, day=day, events=events, more=more,
                           prev_day=date.fromordinal(day.toordinal() - 1), next_day=date.fromordinal(
                               day.toordinal() + 1), last_seq=events[-1]["seq"] if events else 0)

    def requests_page(self, request: Request, session: Session) -> Response:
        return self.render(request, "requests.html", session=session, rows=self.backend.requests())

    def request_page(self, request: Request, session: Session, status: int = 200, error: str | None = None
                     ) -> Response:
        try:
            view = self.backend.request(request.path_params["request_id"])
        except EdgeError as exc:
            return self.render(request, "error.html", 404, session=session, error=str(exc))
        return self.render(request, "request.html", status, session=session, r=view, error=error)

    def decide(self, request: Request, form: FormData, session: Session | None) -> Response:
        """Approve or narrow: the password again, the "I confirm" box, and the request exactly as shown."""
        assert session is not None
        client = client_of(request)
        request_id = request.path_params["request_id"]
        action = form.get("action")
        wait = self.auth.retry_after(client)
        if wait:
            response = self.request_page(request, session, 429, f"Too many wrong passwords. Try again in {wait} s.")
            response.headers["Retry-After"] = str(wait)
            return response
        if self.auth.check(session.user.name, str(form.get("password", ""))) is None:
            self._failed(client, f"decide {request_id}", session.user.name)
            return self.request_page(request, session, 403, "The password is not right; nothing was decided.")
        if form.get("confirm") != "yes":
            return self.request_page(request, session, 400, "Tick \u201cI confirm\u201d to release footage.")
        try:
            view = self.backend.request(request_id)
        except EdgeError as exc:
            return self.render(request, "error.html", 404, session=session, error=str(exc))
        if not secrets.compare_digest(str(form.get("shown", "")), view["shown_hash"]):
            return self.request_page(request, session, 409, "This request changed since the page was shown; "
                                     "nothing was decided. Read it again below.")
        clips: list[str] | None = None
        if action == "narrow":
            clips = [str(c) for c in form.getlist("clip")]
            if not clips:
                return self.request_page(request, session, 400, "Tick at least one clip to narrow to.")
        elif action != "approve":
            return self.request_page(request, session, 400, "Choose Approve or Narrow.")
        try:
            self.backend.approve(request_id, session.user.name, clips)
        except EdgeError as exc:
            return self.request_page(request, session, 400, f"Refused: {exc}")
        # Re-authenticated: the session id changes (the old cookie is dead).
        sid = self.auth.rotate(request.cookies.get(COOKIE, ""), client)
        response = RedirectResponse(f"/requests/{request_id}", status_code=303)
        _set_session_cookie(response, sid)
        return response

    def deny(self, request: Request, form: FormData, session: Session | None) -> Response:
        assert session is not None
        request_id = request.path_params["request_id"]
        reason = str(form.get("reason", "")).strip() or "The owner refused."
        try:
            self.backend.deny(request_id, session.user.name, reason)
        except EdgeError as exc:
            return self.request_page(request, session, 400, f"Refused: {exc}")
        return RedirectResponse(f"/requests/{request_id}", status_code=303)

    def faces_page(self, request: Request, session: Session) -> Response:
        return self.render(request, "faces.html", session=session, people=self.backend.people())

    def forget(self, request: Request, form: FormData, session: Session | None) -> Response:
        name = str(form.get("name", ""))
        if form.get("confirm") != "yes":
            return self.render(request, "faces.html", 400, session=session, people=self.backend.people(),
                               error=f"Tick the box to confirm forgetting {name}.")
        if not self.backend.forget(name):
            return self.render(request, "faces.html", 404, session=session, people=self.backend.people(),
                               error=f"{name} is not enrolled.")
        return RedirectResponse("/faces", status_code=303)

    def audit_page(self, request: Request, session: Session) -> Response:
        return self.render(request, "audit.html", session=session, audit=self.backend.audit_status(),
                           report=self.backend.transparency())

    def account_page(self, request: Request, session: Session, status: int = 200, error: str | None = None
                     ) -> Response:
        users = self.auth.users() if session.user.owner else []
        return self.render(request, "account.html", status, session=session, users=users, error=error)

    def change_password(self, request: Request, form: FormData, session: Session | None) -> Response:
        assert session is not None
        new = str(form.get("new", ""))
        try:
            if new != str(form.get("new2", "")):
                raise AuthError("the two new passwords differ")
            self.auth.change_password(session.user, str(form.get("old", "")), new)
        except AuthError as exc:
            return self.account_page(request, session, 400, str(exc))
        self.backend.audit("web_password", user=session.user.name, client=client_of(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    def add_viewer(self, request: Request, form: FormData, session: Session | None) -> Response:
        assert session is not None
        try:
            user = self.auth.add_viewer(str(form.get("username", "")), str(form.get("password", "")))
        except AuthError as exc:
            return self.account_page(request, session, 400, str(exc))
        self.backend.audit("web_user", user=user.name, role="viewer", change="added", by=session.user.name)
        return RedirectResponse("/account", status_code=303)

    def remove_viewer(self, request: Request, form: FormData, session: Session | None) -> Response:
        assert session is not None
        name = str(form.get("username", ""))
        if self.auth.remove_viewer(name):
            self.backend.audit("web_user", user=name, role="viewer", change="removed", by=session.user.name)
        return RedirectResponse("/account", status_code=303)


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


def _set_session_cookie(response: Response, sid: str) -> None:
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
