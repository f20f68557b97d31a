"""Every path under the state directory, in one place: what lives where, and the names older versions used."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Names relative to the state directory. Changing one moves data: an older state dir must still be read.
CLIPS_DIR = "clips"  # recorded clips and their snapshots
CLIP_INDEX = "clips.sqlite3"  # the clip store's index
CLIP_LOCK = "clips.lock"  # one writer (the daemon) at a time
QUARANTINE_DIR = "quarantine"  # clips-<when>/: files clip recovery did not know, kept, never deleted
HOLDS = "holds.sqlite3"  # every legal hold, beside (not inside) the clip index
HOLDS_MOVED = "holds.moved"  # written once the holds of older versions are moved into HOLDS
HOLDS_LOCK = "holds.lock"  # one process moves the old holds at a time
FOOTAGE_DIR = "footage"  # footage requests
FOOTAGE_REQUESTS = "requests.sqlite3"  # in FOOTAGE_DIR: the request store (and the record of holds)
FOOTAGE_EXPORTS = "exports"  # in FOOTAGE_DIR: export bundles waiting to be collected
EXPORTS_PARTIAL = ".partial"  # in FOOTAGE_EXPORTS: <export id>/ while a bundle is built
EXPORT_LOCK = "export.lock"  # in FOOTAGE_DIR: one export at a time
SWEEP_LOCK = "sweep.lock"  # in FOOTAGE_DIR: one footage sweep at a time (each lapse and expiry audited once)
AUDIT_DIR = "audit"  # the footage audit log
AUDIT_LOG = "footage.jsonl"  # in AUDIT_DIR: the hash-chained log
AUDIT_HEAD = "footage.head"  # in AUDIT_DIR: its anchored head
AUDIT_LOCK = ".lock"  # in AUDIT_DIR: one appender at a time
KEYS_DIR = "keys"  # the device's signing key
DEVICE_KEY = "device_ed25519.pem"  # in KEYS_DIR
FACES_DIR = "faces"  # the face gallery: <slug>/person.json, templates.npy, photos/
EVENTS_JOURNAL = "events.sqlite3"  # the event journal (the device's own history)
EVENTS_MIGRATING = EVENTS_JOURNAL + ".migrating"  # the journal while OLD_OUTBOX is copied into it
OLD_OUTBOX = "mqtt-outbox.sqlite3"  # the journal before schema 2, migrated on first open
TIME_STATE = "time.json"  # the clock's high-water mark and grace period
CONTROL_SOCKET = "control.sock"  # the local control socket (the only thing the service group may reach)
SPACE_RESERVE = "space.reserve"  # disk space held back for the audit log when the disk fills
WEB_DIR = "web"  # the owner's page
WEB_DB = "web.db"  # in WEB_DIR: accounts, sessions, setup codes, failed logins
WEB_TLS_DIR = "tls"  # in WEB_DIR: the page's own certificate authority and server certificate (named by web.tls)
# Names made from these carry their own suffix and stay with their owner: SQLite's -wal/-shm/-journal,
# clips.sqlite3.unreadable-<when> (recording.recovery), footage.jsonl.torn-<n>-<hash> (footage.audit).


@dataclass(frozen=True)
class StateLayout:
    """The paths of one state directory."""

    root: Path

    @classmethod
    def of(cls, state_dir: str | os.PathLike[str]) -> StateLayout:
        return cls(Path(state_dir))

    @property
    def clips(self) -> Path:
        return self.root / CLIPS_DIR

    @property
    def clip_index(self) -> Path:
        return self.root / CLIP_INDEX

    @property
    def clip_lock(self) -> Path:
        return self.root / CLIP_LOCK

    @property
    def quarantine(self) -> Path:
        return self.root / QUARANTINE_DIR

    @property
    def holds(self) -> Path:
        return self.root / HOLDS

    @property
    def holds_moved(self) -> Path:
        return self.root / HOLDS_MOVED

    @property
    def holds_lock(self) -> Path:
        return self.root / HOLDS_LOCK

    @property
    def footage(self) -> Path:
        return self.root / FOOTAGE_DIR

    @property
    def footage_requests(self) -> Path:
        return self.footage / FOOTAGE_REQUESTS

    @property
    def footage_exports(self) -> Path:
        return self.footage / FOOTAGE_EXPORTS

    @property
    def exports_partial(self) -> Path:
        return self.footage_exports / EXPORTS_PARTIAL

    @property
    def export_lock(self) -> Path:
        return self.footage / EXPORT_LOCK

    @property
    def sweep_lock(self) -> Path:
        return self.footage / SWEEP_LOCK

    @property
    def audit(self) -> Path:
        return self.root / AUDIT_DIR

    @property
    def audit_log(self) -> Path:
        return self.audit / AUDIT_LOG

    @property
    def audit_head(self) -> Path:
        return self.audit / AUDIT_HEAD

    @property
    def audit_lock(self) -> Path:
        return self.audit / AUDIT_LOCK

    @property
    def keys(self) -> Path:
        return self.root / KEYS_DIR

    @property
    def device_key(self) -> Path:
        return self.keys / DEVICE_KEY

    @property
    def faces(self) -> Path:
        return self.root / FACES_DIR

    @property
    def events_journal(self) -> Path:
        return self.root / EVENTS_JOURNAL

    @property
    def events_migrating(self) -> Path:
        return self.root / EVENTS_MIGRATING

    @property
    def old_outbox(self) -> Path:
        return self.root / OLD_OUTBOX

    @property
    def time_state(self) -> Path:
        return self.root / TIME_STATE

    @property
    def control_socket(self) -> Path:
        return self.root / CONTROL_SOCKET

    @property
    def space_reserve(self) -> Path:
        return self.root / SPACE_RESERVE

    @property
    def web(self) -> Path:
        return self.root / WEB_DIR

    @property
    def web_db(self) -> Path:
        return self.web / WEB_DB

    @property
    def web_tls(self) -> Path:
        return self.web / WEB_TLS_DIR
