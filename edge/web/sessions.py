"""Sessions of the owner's page, kept in web.db: opened at login, touched by what a person does, ended by the idle
and absolute timeouts (or logout, a password change, a clock that stepped back); and the draft a decision leaves
when its session timed out before it was sent (the ticked clips only, restored for the same user after login)."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from edge.config import WebConfig
from edge.web.auth import User
from edge.web.webdb import CLOCK_SLACK_S, WebDB

log = logging.getLogger(__name__)

MAX_DRAFT_CLIPS = 500
Row = tuple[str, str, str, float, float, float | None]  # user, role, csrf, created, last_seen, ended
MAX_DRAFT_ID = 128  # a request or clip id longer than this is not one of ours: nothing is kept


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    id_hash: str
    idle_left: float = 0.0  # seconds until the idle timeout ends it (as of this request)
    absolute_left: float = 0.0  # seconds until the absolute timeout ends it whatever happens


@dataclass(frozen=True)
class Draft:
    """A decision that was being written when its session timed out: what was ticked, never the password."""

    request: str
    action: str
    clips: tuple[str, ...]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class SessionStore:
    """`now` is wall-clock seconds (injected in tests). The wall clock of a Pi is wrong at boot and steps later,
    so a session or draft stamped more than CLOCK_SLACK_S ahead of now is ended: a step back never lengthens
    one. A session that timed out is kept, marked ended, for `keep` seconds (the absolute timeout) so a form
    posted with its cookie and CSRF token can leave a draft; it is never a session again."""

    def __init__(self, db: WebDB, config: WebConfig, now: Callable[[], float]) -> None:
        self.db = db
        self.now = now
        self.idle = config.idle_timeout_min * 60
        self.absolute = config.absolute_timeout_h * 3600
        self.keep = self.absolute

    def open(self, user: User, client: str) -> str:
        """A new random session id (only its hash is stored); the cookie carries the id."""
        sid = secrets.token_urlsafe(32)
        now = self.now()
        with self.db.connect() as db:
            self._purge(db, now)
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, NULL)",
                       (_sha(sid), user.name, secrets.token_urlsafe(32), now, now, client))
        return sid

    def _expiry(self, created: float, last_seen: float) -> float:
        return min(last_seen + self.idle, created + self.absolute)

    def _load(self, db: sqlite3.Connection, sid: str, now: float) -> Row | None:
        """The session's row, after the clock checks: None when there is none, or it is stamped ahead of now (the
        clock stepped back: deleted); a session past its timeouts is marked ended (at the moment it expired)."""
        row = db.execute(
            "SELECT s.user, u.role, s.csrf, s.created, s.last_seen, s.ended FROM sessions s "
            "JOIN users u ON u.name = s.user WHERE s.id_hash = ?", (_sha(sid),)).fetchone()
        if row is None:
            return None
        name, role, csrf, created, last_seen, ended = row
        if max(created, last_seen, ended or created) > now + CLOCK_SLACK_S:
            log.warning("web: a session stamped %.0f s ahead of the clock ended (the clock stepped back)",
                        max(created, last_seen, ended or created) - now)
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (_sha(sid),))
            return None
        if ended is None and now > self._expiry(created, last_seen):
            ended = self._expiry(created, last_seen)
            db.execute("UPDATE sessions SET ended = ? WHERE id_hash = ?", (ended, _sha(sid)))
        return name, role, csrf, created, last_seen, ended

    def session(self, sid: str | None, touch: bool = True) -> Session | None:
        """The live session for a cookie value (touch: this request was a person's, the idle time starts again);
        None when there is none or it has ended."""
        if not sid:
            return None
        now = self.now()
        with self.db.connect() as db:
            row = self._load(db, sid, now)
            if row is None or row[5] is not None:
                return None
            name, role, csrf, created, last_seen, _ = row
            if touch:
                last_seen = max(last_seen, now)
                db.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (last_seen, _sha(sid)))
        return Session(User(name, role), csrf, _sha(sid), idle_left=last_seen + self.idle - now,
                       absolute_left=created + self.absolute - now)

    def ended(self, sid: str | None) -> Session | None:
        """A session that timed out (idle or absolute) at most `keep` seconds ago: good only for leaving a draft.
        Logout, a password change, rotation and a clock step back delete sessions, so those never come here."""
        if not sid:
            return None
        now = self.now()
        with self.db.connect() as db:
            row = self._load(db, sid, now)
            if row is None:
                return None
            name, role, csrf, _, _, ended = row
            if ended is None:
                return None
            if now - ended > self.keep:
                db.execute("DELETE FROM sessions WHERE id_hash = ?", (_sha(sid),))
                return None
        return Session(User(name, role), csrf, _sha(sid))

    def rotate(self, sid: str, client: str) -> str:
        """After a re-authentication: the old id ends, a new one carries on (same user)."""
        from edge.web.auth import AuthError

        current = self.session(sid)
        if current is None:
            raise AuthError("the session has ended; log in again")
        self.close(sid)
        return self.open(current.user, client)

    def close(self, sid: str) -> None:
        with self.db.connect() as db:
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (_sha(sid),))

    def sessions_of(self, name: str) -> int:
        """How many sessions of this user are live (not ended)."""
        with self.db.connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM sessions WHERE user = ? AND ended IS NULL",
                                  (name,)).fetchone()[0])

    def _purge(self, db: sqlite3.Connection, now: float) -> None:
        """Sessions and drafts past keeping, or stamped ahead of the clock (it stepped back)."""
        ahead = now + CLOCK_SLACK_S
        db.execute("DELETE FROM sessions WHERE created > ? OR last_seen > ? OR COALESCE(ended, "
                   "MIN(last_seen + ?, created + ?)) < ?", (ahead, ahead, self.idle, self.absolute, now - self.keep))
        db.execute("DELETE FROM drafts WHERE created > ? OR created < ?", (ahead, now - self.keep))

    # --- drafts -------------------------------------------------------------------------------------------

    def save_draft(self, user: str, request: str, action: str, clips: list[str]) -> bool:
        """Keep what was ticked on a decision whose session timed out (one draft per user and request; a newer
        one replaces it). Ids that cannot be ours are refused: False, nothing kept."""
        if (action not in ("approve", "narrow") or not 0 < len(request) <= MAX_DRAFT_ID
                or len(clips) > MAX_DRAFT_CLIPS or any(not 0 < len(c) <= MAX_DRAFT_ID for c in clips)):
            return False
        now = self.now()
        with self.db.connect() as db:
            self._purge(db, now)
            db.execute("INSERT OR REPLACE INTO drafts VALUES (?, ?, ?, ?, ?)",
                       (user, request, action, json.dumps(clips), now))
        return True

    def take_draft(self, user: str, request: str) -> Draft | None:
        """The user's draft for this request, once: it is deleted as it is handed out (or when it is too old, or
        stamped ahead of the clock)."""
        now = self.now()
        with self.db.connect() as db:
            row = db.execute("SELECT action, clips, created FROM drafts WHERE user = ? AND request = ?",
                             (user, request)).fetchone()
            if row is None:
                return None
            db.execute("DELETE FROM drafts WHERE user = ? AND request = ?", (user, request))
        action, clips, created = row
        if created > now + CLOCK_SLACK_S or now - created > self.keep:
            return None
        try:
            ticked = json.loads(clips)
        except ValueError:
            return None
        if not isinstance(ticked, list) or not all(isinstance(c, str) for c in ticked):
            return None
        return Draft(request, str(action), tuple(ticked))
