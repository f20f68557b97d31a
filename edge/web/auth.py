"""Who may use the owner's page: accounts (argon2id), server-side sessions, setup codes and login throttling,
all in one SQLite file under <state_dir>/web (so a restart forgets none of them)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import sqlite3
import threading
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from edge import layout
from edge.clock import rfc3339
from edge.config import WebConfig
from edge.sqlitetx import immediate

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 takes any length; a megabyte "password" is only a way to spend our CPU
SETUP_CODE_BYTES = 15  # 120 bits, shown as 24 base32 letters in groups of four

# One argon2 hash at a time in the whole process: each costs argon2_memory_kib, and a login flood must queue
# rather than multiply that on a 512 MB Pi.
HASH_LOCK = threading.Lock()

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL, created_at TEXT NOT NULL,
    password_changed_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    csrf TEXT NOT NULL, created REAL NOT NULL, last_seen REAL NOT NULL, client TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS setup_codes (code_hash TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS login_failures (client TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS login_failures_client ON login_failures(client, at);
"""


class AuthError(Exception):
    """A credential, code or form was refused; the message is safe to show the person at the page."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def owner(self) -> bool:
        return self.role == "owner"


@dataclass(frozen=True)
class Session:
    user: User
    csrf: str
    id_hash: str


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalise_code(text: str) -> str:
    """A setup code as typed (any case, spaces or dashes) in its canonical form."""
    return "".join(ch for ch in text.upper() if ch.isalnum())


def check_password(password: str) -> str:
    """The password as stored (Unicode NFC, so the same pass-phrase typed on two keyboards matches)."""
    password = unicodedata.normalize("NFC", password)
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"the password must be at least {MIN_PASSWORD} characters (a few words with spaces are fine)")
    if len(password) > MAX_PASSWORD:
        raise AuthError(f"the password must be at most {MAX_PASSWORD} characters")
    return password


class AuthStore:
    """Accounts, sessions, setup codes and failed logins. `now` is wall-clock seconds (injected in tests)."""

    def __init__(self, state_dir: Path, config: WebConfig, now: Callable[[], float]) -> None:
        paths = layout.StateLayout.of(state_dir)
        self.dir = paths.web
        self.path = paths.web_db
        self.config = config
        self.now = now
        self.hasher = PasswordHasher(time_cost=config.argon2_time_cost, memory_cost=config.argon2_memory_kib,
                                     parallelism=1)
        self.hashes_running = 0
        self.most_hashes_at_once = 0  # what the login-flood test and bench read
        self._init()

    def _init(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        db = sqlite3.connect(self.path, timeout=10)
        try:
            db.executescript(_SCHEMA)
        finally:
            db.close()
        self.path.chmod(0o600)

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            with immediate(db):
                yield db
        finally:
            db.close()
        with contextlib.suppress(OSError):
            self.path.chmod(0o600)

    # --- hashing (one at a time) ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _hashing(self) -> Iterator[None]:
        with HASH_LOCK:
            self.hashes_running += 1
            self.most_hashes_at_once = max(self.most_hashes_at_once, self.hashes_running)
            try:
                yield
            finally:
                self.hashes_running -= 1

    def _hash(self, password: str) -> str:
        with self._hashing():
            return self.hasher.hash(password)

    def _verify(self, stored: str, password: str) -> bool:
        with self._hashing():
            try:
                return self.hasher.verify(stored, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

    # --- setup --------------------------------------------------------------------------------------------

    def has_owner(self) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM users WHERE role = 'owner'").fetchone() is not None

    def new_setup_code(self) -> str:
        """A fresh one-time code (random, never derived from a serial or MAC); only its hash is kept. Any older
        code stops working."""
        raw = secrets.token_bytes(SETUP_CODE_BYTES)
        code = base64.b32encode(raw).decode().rstrip("=")
        ttl = self.config.setup_code_ttl_min * 60
        with self._db() as db:
            db.execute("DELETE FROM setup_codes")
            db.execute("INSERT INTO setup_codes VALUES (?, ?)", (_sha(code), self.now() + ttl))
        return "-".join(code[i:i + 4] for i in range(0, len(code), 4))

    def create_owner(self, code: str, name: str, password: str) -> User:
        """Spend the setup code and create the owner; refused once an owner exists."""
        name = name.strip()
        if not name or len(name) > 64:
            raise AuthError("choose a user name of 1 to 64 characters")
        password = check_password(password)
        with self._db() as db:
            if db.execute("SELECT 1 FROM users WHERE role = 'owner'").fetchone():
                raise AuthError("this doorbell already has an owner; log in instead")
            row = db.execute("SELECT expires FROM setup_codes WHERE code_hash = ?",
                             (_sha(normalise_code(code)),)).fetchone()
            if row is None:
                raise AuthError("that setup code is not valid: run `doorbell-edge web setup-code` on the doorbell")
            db.execute("DELETE FROM setup_codes")  # spent, whatever happens next
            if row[0] <= self.now():
                raise AuthError("that setup code has expired: run `doorbell-edge web setup-code` again")
        stored = self._hash(password)
        at = rfc3339(datetime.fromtimestamp(self.now()).astimezone())
        with self._db() as db:
            db.execute("INSERT INTO users VALUES (?, 'owner', ?, ?, ?)", (name, stored, at, at))
        return User(name, "owner")

    # --- accounts -----------------------------------------------------------------------------------------

    def users(self) -> list[User]:
        with self._db() as db:
            return [User(n, r) for n, r in db.execute("SELECT name, role FROM users ORDER BY role, name")]

    def add_viewer(self, name: str, password: str) -> User:
        name = name.strip()
        if not name or len(name) > 64:
            raise AuthError("choose a user name of 1 to 64 characters")
        stored = self._hash(check_password(password))
        at = rfc3339(datetime.fromtimestamp(self.now()).astimezone())
        with self._db() as db:
            if db.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise AuthError(f"there is already a user called {name!r}")
            db.execute("INSERT INTO users VALUES (?, 'viewer', ?, ?, ?)", (name, stored, at, at))
        return User(name, "viewer")

    def remove_viewer(self, name: str) -> bool:
        with self._db() as db:
            gone = db.execute("DELETE FROM users WHERE name = ? AND role = 'viewer'", (name,)).rowcount
            db.execute("DELETE FROM sessions WHERE user = ?", (name,))
        return bool(gone)

    def check(self, name: str, password: str) -> User | None:
        """The user if the password is theirs; an older, cheaper hash is upgraded on the way."""
        with self._db() as db:
            row = db.execute("SELECT role, hash FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            # Spend the same work as a real check, so a wrong name and a wrong password look alike.
            self._verify(self._dummy_hash(), password)
            return None
        role, stored = row
        if not self._verify(stored, unicodedata.normalize("NFC", password)):
            return None
        if self.hasher.check_needs_rehash(stored):
            upgraded = self._hash(unicodedata.normalize("NFC", password))
            with self._db() as db:
                db.execute("UPDATE users SET hash = ? WHERE name = ?", (upgraded, name))
        return User(name, role)

    _dummy: str | None = None

    def _dummy_hash(self) -> str:
        if AuthStore._dummy is None or not AuthStore._dummy.startswith(
                f"$argon2id$v=19$m={self.config.argon2_memory_kib},t={self.config.argon2_time_cost}"):
            AuthStore._dummy = self._hash(secrets.token_urlsafe(16))
        return AuthStore._dummy

    def stored_hash(self, name: str) -> str | None:
        with self._db() as db:
            row = db.execute("SELECT hash FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def change_password(self, user: User, old: str, new: str) -> None:
        """Needs the old password; ends every session of that user (the caller logs in afresh)."""
        new = check_password(new)
        if self.check(user.name, old) is None:
            raise AuthError("the current password is not right")
        stored = self._hash(new)
        at = rfc3339(datetime.fromtimestamp(self.now()).astimezone())
        with self._db() as db:
            db.execute("UPDATE users SET hash = ?, password_changed_at = ? WHERE name = ?", (stored, at, user.name))
            db.execute("DELETE FROM sessions WHERE user = ?", (user.name,))

    # --- sessions -----------------------------------------------------------------------------------------

    def open_session(self, user: User, client: str) -> str:
        """A new random session id (only its hash is stored); the cookie carries the id."""
        sid = secrets.token_urlsafe(32)
        now = self.now()
        with self._db() as db:
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                       (_sha(sid), user.name, secrets.token_urlsafe(32), now, now, client))
        return sid

    def session(self, sid: str | None) -> Session | None:
        """The live session for a cookie value, touched; an idle or too old one is deleted and None."""
        if not sid:
            return None
        now = self.now()
        idle = self.config.idle_timeout_min * 60
        absolute = self.config.absolute_timeout_h * 3600
        with self._db() as db:
            row = db.execute(
                "SELECT s.user, u.role, s.csrf, s.created, s.last_seen FROM sessions s JOIN users u ON u.name = s.user "
                "WHERE s.id_hash = ?", (_sha(sid),)).fetchone()
            if row is None:
                return None
            name, role, csrf, created, last_seen = row
            if now - last_seen > idle or now - created > absolute:
                db.execute("DELETE FROM sessions WHERE id_hash = ?", (_sha(sid),))
                return None
            db.execute("UPDATE sessions SET last_seen = ? WHERE id_hash = ?", (now, _sha(sid)))
        return Session(User(name, role), csrf, _sha(sid))

    def rotate(self, sid: str, client: str) -> str:
        """After a re-authentication: the old id ends, a new one carries on (same user)."""
        current = self.session(sid)
        if current is None:
            raise AuthError("the session has ended; log in again")
        self.close_session(sid)
        return self.open_session(current.user, client)

    def close_session(self, sid: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE id_hash = ?", (_sha(sid),))

    def sessions_of(self, name: str) -> int:
        with self._db() as db:
            return int(db.execute("SELECT COUNT(*) FROM sessions WHERE user = ?", (name,)).fetchone()[0])

    # --- throttling ---------------------------------------------------------------------------------------

    def retry_after(self, client: str) -> int:
        """Seconds this client must wait before its next login attempt (0: it may try now)."""
        now = self.now()
        window = self.config.login_window_s
        with self._db() as db:
            db.execute("DELETE FROM login_failures WHERE at <= ?", (now - window,))
            rows = [r[0] for r in db.execute(
                "SELECT at FROM login_failures WHERE client = ? ORDER BY at", (client,))]
        if len(rows) < self.config.login_max_failures:
            return 0
        # Free again once enough of the failures have left the window.
        oldest_that_matters = rows[len(rows) - self.config.login_max_failures]
        return max(1, int(oldest_that_matters + window - now + 0.999))

    def record_failure(self, client: str) -> bool:
        """Count a failed login; True when this failure starts a lockout."""
        with self._db() as db:
            db.execute("INSERT INTO login_failures VALUES (?, ?)", (client, self.now()))
        return self.retry_after(client) > 0

    def clear_failures(self, client: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM login_failures WHERE client = ?", (client,))

