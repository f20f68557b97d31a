"""The owner's page: getting in and the account - the CA download, first-run setup with the one-time code, login
(throttled, audited), logout, password change and the owner's viewers."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response

from edge.web.app import COOKIE, PRE_COOKIE, client_of, safe_next, set_session_cookie
from edge.web.auth import AuthError, User
from edge.web.sessions import Session

if TYPE_CHECKING:
    from edge.web.app import WebApp

log = logging.getLogger(__name__)


class Entry:
    """Setup, login, logout and the account page; the audit records of each (web_setup, web_login...)."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        self.auth = web.auth
        self.backend = web.backend

    def ca_cert(self, request: Request) -> Response:
        ca = self.web.ca_file
        if ca is None or not ca.is_file():
            return PlainTextResponse("this doorbell uses the owner's own certificate", status_code=404)
        return FileResponse(ca, media_type="application/x-x509-ca-cert", filename="doorbell-ca.crt")

    def _with_pre_token(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        token = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(32)
        response = self.web.render(request, name, status, csrf=token, **context)
        response.set_cookie(PRE_COOKIE, token, httponly=True, secure=True, samesite="strict", path="/")
        return response

    async def setup_page(self, request: Request) -> Response:
        if await run_in_threadpool(self.web.owner_exists):
            return RedirectResponse("/login", status_code=303)
        return self._with_pre_token(request, "setup.html", fingerprint=self.web.ca_fingerprint)

    def setup(self, request: Request, form: FormData, _session: Session | None) -> Response:
        client = client_of(request)
        if self.web.owner_exists():
            return RedirectResponse("/login", status_code=303)
        fingerprint = self.web.ca_fingerprint
        wait = self.auth.retry_after(client)
        if wait:
            return self._too_many(request, wait, "setup.html", fingerprint=fingerprint)
        name, password = str(form.get("username", "")), str(form.get("password", ""))
        try:
            if password != str(form.get("password2", "")):
                raise AuthError("the two passwords differ")
            user = self.auth.create_owner(str(form.get("code", "")), name, password)
        except AuthError as exc:
            if "setup code" in str(exc):
                self.web.failed(client, "setup", name)
            return self._with_pre_token(request, "setup.html", 400, error=str(exc), fingerprint=fingerprint,
                                        username=name)
        self.backend.audit("web_setup", user=user.name, client=client)
        self.web._owner_exists = True
        return self._logged_in(user, client, "/")

    async def login_page(self, request: Request) -> Response:
        """The login form; `next` (a path of this site only) is where login goes afterwards, and `draft=1` says a
        decision's ticked clips were kept when the session timed out."""
        target = safe_next(request.query_params.get("next"))
        if await run_in_threadpool(self.web.session, request) is not None:
            return RedirectResponse(target, status_code=303)
        return self._with_pre_token(request, "login.html", next=target,
                                    kept=request.query_params.get("draft") == "1")

    def login(self, request: Request, form: FormData, _session: Session | None) -> Response:
        client = client_of(request)
        name = str(form.get("username", "")).strip()
        target = safe_next(form.get("next"))
        wait = self.auth.retry_after(client)
        if wait:
            return self._too_many(request, wait, "login.html", username=name, next=target)
        user = self.auth.check(name, str(form.get("password", "")))
        if user is None:
            self.web.failed(client, "login", name)
            wait = self.auth.retry_after(client)
            if wait:
                return self._too_many(request, wait, "login.html", username=name, next=target)
            return self._with_pre_token(request, "login.html", 401, username=name, next=target,
                                        error="That user name and password do not match.")
        self.auth.clear_failures(client)
        self.backend.audit("web_login", user=user.name, client=client)
        return self._logged_in(user, client, target)

    def _too_many(self, request: Request, wait: int, template: str, **context: Any) -> Response:
        response = self._with_pre_token(request, template, 429, error=(
            f"Too many wrong attempts from this device. Try again in {wait} seconds."), **context)
        response.headers["Retry-After"] = str(wait)
        return response

    def _logged_in(self, user: User, client: str, target: str) -> Response:
        sid = self.web.sessions.open(user, client)  # a new id at every login (never the one the browser had)
        response = RedirectResponse(target, status_code=303)
        set_session_cookie(response, sid)
        response.delete_cookie(PRE_COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    def logout(self, request: Request, form: FormData, session: Session | None) -> Response:
        assert session is not None
        self.web.sessions.close(request.cookies.get(COOKIE, ""))
        self.backend.audit("web_logout", user=session.user.name, client=client_of(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/", secure=True, httponly=True, samesite="strict")
        return response

    def account_page(self, request: Request, session: Session, status: int = 200, error: str | None = None
                     ) -> Response:
        users = self.auth.users() if session.user.owner else []
        return self.web.render(request, "account.html", status, session=session, users=users, error=error)

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
