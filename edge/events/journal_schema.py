"""The event journal's file format: the SQLite schema, the conversion of the old MQTT outbox (schema 1), and the
history query that also runs on a read-only connection."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.errors import StorageError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
MQTT = "mqtt"


@dataclass(frozen=True)
class Stored:
    """An event of the history with where it stands for each consumer."""

    seq: int
    id: str
    type: str
    ts: datetime
    payload: str  # the wire form (JSON)
    waiting_for: tuple[str, ...]  # consumers it has not reached yet
    undelivered: Mapping[str, str]  # consumer -> why it never will (a queue limit dropped it: "size" or "age")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    ts REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS consumers (name TEXT PRIMARY KEY);
-- a row per (consumer, event) not yet delivered; type, class and ts are the event's (for the queue's limits)
CREATE TABLE IF NOT EXISTS waiting (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    type TEXT NOT NULL,
    class INTEGER NOT NULL,
    ts REAL NOT NULL,
    fed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (consumer, seq)
);
CREATE INDEX IF NOT EXISTS waiting_class_seq ON waiting (consumer, class, seq);
CREATE INDEX IF NOT EXISTS waiting_seq ON waiting (seq);
-- events a consumer's limits dropped before delivery (they stay in the history; rows go with their event)
CREATE TABLE IF NOT EXISTS undelivered (
    consumer TEXT NOT NULL,
    seq INTEGER NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (consumer, seq)
);
CREATE TABLE IF NOT EXISTS drops (
    consumer TEXT NOT NULL,
    reason TEXT NOT NULL,
    type TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (consumer, reason, type)
);
"""

# Schema 1 (edge/mqtt/outbox.py before the journal): `outbox` held the events waiting for the broker, `fed` the
# doorbell-feed marks, `drops` the counters. Copied into schema 2 from `src` (the same file, or one attached).
def _copy_v1(src: str, drops: str) -> str:
    return f"""
INSERT OR REPLACE INTO meta (key, value) SELECT key, value FROM {src}meta;
INSERT INTO events (seq, id, type, ts, payload) SELECT seq, id, type, ts, payload FROM {src}outbox;
INSERT INTO waiting (consumer, seq, id, type, class, ts, fed)
    SELECT '{MQTT}', seq, id, type, class, ts, id IN (SELECT id FROM {src}fed) FROM {src}outbox;
INSERT INTO drops (consumer, reason, type, count) SELECT '{MQTT}', reason, type, count FROM {src}{drops}
"""


# In place, in one transaction (SQLite DDL is transactional).
_FROM_V1 = f"""
ALTER TABLE drops RENAME TO drops_v1;
{_SCHEMA};
{_copy_v1("", "drops_v1")};
DROP TABLE drops_v1;
DROP TABLE fed;
DROP TABLE outbox
"""



def read_history(db: sqlite3.Connection, since: datetime | None = None, until: datetime | None = None,
                 types: Sequence[str] = (), limit: int = 100, newest: bool = False) -> list[Stored]:
    """Up to `limit` events that happened in [since, until) of the given types, in seq order: the first ones
    of the window, or with `newest` the last ones. Works on a read-only connection."""
    where: list[str] = []
    args: list[float | str] = []
    if since is not None:
        where.append("e.ts >= ?")
        args.append(since.timestamp())
    if until is not None:
        where.append("e.ts < ?")
        args.append(until.timestamp())
    if types:
        where.append(f"e.type IN ({', '.join('?' for _ in types)})")
        args.extend(types)
    rows = db.execute(
        "SELECT e.seq, e.id, e.type, e.ts, e.payload, "
        "(SELECT group_concat(consumer) FROM waiting w WHERE w.seq = e.seq), "
        "(SELECT group_concat(consumer || '=' || reason) FROM undelivered u WHERE u.seq = e.seq) "
        f"FROM events e {'WHERE ' + ' AND '.join(where) if where else ''} "
        f"ORDER BY e.seq {'DESC' if newest else 'ASC'} LIMIT ?", (*args, limit)).fetchall()
    if newest:
        rows.reverse()
    return [Stored(int(seq), str(i), str(t), datetime.fromtimestamp(float(ts), UTC), str(p),
                   tuple(sorted(str(w).split(","))) if w else (),
                   dict(pair.split("=", 1) for pair in str(u).split(",")) if u else {})
            for seq, i, t, ts, p, w, u in rows]


def upgrade(db: sqlite3.Connection, path: Path) -> None:
    """Bring an open file (inside the caller's write transaction) to SCHEMA_VERSION: create it, or convert an
    outbox of schema 1 with every waiting event, feed mark and drop counter."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StorageError(f"event journal {path}: schema version {version} is newer than this program "
                           f"understands ({SCHEMA_VERSION})")
    if version == SCHEMA_VERSION:
        return
    has_outbox = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").fetchone()
    for statement in _split(_FROM_V1 if version == 1 and has_outbox else _SCHEMA):
        db.execute(statement)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    if version == 1 and has_outbox:
        (n,) = db.execute(f"SELECT count(*) FROM waiting WHERE consumer = '{MQTT}'").fetchone()
        log.info("event journal %s: converted from the MQTT outbox (schema 1), %d events waiting for the broker",
                 path, n)


def copy_outbox(db: sqlite3.Connection) -> None:
    """Fill a new, empty file (inside the caller's write transaction) from an outbox of schema 1 attached as `src`."""
    for statement in _split(_SCHEMA + ";" + _copy_v1("src.", "drops")):
        db.execute(statement)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")


def _split(script: str) -> list[str]:  # no ';' inside literals here; comment lines dropped
    return [s.strip() for s in "\n".join(ln for ln in script.splitlines() if not ln.strip().startswith("--"))
            .split(";") if s.strip()]


def create_private(path: Path) -> None:
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
