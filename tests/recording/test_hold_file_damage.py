"""A hold file the SD card damaged or lost (or holds not yet moved into it) does not take the doorbell down: the
daemon starts, clips are still recorded, retention deletes nothing (fail closed), the owner is told which file it
is, and everything resumes once the file is readable again (restored from a backup). Issue 14's review."""

from __future__ import annotations

import contextlib
import io
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from edge.app import App
from edge.clock import FakeClock
from edge.config import Config
from edge.errors import StorageError
from edge.events.bus import Event
from edge.layout import StateLayout
from edge.recording.holds import HOLDS_NAME
from edge.recording.retention import RetentionPolicy
from edge.recording.store import ClipStore
from tests.clips import write_test_clip
from tests.footage.factory import NOW
from tests.footage.test_export_e2e import FPS, frames

SHORT = RetentionPolicy(days={"motion": 1, "person": 1, "ring": 1}, max_bytes=None, min_free_bytes=0)
DAY = timedelta(days=1).total_seconds()


def _damage(path: Path) -> None:
    """What a failing SD card does to a page: the SQLite header is garbage."""
    data = bytearray(path.read_bytes())
    data[:100] = b"\xff" * 100
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _config(state_dir: Path) -> Config:
    return Config.model_validate({
        "cameras": {"front": {"source": "demo"}},
        "storage": {"state_dir": str(state_dir)},
        "mqtt": {"enabled": False},
    })


def _start_and_stop(app: App) -> None:
    """Start the daemon and stop it; when start() fails, the components it did start are stopped before the
    error goes on (App.stop() cannot: it joins camera threads that never started)."""
    try:
        app.start()
    except BaseException:
        for feature in reversed(app.features):
            with contextlib.suppress(Exception):
                feature.component.stop()
        raise
    app.stop()


def test_a_damaged_hold_file_does_not_stop_the_daemon(state_dir: Path) -> None:
    ClipStore(state_dir, FakeClock(NOW))  # the state dir of a running device: index and hold file in place
    _damage(state_dir / HOLDS_NAME)
    app = App(_config(state_dir), stdout=io.StringIO(), environ={}).build()
    seen: list[Event] = []
    app.bus.subscribe(seen.append)
    _start_and_stop(app)  # start() raised StorageError("clip index .../clips.sqlite3: file is not a database ...")
    told = [e.fields for e in seen if e.type == "system" and e.fields.get("status") == "state_unreadable"]
    assert [f["what"] for f in told] == ["holds"], seen
    assert HOLDS_NAME in str(told[0]["error"])


def _backup(path: Path, to: Path) -> None:
    shutil.copy2(path, to)
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0  # all in the main file


