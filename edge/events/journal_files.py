"""The event journal's file under the state dir: opening it from config, the migration from the MQTT outbox
(mqtt-outbox.sqlite3, atomic for a SIGKILL at any step), the in-memory journal for a read-only state dir, and the
read-only view `events list` uses."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from edge.clock import Clock
from edge.config import Config
from edge.crashpoints import crash_point
from edge.diskfaults import connect_readonly
from edge.errors import StorageError
from edge.events.bus import Event
from edge.events.journal import EventJournal, HistoryBounds, QueueBounds
from edge.events.journal_schema import MQTT, SCHEMA_VERSION, copy_outbox, create_private
from edge.fsutil import fsync_file
from edge.layout import StateLayout

log = logging.getLogger(__name__)


def journal_path(config: Config) -> Path:
    return StateLayout.of(config.state_dir).events_journal


def queue_bounds(config: Config) -> QueueBounds:
    return QueueBounds(max_events=config.mqtt.outbox_max_events, max_age_s=config.mqtt.outbox_max_age_h * 3600.0,
                       reserved_events=config.mqtt.outbox_reserved_events)


def history_bounds(config: Config) -> HistoryBounds:
    return HistoryBounds(keep_days=config.events.keep_days, max_events=config.events.max_events)


def open_journal(config: Config, clock: Clock | None = None) -> EventJournal:
    """The journal under config.state_dir (migrated from mqtt-outbox.sqlite3 first if that is all there is)."""
    migrate_outbox(config.state_dir)
    return EventJournal(journal_path(config), queues={MQTT: queue_bounds(config)}, history=history_bounds(config),
                        clock=clock)


def migrate_outbox(state_dir: Path) -> bool:
    """Move the events of <state_dir>/mqtt-outbox.sqlite3 into a new events.sqlite3; True when it did.

    Atomic for a SIGKILL at any point: the new file is built aside (`events.sqlite3.migrating`) and renamed into
    place while a write transaction on the old file keeps every other process from writing it (another process
    migrating waits, then finds the new file); the old file goes only once the new one is in place, and a leftover
    old file beside a journal (killed after the rename) is removed on the next open, never migrated twice."""
    paths = StateLayout.of(state_dir)
    old, new, tmp = paths.old_outbox, paths.events_journal, paths.events_migrating
    if not old.exists():
        return False
    if new.exists():
        _remove_database(old, "its events were migrated to " + new.name)
        return False
    migrated = False
    try:
        lock = sqlite3.connect(old, timeout=30.0, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"event journal: cannot open {old} to migrate it: {exc}") from exc
    try:
        lock.execute("PRAGMA busy_timeout=30000")
        lock.execute("BEGIN IMMEDIATE")
        if new.exists():
            return False  # another process migrated it while this one waited for the lock
        _remove_database(tmp, "a migration that was interrupted")
        create_private(tmp)
        copy = sqlite3.connect(tmp.resolve().as_uri(), uri=True, isolation_level=None)
        try:
            # Read through a second connection: WAL readers pass the write lock `lock` holds (rows still in an
            # orphaned -wal included); the copy keeps the default rollback journal, so it is one file to rename.
            copy.execute("ATTACH DATABASE ? AS src", (Path(old).resolve().as_uri() + "?mode=ro",))
            copy.execute("BEGIN IMMEDIATE")
            copy_outbox(copy)
            copy.execute("COMMIT")
        finally:
            copy.close()
        fsync_file(tmp)
        crash_point("journal-migrate-built")
        os.replace(tmp, new)
        fsync_file(paths.root)
        migrated = True
        crash_point("journal-migrate-renamed")
    except sqlite3.Error as exc:
        raise StorageError(f"event journal: cannot migrate {old}: {exc} (it is left as it was)") from exc
    except OSError as exc:
        raise StorageError(f"event journal: cannot migrate {old}: {exc} (it is left as it was)") from exc
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
    if migrated:
        log.info("event journal: migrated %s to %s", old, new)
        _remove_database(old, "its events were migrated to " + new.name)
    return migrated


def _remove_database(path: Path, why: str) -> None:
    removed = False
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            Path(f"{path}{suffix}").unlink()
            removed = True
        except FileNotFoundError:
            pass
    if removed:
        log.info("event journal: removed %s (%s)", path, why)
        fsync_file(path.parent)


def last_seq_of(state_dir: Path) -> int:
    """The last seq the state dir's journal (or the old outbox) holds, read without writing; 0 when none."""
    paths = StateLayout.of(state_dir)
    for path in (paths.events_journal, paths.old_outbox):
        if not path.exists():
            continue
        try:
            db = connect_readonly(path)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
                return int(row[0]) if row else 0
            finally:
                db.close()
        except sqlite3.Error as exc:
            log.error("event journal %s cannot be read (%s); numbering events from 1", path, exc)
            return 0
    return 0


def memory_journal(config: Config, clock: Clock | None = None) -> EventJournal:
    """The journal for a daemon whose state dir is read-only: in memory, numbering on from the last seq the
    file holds (read without writing), so events still reach the broker while the owner fixes the disk.
    Events recorded here are lost on restart, and a later run numbers on from the file's seq again."""
    journal = EventJournal(journal_path(config), queues={MQTT: queue_bounds(config)}, history=history_bounds(config),
                           clock=clock, in_memory=True)
    journal.number_from(last_seq_of(config.state_dir))
    return journal


def read_only_history(config: Config) -> tuple[Path, sqlite3.Connection | None]:
    """A read-only connection to the journal for `events list` (migrating an old outbox first when the state dir
    is writable); None when nothing was ever recorded here."""
    path = journal_path(config)
    old = StateLayout.of(config.state_dir).old_outbox
    if not path.exists() and old.exists() and os.access(config.state_dir, os.W_OK):
        migrate_outbox(config.state_dir)
    if not path.exists():
        return path, None
    try:
        db = connect_readonly(path)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        raise StorageError(f"event journal {path}: cannot read: {exc}") from exc
    if version != SCHEMA_VERSION:
        db.close()
        raise StorageError(f"event journal {path}: schema version {version}, this program reads {SCHEMA_VERSION}"
                           + (" (start the daemon once to convert it)" if version < SCHEMA_VERSION else ""))
    return path, db


def emit(config: Config, event: Event) -> Event:
    """Record an event from a separate process (a CLI command); the daemon's consumers (the MQTT publisher) deliver it.

    Returns the event with its seq. Raises StorageError when the state directory cannot be used.
    """
    with open_journal(config) as journal:
        stamped = journal.record(event)
    log.info("recorded %s event %s seq=%s for the daemon's consumers", stamped.type, stamped.id, stamped.seq)
    return stamped
