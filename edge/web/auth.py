"""Who may use the owner's page: accounts (argon2id), setup codes and login throttling, in one SQLite file under
<state_dir>/web (edge.web.webdb; so a restart forgets none of them). Sessions are edge.web.sessions."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
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
from edge.web.webdb import CLOCK_SLACK_S, WebDB

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # argon2 takes any length; a megabyte "password" is only a way to spend our CPU
SETUP_CODE_BYTES = 15  # 120 bits, shown as 24 base32 letters in groups of four

# One argon2 hash at a time in the whole process: each costs argon2_memory_kib, and a login flood must queue
# rather than multiply that on a 512 MB Pi.
HASH_LOCK = threading.Lock()

class AuthError(Exception):
    """A credential, code or form was refused; the message is safe to show the person at the page."""


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def owner(self) -> bool:
        return self.role == "owner"


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
    """Accounts, setup codes and failed logins. `now` is wall-clock seconds (injected in tests); a setup code or
    a failed login stamped ahead of it was made before the clock stepped back, and is not trusted as it is."""

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
        self.db = WebDB(self.path, now)
        self._db = self.db.connect

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
            now = self.now()
            if row[0] <= now:
                raise AuthError("that setup code has expired: run `doorbell-edge web setup-code` again")
            if row[0] > now + self.config.setup_code_ttl_min * 60 + CLOCK_SLACK_S:
                # made before the clock stepped back: how old it is cannot be told, so it is not valid
                raise AuthError("that setup code was made before the device's clock changed: run "
                                "`doorbell-edge web setup-code` again")
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
        """Needs the old password; ends every session of that user (the caller logs in afresh) and drops their
        drafts (one may have been left with an old session's cookie)."""
        new = check_password(new)
        if self.check(user.name, old) is None:
            raise AuthError("the current password is not right")
        stored = self._hash(new)
        at = rfc3339(datetime.fromtimestamp(self.now()).astimezone())
        with self._db() as db:
            db.execute("UPDATE users SET hash = ?, password_changed_at = ? WHERE name = ?", (stored, at, user.name))
            db.execute("DELETE FROM sessions WHERE user = ?", (user.name,))
            db.execute("DELETE FROM drafts WHERE user = ?", (user.name,))

    # --- throttling ---------------------------------------------------------------------------------------

    def retry_after(self, client: str) -> int:
        """Seconds this client must wait before its next login attempt (0: it may try now; never more than the
        window, whatever the clock did)."""
        now = self.now()
        window = self.config.login_window_s
        with self._db() as db:
            db.execute("DELETE FROM login_failures WHERE at <= ?", (now - window,))
            # failures stamped ahead of now (the clock stepped back) count as now: the lockout ends a window later
            db.execute("UPDATE login_failures SET at = ? WHERE at > ?", (now, now + CLOCK_SLACK_S))
            rows = [r[0] for r in db.execute(
                "SELECT at FROM login_failures WHERE client = ? ORDER BY at", (client,))]
        if len(rows) < self.config.login_max_failures:
            return 0
        # Free again once enough of the failures have left the window.
        oldest_that_matters = rows[len(rows) - self.config.login_max_failures]
        return min(int(window + 0.999), max(1, int(oldest_that_matters + window - now + 0.999)))

    def record_failure(self, client: str) -> bool:
        """Count a failed login; True when this failure starts a lockout."""
        with self._db() as db:
            db.execute("INSERT INTO login_failures VALUES (?, ?)", (client, self.now()))
        return self.retry_after(client) > 0

    def clear_failures(self, client: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM login_failures WHERE client = ?", (client,))

