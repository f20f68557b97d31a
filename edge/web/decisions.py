"""The owner's page: footage requests - the list, one request's card, approve and narrow (the password again,
"I confirm", the request exactly as shown), deny, and the export of a released request."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from edge.errors import EdgeError, RequestChanged
from edge.web.app import COOKIE, client_of, set_session_cookie
from edge.web.sessions import Draft, Session

if TYPE_CHECKING:
    from edge.web.app import WebApp

log = logging.getLogger(__name__)

CHANGED = "This request changed since the page was shown; nothing was decided. Read it again below."


class Decisions:
    """Every call reaches the footage desk through edge.web.backend (edge.actions.footage, as the CLI)."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        self.auth = web.auth
        self.sessions = web.sessions
        self.backend = web.backend

    def requests_page(self, request: Request, session: Session) -> Response:
        return self.web.render(request, "requests.html", session=session, rows=self.backend.requests())

    def request_page(self, request: Request, session: Session, status: int = 200, error: str | None = None
                     ) -> Response:
        try:
            view = self.backend.request(request.path_params["request_id"])
        except EdgeError as exc:
            return self.web.render(request, "error.html", 404, session=session, error=str(exc))
        draft = self._draft(request, session, view) if error is None else None
        return self.web.render(request, "request.html", status, session=session, r=view, error=error, draft=draft)

    def keep_draft(self, request: Request, form: FormData, session: Session | None) -> Response:
        """Approve or narrow sent after the session timed out, with that session's cookie and CSRF token from the
        page itself: nothing is decided; the ticked clips are kept as a draft (never the password or "I confirm")
        and the owner logs in again, coming back to the card with those clips ticked."""
        assert session is not None
        request_id = request.path_params["request_id"]
        action = "narrow" if form.get("action") == "narrow" else "approve"
        clips = [str(c) for c in form.getlist("clip")]
        kept = self.sessions.save_draft(session.user.name, request_id, action, clips)
        if kept:
            log.info("web: a decision on request %s came after its session timed out; its ticked clips are kept "
                     "until the owner logs in again", request_id)
        query: dict[str, Any] = {"next": f"/requests/{quote(request_id, safe='')}"}
        if kept:
            query["draft"] = "1"
        return RedirectResponse(f"/login?{urlencode(query)}", status_code=303)

    def _draft(self, request: Request, session: Session, view: dict[str, Any]) -> Draft | None:
        """The owner's draft for this card, taken once: shown only while the request still waits for a decision
        and names only clips the request asks for (otherwise dropped)."""
        if not session.user.owner:
            return None
        draft = self.sessions.take_draft(session.user.name, request.path_params["request_id"])
        if draft is None:
            return None
        asked = {str(c["clip"]) for c in view["clips"]}
        if not view["decidable"] or not set(draft.clips) <= asked:
            log.warning("web: a draft for request %s was dropped: the request was decided meanwhile or the draft "
                        "names clips it does not ask for", view["id"])
            return None
        return draft

    def _refused(self, request: Request, session: Session, status: int, why: str, text: str) -> Response:
        """A decision refused after the password was right: audited (who, which request, why), nothing decided."""
        self.backend.audit("web_refused", user=session.user.name, client=client_of(request),
                           request=request.path_params["request_id"], why=why)
        return self.request_page(request, session, status, text)

    def decide(self, request: Request, form: FormData, session: Session | None) -> Response:
        """Approve or narrow: the password again, the "I confirm" box, and the request exactly as shown (the
        page's hash of the card, and the document's sha256 the footage desk checks itself)."""
        assert session is not None
        client = client_of(request)
        request_id = request.path_params["request_id"]
        wait = self.auth.retry_after(client)
        if wait:
            response = self.request_page(request, session, 429, f"Too many wrong passwords. Try again in {wait} s.")
            response.headers["Retry-After"] = str(wait)
            return response
        if self.auth.check(session.user.name, str(form.get("password", ""))) is None:
            self.web.failed(client, f"decide {request_id}", session.user.name)
            return self.request_page(request, session, 403, "The password is not right; nothing was decided.")
        if form.get("confirm") != "yes":
            return self._refused(request, session, 400, "not confirmed",
                                 "Tick \u201cI confirm\u201d to release footage.")
        try:
            view = self.backend.request(request_id)
        except EdgeError as exc:
            return self.web.render(request, "error.html", 404, session=session, error=str(exc))
        if not secrets.compare_digest(str(form.get("shown", "")), view["shown_hash"]):
            return self._refused(request, session, 409, "changed since shown", CHANGED)
        action = form.get("action")
        clips: list[str] | None = None
        if action == "narrow":
            clips = [str(c) for c in form.getlist("clip")]
            if not clips:
                return self.request_page(request, session, 400, "Tick at least one clip to narrow to.")
        elif action != "approve":
            return self.request_page(request, session, 400, "Choose Approve or Narrow.")
        elif form.get("ticks") == "shown" and set(form.getlist("clip")) != {str(c["clip"]) for c in view["clips"]}:
            # the card showed the boxes and some are unticked: Approve would send them all anyway
            return self.request_page(request, session, 400, "Approve sends every clip, and some are not ticked. "
                                     "Choose Narrow to send only the ticked clips, or tick them all.")
        try:
            self.backend.approve(request_id, session.user.name, str(form.get("seen", "")), clips)
        except RequestChanged:
            return self._refused(request, session, 409, "document changed since shown", CHANGED)
        except EdgeError as exc:
            return self._refused(request, session, 400, str(exc)[:200], f"Refused: {exc}")
        # Re-authenticated: the session id changes (the old cookie is dead).
        sid = self.sessions.rotate(request.cookies.get(COOKIE, ""), client)
        done = "narrowed" if action == "narrow" else "approved"
        response = RedirectResponse(f"/requests/{request_id}?done={done}", status_code=303)
        set_session_cookie(response, sid)
        return response

    def deny(self, request: Request, form: FormData, session: Session | None) -> Response:
        assert session is not None
        request_id = request.path_params["request_id"]
        reason = str(form.get("reason", "")).strip() or "The owner refused."
        try:
            self.backend.deny(request_id, session.user.name, reason)
        except EdgeError as exc:
            return self.request_page(request, session, 400, f"Refused: {exc}")
        return RedirectResponse(f"/requests/{request_id}?done=denied", status_code=303)

    def export(self, request: Request, form: FormData, session: Session | None) -> Response:
        """Write the released request's bundle (signed, encrypted to the agency, audited first); the page shows
        its sha256 and where it is, and never offers it or a clip for download."""
        assert session is not None
        request_id = request.path_params["request_id"]
        try:
            done = self.backend.export(request_id, session.user.name)
        except EdgeError as exc:
            return self.request_page(request, session, 400, f"Not exported: {exc}")
        log.info("web: request %s exported as %s", request_id, done.export_id)
        return RedirectResponse(f"/requests/{request_id}#exports", status_code=303)
