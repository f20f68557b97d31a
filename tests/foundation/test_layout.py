"""edge/layout.py names every path under the state dir: the modules that create those files agree with it."""

from __future__ import annotations

from pathlib import Path

from edge.clock import SystemClock
from edge.config import Config
from edge.diskfaults import SpaceReserve
from edge.events.journal_files import journal_path
from edge.footage.audit import AuditLog
from edge.footage.keys import key_path
from edge.footage.store import RequestStore
from edge.layout import StateLayout
from edge.recording.store import ClipStore
from edge.service.control import socket_path
from edge.service.timesync import TimeKeeper
from edge.vision.gallery import Gallery


def test_the_modules_that_own_state_files_use_the_layouts_paths(tmp_path: Path) -> None:
    paths = StateLayout.of(tmp_path)
    config = Config(storage={"state_dir": tmp_path})
    clock = SystemClock()
    store = ClipStore(tmp_path, clock)
    assert (store.root, store._db_path) == (paths.clips, paths.clip_index)
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


def test_paths_hang_off_the_state_dir_they_were_made_for(tmp_path: Path) -> None:
    paths = StateLayout.of(str(tmp_path))
    assert paths.root == tmp_path
    assert paths.footage_exports.parent == paths.footage and paths.old_outbox.parent == tmp_path