def test_a_damaged_hold_file_keeps_recording_deletes_nothing_and_resumes_once_restored(state_dir: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(state_dir, clock)
    held = write_test_clip(store, "front", NOW - timedelta(hours=2), frames(3, 1), FPS)
    free = write_test_clip(store, "front", NOW - timedelta(hours=1), frames(3, 2), FPS)
    store.hold(clip_ids=[held.id], until=NOW + timedelta(days=365), reason="case", reference="C-1")
    backup = state_dir.parent / "holds.backup"
    _backup(state_dir / HOLDS_NAME, backup)
    _damage(state_dir / HOLDS_NAME)

    problem = store.holds_problem()
    assert problem is not None and HOLDS_NAME in problem
    clock.advance(30 * DAY)
    report = store.apply_retention(SHORT, free_bytes=10**12)
    assert report.deleted == () and report.paused
    assert {c.id: c.held for c in store.list()} == {held.id: True, free.id: True}  # fail closed
    assert not store.delete(free.id, "test")
    recorded = write_test_clip(store, "front", clock.now(), frames(3, 3), FPS)  # recording goes on
    assert recorded.id in {c.id for c in store.list()}
    with pytest.raises(StorageError, match=HOLDS_NAME):
        store.hold(clip_ids=[recorded.id], until=clock.now() + timedelta(days=1), reason="r", reference="x")
    with pytest.raises(StorageError, match=HOLDS_NAME):
        store.holds()
    assert (state_dir / HOLDS_NAME).read_bytes()[:16] == b"\xff" * 16  # left as it was: not replaced, not moved

    shutil.copy2(backup, state_dir / HOLDS_NAME)  # the owner restores it
    assert store.holds_problem() is None
    deleted = {d.clip_id for d in store.apply_retention(SHORT, free_bytes=10**12).deleted}
    assert deleted == {free.id}  # the other two: held, and recorded just now
    assert [h.id for h in store.holds() if h.active and held.id in h.clip_ids]


def test_a_hold_file_deleted_under_a_running_store_is_not_made_again_empty(state_dir: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(state_dir, clock)
    clip = write_test_clip(store, "front", NOW - timedelta(hours=2), frames(3, 1), FPS)
    store.hold(clip_ids=[clip.id], until=NOW + timedelta(days=365), reason="case", reference="C-1")
    backup = state_dir.parent / "holds.backup"
    _backup(state_dir / HOLDS_NAME, backup)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state_dir / HOLDS_NAME}{suffix}").unlink(missing_ok=True)

    clock.advance(30 * DAY)
    assert store.get(clip.id).held  # never "no holds"
    assert store.apply_retention(SHORT, free_bytes=10**12).deleted == ()
    problem = store.holds_problem()
    assert problem is not None and "is gone" in problem and HOLDS_NAME in problem
    with pytest.raises(StorageError, match=HOLDS_NAME):
        store.holds()
    with pytest.raises(StorageError, match=HOLDS_NAME):
        store.release("hold-0")
    assert not (state_dir / HOLDS_NAME).exists()  # nothing (SQLite's ATTACH included) made an empty one

    shutil.copy2(backup, state_dir / HOLDS_NAME)
    assert store.holds_problem() is None and store.get(clip.id).held


def test_the_error_for_a_damaged_hold_file_names_the_hold_file(state_dir: Path) -> None:
    ClipStore(state_dir, FakeClock(NOW))
    _damage(state_dir / HOLDS_NAME)
    store = ClipStore(state_dir, FakeClock(NOW))
    try:
        store.list()
    except StorageError as exc:  # unreadable it may be; then the owner must be told which file it is
        assert HOLDS_NAME in str(exc), str(exc)


def test_a_damaged_request_store_at_the_first_start_does_not_stop_the_daemon(state_dir: Path) -> None:
    requests = state_dir / "footage" / "requests.sqlite3"  # a state dir of the version before the hold store
    requests.parent.mkdir(mode=0o700)
    requests.write_bytes(b"\xff" * 4096)
    app = App(_config(state_dir), stdout=io.StringIO(), environ={})
    app.build()  # raised StorageError("cannot read the preservation holds in .../requests.sqlite3 to move them")
    _start_and_stop(app)
    paths = StateLayout.of(state_dir)
    assert not paths.holds.exists() and not paths.holds_moved.exists()
    assert not paths.holds.with_name(f"{HOLDS_NAME}.new").exists()  # no half-built file left


def test_a_move_that_failed_is_retried_and_nothing_is_deleted_until_it_succeeds(state_dir: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(state_dir, clock)  # a device of the version before the hold store, with a clip
    clip = write_test_clip(store, "front", NOW - timedelta(hours=2), frames(3, 1), FPS)
    paths = StateLayout.of(state_dir)
    for path in (paths.holds, paths.holds_moved):
        path.unlink()
    paths.footage.mkdir(mode=0o700, exist_ok=True)
    paths.footage_requests.write_bytes(b"\xff" * 4096)

    store = ClipStore(state_dir, clock)
    problem = store.holds_problem()
    assert problem is not None and "requests.sqlite3" in problem
    clock.advance(30 * DAY)
    assert store.apply_retention(SHORT, free_bytes=10**12).deleted == ()
    assert store.get(clip.id).held
    assert not paths.holds.exists() and not paths.holds_moved.exists()
    assert not paths.holds.with_name(f"{HOLDS_NAME}.new").exists()

    paths.footage_requests.unlink()  # the owner restores (here: removes) the request store; the move is retried
    assert store.holds_problem() is None
    assert paths.holds.exists() and paths.holds_moved.exists()
    assert [d.clip_id for d in store.apply_retention(SHORT, free_bytes=10**12).deleted] == [clip.id]
