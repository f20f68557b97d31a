"""edge/layout.py names every path under the state dir: the modules that create those files agree with it."""

from __future__ import annotations

import time
from pathlib import Path

from edge.clock import SystemClock
from edge.config import Config
from edge.diskfaults import SpaceReserve
from edge.events.journal_files import journal_path
from edge.footage.audit import AuditLog
from edge.footage.desk import FootageDesk
from edge.footage.keys import key_path
from edge.footage.store import RequestStore
from edge.layout import StateLayout
from edge.recording.holds import HoldStore
from edge.recording.store import ClipStore
from edge.service.control import socket_path
from edge.service.timesync import TimeKeeper
from edge.vision.gallery import Gallery
from edge.web.auth import AuthStore
from edge.web.tls import ensure_tls


def test_the_modules_that_own_state_files_use_the_layouts_paths(tmp_path: Path) -> None:
    paths = StateLayout.of(tmp_path)
    config = Config(storage={"state_dir": tmp_path})
    clock = SystemClock()
    store = ClipStore(tmp_path, clock)
    assert (store.root, store.index.path) == (paths.clips, paths.clip_index)
    assert store.writer_lock().path == paths.clip_lock
    audit = AuditLog(tmp_path, clock)
    assert (audit.path, audit.head_path) == (paths.audit_log, paths.audit_head)
    requests = RequestStore(tmp_path, create=True)
    assert requests.path == paths.footage_requests
    assert key_path(tmp_path) == paths.device_key
    assert journal_path(config) == paths.events_journal
    assert socket_path(tmp_path) == paths.control_socket
    assert Gallery(tmp_path).root == paths.faces
    assert SpaceReserve(tmp_path).path == paths.space_reserve
    keeper = TimeKeeper(tmp_path, clock)
    keeper.start()
    keeper.stop()
    assert paths.time_state.is_file()


def test_the_hold_store_the_audit_lock_exports_and_the_web_page_use_the_layouts_paths(tmp_path: Path) -> None:
    paths = StateLayout.of(tmp_path)
    config = Config(storage={"state_dir": tmp_path})
    clock = SystemClock()
    assert HoldStore(tmp_path, clock).path == paths.holds
    # opening the hold store the first time moves older holds (none here), under its lock, and marks that done
    assert paths.holds.is_file() and paths.holds_moved.is_file() and paths.holds_lock.is_file()
    desk = FootageDesk(config, clock)
    desk.audit.append("notification", request="r-layout", channel="test")
    assert desk.audit.lock_path == paths.audit_lock and paths.audit_lock.is_file()
    desk.store.exports()  # creates the request store, and with it the footage folder
    assert desk.exporter.recover() == []
    assert desk.exporter.exports_dir() == paths.footage_exports and paths.export_lock.is_file()
    assert AuthStore(tmp_path, config.web, time.time).path == paths.web_db and paths.web_db.is_file()
    tls = ensure_tls(config)
    assert tls.cert.parent == tls.key.parent == paths.web_tls and tls.cert.is_file()


def test_names_are_those_older_state_dirs_hold(tmp_path: Path) -> None:
    """Renaming one of these loses data in every existing state dir (tests/compat reads one made by 68299a3)."""
    paths = StateLayout.of(tmp_path)
    expected = {
        "clips": "clips", "clip_index": "clips.sqlite3", "clip_lock": "clips.lock", "quarantine": "quarantine",
        "holds": "holds.sqlite3", "holds_moved": "holds.moved", "holds_lock": "holds.lock",
        "footage": "footage", "footage_requests": "footage/requests.sqlite3", "footage_exports": "footage/exports",
        "exports_partial": "footage/exports/.partial", "export_lock": "footage/export.lock",
        "sweep_lock": "footage/sweep.lock",
        "audit": "audit", "audit_log": "audit/footage.jsonl", "audit_head": "audit/footage.head",
        "audit_lock": "audit/.lock", "keys": "keys", "device_key": "keys/device_ed25519.pem", "faces": "faces",
        "events_journal": "events.sqlite3", "events_migrating": "events.sqlite3.migrating",
        "old_outbox": "mqtt-outbox.sqlite3", "time_state": "time.json", "control_socket": "control.sock",
        "space_reserve": "space.reserve", "web": "web", "web_db": "web/web.db", "web_tls": "web/tls",
    }
    named = {n for n, v in vars(StateLayout).items() if isinstance(v, property)}
    assert named == set(expected), "a path added to (or removed from) the layout: name it here too"
    assert {n: getattr(paths, n).relative_to(tmp_path).as_posix() for n in expected} == expected


def test_paths_hang_off_the_state_dir_they_were_made_for(tmp_path: Path) -> None:
    paths = StateLayout.of(str(tmp_path))
    assert paths.root == tmp_path
    assert paths.footage_exports.parent == paths.footage and paths.old_outbox.parent == tmp_path
