"""The one write-transaction shape every SQLite store here uses: BEGIN IMMEDIATE (the write lock taken at once, so
a check and the write it decides are one step), ROLLBACK on any error, COMMIT otherwise."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction on `db` (opened with isolation_level=None)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
