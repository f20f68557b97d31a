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
from pathlib import Path

from edge.config import WebConfig
from edge.web.auth import User
from edge.web.webdb import CLOCK_SLACK_S, WebDB

log = logging.getLogger(__name__)

MAX_DRAFT_CLIPS = 500
MAX_DRAFT_ID = 128  # a request or clip id longer than this is not one of ours: nothing is kept


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    id_hash: str
    idle_left: float = 0.0  # seconds until the idle timeout ends it (as of this request)
    absolute_left: float = 0.0  # seconds until the absolute timeout ends it whatever happens


@dataclass(frozen=True)
class Row:
    """A stored session as the clock checks found it: idle for and aged (seconds), ended (when it timed out)."""

    user: User
    csrf: str
    ended: float | None
    idle_for: float
    age: float


@dataclass(frozen=True)
class Draft:
    """A decision that was being written when its session timed out: what was ticked, never the password."""

    request: str
    action: str
    clips: tuple[str, ...]


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def boot_id() -> str:
    """This boot's id (Linux): monotonic times from another boot are not comparable ("": unknown, not used)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class SessionStore:
    """`now` is wall-clock seconds and `mono` monotonic seconds (injected in tests). The wall clock of a Pi is
    wrong at boot and steps later; monotonic time never steps but starts again at each boot. So a session's
    idle time and age are the larger of the two clocks' measures while the boot is the same, and a session stamped
    more than CLOCK_SLACK_S ahead of the wall clock is ended: a step back never lengthens one. A session that
    timed out is kept, marked ended, for `keep` seconds (the absolute timeout) so a form posted with its cookie
    and CSRF token can leave a draft; it is never a session again."""

    def __init__(self, db: WebDB, config: WebConfig, now: Callable[[], float],
                 mono: Callable[[], float] | None = None, boot: str = "") -> None:
        self.db = db
        self.now = now
        self.mono = mono
        self.boot = boot if mono is not None else ""
        self.idle = config.idle_timeout_min * 60
        self.absolute = config.absolute_timeout_h * 3600
        self.keep = self.absolute

    def _mono(self) -> float | None:
        return self.mono() if self.mono is not None else None

    def open(self, user: User, client: str) -> str:
        """A new random session id (only its hash is stored); the cookie carries the id."""
        sid = secrets.token_urlsafe(32)
        now, mono = self.now(), self._mono()
        with self.db.connect() as db:
            self._purge(db, now)
            db.execute("INSERT INTO sessions (id_hash, user, csrf, created, last_seen, client, boot, mono_created, "
                       "mono_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (_sha(sid), user.name, secrets.token_urlsafe(32), now, now, client, self.boot, mono, mono))
        return sid

    def _load(self, db: sqlite3.Connection, sid: str, now: float) -> Row | None:
        """The session after the clock checks: None when there is none, or it is stamped ahead of now (the clock
        stepped back: deleted); a session past its timeouts is marked ended (at the moment it expired)."""
        row = db.execute(
            "SELECT s.user, u.role, s.csrf, s.created, s.last_seen, s.ended, s.boot, s.mono_created, s.mono_seen "
            "FROM sessions s JOIN users u ON u.name = s.user WHERE s.id_hash = ?", (_sha(sid),)).fetchone()
        if row is None:
            return None
        name, role, csrf, created, last_seen, ended, boot, mono_created, mono_seen = row
        ahead = max(created, last_seen, ended or created) - now
        if ahead > CLOCK_SLACK_S:
            log.warning("web: a session stamped %.0f s ahead of the clock ended (the clock stepped back)", ahead)
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (_sha(sid),))
            return None
        idle_for, age = now - last_seen, now - created
        mono = self._mono()
        if mono is not None and boot == self.boot and mono_seen is not None and mono_created is not None:
            idle_for, age = max(idle_for, mono - mono_seen), max(age, mono - mono_created)
        if ended is None:
            overdue = max(idle_for - self.idle, age - self.absolute)
            if overdue > 0:
                ended = now - overdue
                db.execute("UPDATE sessions SET ended = ? WHERE id_hash = ?", (ended, _sha(sid)))
        return Row(User(name, role), csrf, ended, idle_for, age)

    def session(self, sid: str | None, touch: bool = True) -> Session | None:
        """The live session for a cookie value (touch: this request was a person's, the idle time starts again);
        None when there is none or it has ended."""
        if not sid:
            return None
        now = self.now()
        with self.db.connect() as db:
            row = self._load(db, sid, now)
            if row is None or row.ended is not None:
                return None
            idle_for = row.idle_for
            if touch:
                idle_for, mono = 0.0, self._mono()
                db.execute("UPDATE sessions SET last_seen = ?, boot = ?, mono_seen = ?, mono_created = ? "
                           "WHERE id_hash = ?", (now, self.boot, mono, None if mono is None else mono - row.age,
                                                 _sha(sid)))
        return Session(row.user, row.csrf, _sha(sid), idle_left=self.idle - idle_for,
                       absolute_left=self.absolute - row.age)

    def ended(self, sid: str | None) -> Session | None:
        """A session that timed out (idle or absolute) at most `keep` seconds ago: good only for leaving a draft.
        Logout, a password change, rotation and a clock step back delete sessions, so those never come here."""
        if not sid:
            return None
        now = self.now()
        with self.db.connect() as db:
            row = self._load(db, sid, now)
            if row is None or row.ended is None:
                return None
            if now - row.ended > self.keep:
                db.execute("DELETE FROM sessions WHERE id_hash = ?", (_sha(sid),))
                return None
        return Session(row.user, row.csrf, _sha(sid))

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
