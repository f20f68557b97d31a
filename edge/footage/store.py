"""Requests, owner actions, exports and the links to their holds in one SQLite file under <state_dir>/footage/."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.clock import parse_rfc3339, rfc3339
from edge.crashpoints import crash_point
from edge.diskfaults import connect_readonly, is_read_only
from edge.errors import RequestError, StorageError
from edge.footage.policy import OwnerAction, Segment
from edge.layout import StateLayout
from edge.permissions import private_file
from edge.recording.holds import Hold, HoldStore

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    agency_id TEXT,
    request_id TEXT,
    basis TEXT,
    verified INTEGER NOT NULL,
    raw BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    decision TEXT NOT NULL,
    reasons TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (
    agency_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    first TEXT NOT NULL,
    PRIMARY KEY (agency_id, request_id)
);
CREATE TABLE IF NOT EXISTS actions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request TEXT NOT NULL REFERENCES requests(id),
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS exports (
    id TEXT PRIMARY KEY,
    request TEXT NOT NULL REFERENCES requests(id),
    approval_seq INTEGER,
    started_at TEXT NOT NULL,
    completed_at TEXT,
    path TEXT,
    sha256 TEXT
);
-- Which request placed which hold: the hold itself (until, clips) lives in the hold store (edge.recording.holds).
-- ended_at: when the end of the hold (its expiry, or the owner's release) was audited for the request.
CREATE TABLE IF NOT EXISTS hold_links (
    request TEXT NOT NULL REFERENCES requests(id),
    hold_id TEXT NOT NULL PRIMARY KEY,
    renewal INTEGER NOT NULL,
    ended_at TEXT
);
CREATE TABLE IF NOT EXISTS moved (what TEXT PRIMARY KEY);
"""
# Before the hold store, a table `holds` (request, hold_id, until, renewal, clips, expired_at) kept a copy of each
# hold here; its rows become hold_links once (_move_hold_links) and the table is left as it was.


@dataclass(frozen=True)
class StoredRequest:
    id: str
    received_at: datetime
    agency_id: str | None
    request_id: str | None
    basis: str | None
    verified: bool
    raw: bytes
    sha256: str
    decision: str
    reasons: list[dict[str, str]]


def _ts(value: str) -> datetime:
    return parse_rfc3339(value)


