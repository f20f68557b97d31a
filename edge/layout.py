"""Every path under the state directory, in one place: what lives where, and the names older versions used."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# Names relative to the state directory. Changing one moves data: an older state dir must still be read.
CLIPS_DIR = "clips"  # recorded clips and their snapshots
CLIP_INDEX = "clips.sqlite3"  # the clip store's index
CLIP_LOCK = "clips.lock"  # one writer (the daemon) at a time
QUARANTINE_DIR = "quarantine"  # <when>/: files clip recovery did not know, kept, never deleted
FOOTAGE_DIR = "footage"  # footage requests
FOOTAGE_REQUESTS = "requests.sqlite3"  # in FOOTAGE_DIR: the request store (and the record of holds)
FOOTAGE_EXPORTS = "exports"  # in FOOTAGE_DIR: export bundles waiting to be collected
AUDIT_DIR = "audit"  # the footage audit log
AUDIT_LOG = "footage.jsonl"  # in AUDIT_DIR: the hash-chained log
AUDIT_HEAD = "footage.head"  # in AUDIT_DIR: its anchored head
KEYS_DIR = "keys"  # the device's signing key
DEVICE_KEY = "device_ed25519.pem"  # in KEYS_DIR
FACES_DIR = "faces"  # the face gallery: <slug>/person.json, templates.npy, photos/
EVENTS_JOURNAL = "events.sqlite3"  # the event journal (the device's own history)
OLD_OUTBOX = "mqtt-outbox.sqlite3"  # the journal before schema 2, migrated on first open
TIME_STATE = "time.json"  # the clock's high-water mark and grace period
CONTROL_SOCKET = "control.sock"  # the local control socket (the only thing the service group may reach)
SPACE_RESERVE = "space.reserve"  # disk space held back for the audit log when the disk fills


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
    def footage(self) -> Path:
        return self.root / FOOTAGE_DIR

    @property
    def footage_requests(self) -> Path:
        return self.footage / FOOTAGE_REQUESTS

    @property
    def footage_exports(self) -> Path:
        return self.footage / FOOTAGE_EXPORTS

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
