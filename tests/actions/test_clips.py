"""edge.actions.clips on a real clip store: list with filters, show (hash check, snapshots, covering holds; writes
nothing), copy (audited before it leaves, 0600, hash-checked, never over a file unless forced)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.actions.clips import copy_clip, list_clips, open_store, show_clip
from edge.clock import FakeClock
from edge.errors import StorageError
from edge.footage.audit import AuditLog
from edge.recording.store import ClipStore
from tests.actions.helpers import clip_with_snapshots

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> ClipStore:
    return ClipStore(tmp_path / "state", FakeClock(T0))


def test_no_clip_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"no clip store in .*empty \(nothing recorded yet"):
        open_store(tmp_path / "empty", FakeClock(T0))


def test_list_and_show(store: ClipStore) -> None:
    front = clip_with_snapshots(store, "front", T0, [("e1", "ring"), ("e2", "face")])
    side = clip_with_snapshots(store, "side", T0 + timedelta(minutes=1), [])
    store.hold(clip_ids=[front.id], until=T0 + timedelta(days=30), reason="r", reference="W-1")
    store.hold(window=(T0 + timedelta(seconds=50), T0 + timedelta(minutes=2)), cameras=["side"],
               until=T0 + timedelta(days=30), reason="r", reference="W-2")
    store = open_store(store.state_dir, FakeClock(T0))
    assert [c.id for c in list_clips(store)] == [front.id, side.id]
    assert [c.id for c in list_clips(store, camera="side")] == [side.id]
    assert [c.id for c in list_clips(store, since=T0 + timedelta(seconds=30))] == [side.id]
    assert [c.id for c in list_clips(store, until=T0 + timedelta(seconds=30))] == [front.id]

    index = store.state_dir / "clips.sqlite3"
    before = index.read_bytes() if index.exists() else None
    detail = show_clip(store, front.id)
    assert detail.clip.events == ("e1", "e2") and detail.sha256_ok
    assert sorted(s.event_id for s in detail.snapshots) == ["e1", "e2"]
    assert all(s.path.is_file() for s in detail.snapshots)
    assert [h.reference for h in detail.holds] == ["W-1"]  # W-2's window is on another camera
    assert [h.reference for h in show_clip(store, side.id).holds] == ["W-2"]
    assert (index.read_bytes() if index.exists() else None) == before  # showing writes nothing

    front.path.write_bytes(b"damaged")
    assert show_clip(store, front.id).sha256_ok is False
    with pytest.raises(StorageError, match="no clip with id 'nope'"):
        show_clip(store, "nope")


def test_copy_is_audited_private_and_checked(store: ClipStore, tmp_path: Path) -> None:
    clip = clip_with_snapshots(store, "front", T0, [("e1", "ring")])
    audit = AuditLog(store.state_dir, FakeClock(T0))
    out = tmp_path / "out"
    out.mkdir()
    done = copy_clip(store, clip.id, out, FakeClock(T0))
    assert done.dest == out / clip.path.name and done.dest.read_bytes() == clip.path.read_bytes()
    assert done.dest.stat().st_mode & 0o777 == 0o600
    with pytest.raises(StorageError, match="exists; use --force"):
        copy_clip(store, clip.id, out, FakeClock(T0))
    copy_clip(store, clip.id, out, FakeClock(T0), force=True)
    with pytest.raises(StorageError, match=r"destination folder .* does not exist"):
        copy_clip(store, clip.id, tmp_path / "nowhere" / "a.mp4", FakeClock(T0))
    assert [r["kind"] for r in audit.records()] == ["owner_copy", "owner_copy"]  # refusals leave no record

    # a copy that fails after its record: the log says it did not happen
    (tmp_path / ".b.mp4.partial").mkdir()
    with pytest.raises(StorageError, match=f"cannot copy clip {clip.id} to"):
        copy_clip(store, clip.id, tmp_path / "b.mp4", FakeClock(T0))
    assert [r["kind"] for r in audit.records()][-2:] == ["owner_copy", "owner_copy_failed"]
    assert not (tmp_path / "b.mp4").exists()

    clip.path.write_bytes(b"damaged")
    with pytest.raises(StorageError, match="does not match its recorded sha256"):
        copy_clip(store, clip.id, tmp_path / "c.mp4", FakeClock(T0))
    assert not (tmp_path / "c.mp4").exists() and audit.verify().ok