class RequestStore:
    """Thin SQLite shell; every method is one transaction."""

    def __init__(self, state_dir: Path, *, create: bool = True) -> None:
        self.state_dir = Path(state_dir)
        paths = StateLayout.of(self.state_dir)
        self.dir = paths.footage
        self.path = paths.footage_requests
        # A read-only mount (a failing SD card remounted ro) still lets `requests list` and `audit verify` read.
        self.readonly = not create or is_read_only(Path(state_dir))
        if not self.readonly:
            try:
                self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                private_file(self.path)  # 0600 before SQLite makes it (its -wal/-shm copy the mode)
            except OSError as exc:
                raise StorageError(f"cannot create {self.dir}: {exc}") from exc
            with self._db() as db:
                db.executescript(SCHEMA)
            self._move_hold_links()

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            if self.readonly:
                db = connect_readonly(self.path)
            else:
                db = sqlite3.connect(self.path, timeout=30)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        try:
            with db:
                yield db
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        finally:
            db.close()

    def exists(self) -> bool:
        return self.path.exists()

    def new_id(self) -> str:
        while True:
            candidate = "fr-" + secrets.token_hex(4)
            with self._db() as db:
                if db.execute("SELECT 1 FROM requests WHERE id=?", (candidate,)).fetchone() is None:
                    return candidate

    def was_seen(self, agency_id: str, request_id: str) -> str | None:
        if self.readonly and not self.path.exists():
            return None
        with self._db() as db:
            row = db.execute(
                "SELECT first FROM seen WHERE agency_id=? AND request_id=?", (agency_id, request_id)
            ).fetchone()
        return row[0] if row else None

    def claim(self, agency_id: str, request_id: str, request: str) -> bool:
        """Atomically mark (agency, request_id) as used; False when someone already used it (a replay)."""
        with self._db() as db:
            return _claim(db, agency_id, request_id, request)

    def add(self, item: StoredRequest, *, mark_seen: bool) -> None:
        with self._db() as db:
            _insert(db, item)
            if mark_seen and item.agency_id and item.request_id:
                _claim(db, item.agency_id, item.request_id, item.id)

    @contextlib.contextmanager
    def intake(self) -> Iterator[IntakeTxn]:
        """One write transaction for a submission: the replay check, the claim of (agency, request_id) and the
        request row commit together or not at all, so a crash in between never burns an agency's id. The write
        lock is taken first (BEGIN IMMEDIATE): of two racing submissions the second waits and sees the claim."""
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield IntakeTxn(db, self.state_dir)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StorageError(f"{self.path}: {exc}") from exc
        finally:
            db.close()

    def get(self, request: str) -> StoredRequest:
        with self._db() as db:
            row = db.execute("SELECT * FROM requests WHERE id=?", (request,)).fetchone()
        if row is None:
            raise RequestError(f"no footage request with id {request!r} (see `doorbell-edge requests list`)")
        return _row(row)

    def all(self, since: datetime | None = None) -> list[StoredRequest]:
        if not self.path.exists():
            return []
        with self._db() as db:
            rows = db.execute("SELECT * FROM requests ORDER BY received_at, id").fetchall()
        items = [_row(r) for r in rows]
        return [i for i in items if since is None or i.received_at >= since]

    # --- owner actions -------------------------------------------------------------------------------------

    def add_action(self, request: str, kind: str, at: datetime, data: dict[str, Any]) -> int:
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO actions (request, kind, at, data) VALUES (?,?,?,?)",
                (request, kind, rfc3339(at), json.dumps(data, sort_keys=True)),
            )
            return int(cur.lastrowid or 0)

    def actions(self, request: str) -> list[tuple[int, str, datetime, dict[str, Any]]]:
        with self._db() as db:
            rows = db.execute("SELECT seq, kind, at, data FROM actions WHERE request=? ORDER BY seq", (request,))
            return [(int(s), str(k), _ts(a), json.loads(d)) for s, k, a, d in rows.fetchall()]

    def owner_actions(self, request: str) -> list[OwnerAction]:
        """The consents decide() reads: approvals (marked used once an export completed), denials, ratifications."""
        acts = self.actions(request)
        used = {int(d["approval"]) for _, k, _, d in acts if k == "export_complete" and d.get("approval") is not None}
        lapsed = {int(d["approval"]) for _, k, _, d in acts if k == "expiry" and d.get("approval") is not None}
        out = []
        for seq, kind, at, data in acts:
            if kind not in ("approve", "deny", "ratify"):
                continue
            out.append(
                OwnerAction(
                    kind,  # type: ignore[arg-type]
                    at,
                    seq=seq,
                    clips=frozenset(data["clips"]) if data.get("clips") is not None else None,
                    cameras=frozenset(data["cameras"]) if data.get("cameras") is not None else None,
                    data=frozenset(data["data"]) if data.get("data") is not None else None,
                    unblur=frozenset(data.get("unblur") or ()),
                    attest_original=bool(data.get("attest_original")),
                    used=seq in used,
                    lapsed=seq in lapsed,
                    note=str(data.get("note") or data.get("reason") or data.get("reference") or ""),
                    shown=_shown(data.get("shown")),
                )
            )
        return out

    # --- exports -------------------------------------------------------------------------------------------

    def start_export(self, export_id: str, request: str, approval_seq: int | None, at: datetime) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO exports (id, request, approval_seq, started_at) VALUES (?,?,?,?)",
                (export_id, request, approval_seq, rfc3339(at)),
            )

    def finish_export(
        self, export_id: str, request: str, approval_seq: int | None, at: datetime, path: Path, sha256: str
    ) -> None:
        """The export completed and its approval is used, in one transaction: there is no state in which the
        bundle is recorded but the approval could make a second one."""
        with self._db() as db:
            db.execute(
                "UPDATE exports SET completed_at=?, path=?, sha256=? WHERE id=? AND completed_at IS NULL",
                (rfc3339(at), str(path), sha256, export_id),
            )
            db.execute(
                "INSERT INTO actions (request, kind, at, data) VALUES (?,?,?,?)",
                (request, "export_complete", rfc3339(at),
                 json.dumps({"approval": approval_seq, "export": export_id}, sort_keys=True)),
            )

    def exports(self, request: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self._db() as db:
            db.row_factory = sqlite3.Row
            query = "SELECT * FROM exports" + (" WHERE request=?" if request else "") + " ORDER BY rowid"
            return [dict(r) for r in db.execute(query, (request,) if request else ()).fetchall()]

    # --- holds: the links; the holds themselves are in the hold store ------------------------------------------

    def _move_hold_links(self) -> None:
        """The first open after the hold store came: the old hold table's rows become links, in one transaction
        (after the hold store holds their until and clips durably: HoldStore's first open moved them)."""
        holds = HoldStore(self.state_dir)
        if holds.move_problem is not None:
            raise StorageError(holds.move_problem)
        with self._db() as db:
            if db.execute("SELECT 1 FROM moved WHERE what = 'holds'").fetchone() is not None:
                return
            if _has_old_holds(db):
                db.execute("INSERT OR IGNORE INTO hold_links (request, hold_id, renewal, ended_at) "
                           "SELECT request, hold_id, renewal, expired_at FROM holds ORDER BY rowid")
            crash_point("holds-move:links-before-commit")
            db.execute("INSERT INTO moved (what) VALUES ('holds')")

    def link_hold(self, request: str, hold_id: str, renewal: int) -> None:
        """Record that `request` placed hold `hold_id` (its `renewal`th renewal; 0 the first)."""
        with self._db() as db:
            db.execute("INSERT INTO hold_links (request, hold_id, renewal, ended_at) VALUES (?,?,?,NULL)",
                       (request, hold_id, renewal))

    def holds(self, request: str | None = None) -> list[dict[str, Any]]:
        """Each request's holds as {request, hold_id, until, renewal, clips (JSON), expired_at (when its end was
        audited)}, by until: the link from here, until and clips from the hold store."""
        if not self.path.exists():
            return []
        with self._db() as db:
            links = _links(db, request)
        found = _holds_by_id(self.state_dir, [h for _, h, _, _ in links], self.readonly)
        rows = []
        for req, hold_id, renewal, ended in links:
            hold = found.get(hold_id)
            if hold is None:
                log.error("hold %s of request %s is not in the hold store (lost?)", hold_id, req)
            rows.append({"request": req, "hold_id": hold_id, "until": rfc3339(hold.until) if hold else None,
                         "renewal": renewal, "clips": json.dumps(list(hold.clip_ids) if hold else []),
                         "expired_at": ended})
        return sorted(rows, key=lambda r: r["until"] or "")

    def expire_hold(self, hold_id: str, at: datetime) -> None:
        """The hold's expiry was audited for its request."""
        with self._db() as db:
            db.execute("UPDATE hold_links SET ended_at=? WHERE hold_id=?", (rfc3339(at), hold_id))

    def active_holds(self, agency_id: str, now: datetime) -> int:
        if not self.path.exists():
            return 0
        with self._db() as db:
            return _active_holds(db, self.state_dir, agency_id, now, self.readonly)

    def release_holds(self, request: str, at: datetime, data: dict[str, Any]) -> list[str]:
        """The owner lifted the request's holds: every link still open ends now and the release is recorded as an
        action, in one transaction (the hold store released the holds themselves before)."""
        with self._db() as db:
            ids = [str(r[0]) for r in db.execute(
                "SELECT hold_id FROM hold_links WHERE request=? AND ended_at IS NULL ORDER BY rowid", (request,))]
            db.execute("UPDATE hold_links SET ended_at=? WHERE request=? AND ended_at IS NULL", (rfc3339(at), request))
            db.execute("INSERT INTO actions (request, kind, at, data) VALUES (?,?,?,?)",
                       (request, "release_hold", rfc3339(at), json.dumps({**data, "holds": ids}, sort_keys=True)))
        return ids


class IntakeTxn:
    """The submission transaction's view of the store (see RequestStore.intake)."""

    def __init__(self, db: sqlite3.Connection, state_dir: Path) -> None:
        self._db = db
        self._state_dir = state_dir

    def was_seen(self, agency_id: str, request_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM seen WHERE agency_id=? AND request_id=?", (agency_id, request_id))
        return row.fetchone() is not None

    def claim(self, agency_id: str, request_id: str, request: str) -> bool:
        return _claim(self._db, agency_id, request_id, request)

    def add(self, item: StoredRequest) -> None:
        _insert(self._db, item)

    def active_holds(self, agency_id: str, now: datetime) -> int:
        """How many of this agency's preservation requests have a hold in force at `now` (placed and neither
        expired, released nor past its `until`; or judged a hold and not placed yet, after a crash)."""
        return _active_holds(self._db, self._state_dir, agency_id, now)


def _active_holds(db: sqlite3.Connection, state_dir: Path, agency_id: str, now: datetime,
                  readonly: bool = False) -> int:
    if _has_links(db):
        query = ("SELECT r.id, l.hold_id, l.ended_at FROM requests r LEFT JOIN hold_links l ON l.request = r.id "
                 "WHERE r.agency_id=? AND r.decision='hold'")
        rows = db.execute(query, (agency_id,)).fetchall()
        found = _holds_by_id(state_dir, [h for _, h, _ in rows if h is not None], readonly)
        untils = {h: found[h].until if h in found else None for _, h, _ in rows}
    else:  # a read-only store from before the hold store: its own copy of each hold
        query = ("SELECT r.id, h.hold_id, h.expired_at, h.until FROM requests r LEFT JOIN holds h ON h.request = r.id "
                 "WHERE r.agency_id=? AND r.decision='hold'")
        old = db.execute(query, (agency_id,)).fetchall()
        rows = [(r, h, e) for r, h, e, _ in old]
        untils = {h: _ts(u) for _, h, _, u in old if h is not None}
    placed: dict[str, bool] = {}
    for request, hold_id, ended in rows:
        until = untils.get(hold_id) if hold_id is not None else None
        # No link: judged a hold and not placed yet (after a crash), so in force.
        in_force = hold_id is None or (ended is None and until is not None and until > now)
        placed[request] = placed.get(request, False) or in_force
    return sum(placed.values())


def _has_old_holds(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='holds'").fetchone() is not None


def _has_links(db: sqlite3.Connection) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='hold_links'").fetchone() is not None


def _links(db: sqlite3.Connection, request: str | None) -> list[tuple[str, str, int, str | None]]:
    """(request, hold_id, renewal, ended_at) of every link (or one request's), in the order they were made; from
    the old hold table in a read-only store the hold store has not been opened on yet."""
    table, ended = ("hold_links", "ended_at") if _has_links(db) else ("holds", "expired_at")
    if table == "holds" and not _has_old_holds(db):
        return []
    query = f"SELECT request, hold_id, renewal, {ended} FROM {table}" + (" WHERE request=?" if request else "")
    return [(str(r), str(h), int(n), e) for r, h, n, e in db.execute(query + " ORDER BY rowid",
                                                                      (request,) if request else ())]


def _holds_by_id(state_dir: Path, ids: list[str], readonly: bool) -> dict[str, Hold]:
    if not ids:
        return {}
    return {h.id: h for h in HoldStore(state_dir, readonly=readonly).holds(ids)}


def _shown(value: Any) -> tuple[Segment, ...] | None:
    """An approval's list of what the owner saw (clip parts with their sha256); None for an approval recorded
    before approvals listed their clips (it releases nothing: edge.footage.policy APPROVAL_UNLISTED)."""
    if value is None:
        return None
    return tuple(Segment(str(p["camera"]), _ts(p["start"]), _ts(p["end"]), str(p["clip"]), str(p["sha256"]))
                 for p in value)


def _claim(db: sqlite3.Connection, agency_id: str, request_id: str, request: str) -> bool:
    cur = db.execute("INSERT OR IGNORE INTO seen VALUES (?,?,?)", (agency_id, request_id, request))
    return cur.rowcount == 1


def _insert(db: sqlite3.Connection, item: StoredRequest) -> None:
    db.execute(
        "INSERT INTO requests VALUES (?,?,?,?,?,?,?,?,?,?)",
        (item.id, rfc3339(item.received_at), item.agency_id, item.request_id, item.basis, int(item.verified),
         item.raw, item.sha256, item.decision, json.dumps(item.reasons)),
    )


def _row(row: tuple[Any, ...]) -> StoredRequest:
    return StoredRequest(
        id=row[0], received_at=_ts(row[1]), agency_id=row[2], request_id=row[3], basis=row[4], verified=bool(row[5]),
        raw=bytes(row[6]), sha256=row[7], decision=row[8], reasons=json.loads(row[9]),
    )
