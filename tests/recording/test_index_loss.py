"""A lost or damaged clip index never deletes footage: recovery rebuilds rows from the files, keeps the bad index,
quarantines what it cannot index, and the holds (in their own file, edge.recording.holds) stay in force on the
rebuilt clips."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.clock import FakeClock
from edge.footage.store import RequestStore
from edge.recording.codec import choose_codec
from edge.recording.retention import RetentionPolicy
from edge.recording.store import INDEX_NAME, QUARANTINE_DIR, ClipStore
from edge.recording.writer import write_snapshot
from edge.service.timesync import TimeKeeper
from tests.clips import write_test_clip
from tests.recording.helpers import T0

DAY = timedelta(days=1)
POLICY = RetentionPolicy(days={"motion": 7, "person": 30, "ring": 30}, max_bytes=None, min_free_bytes=0)


def _frames(n: int, shade: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        image = np.full((120, 160, 3), (shade + 9 * i) % 256, np.uint8)
        image[30:70, (i * 6) % 120 : (i * 6) % 120 + 30] = 255
        out.append(image)
    return out


def _files(root: Path) -> dict[str, str]:
    """Every file under `root`: relative path -> sha256."""
    files = (p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _damage(index: Path, how: str) -> None:
    for suffix in ("-wal", "-shm"):  # a clean stop leaves none; make sure nothing masks the damage
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    if how == "deleted":
        index.unlink()
    elif how == "zeroed":
        index.write_bytes(b"")
    elif how == "zero-filled":
        index.write_bytes(b"\0" * index.stat().st_size)
    elif how == "header":
        data = bytearray(index.read_bytes())
        data[0:100] = b"\xa5" * 100  # the 100-byte database header: magic string, page size, counters
        index.write_bytes(bytes(data))
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["deleted", "zeroed", "zero-filled", "header"])
def test_a_lost_index_deletes_nothing_and_is_rebuilt_with_its_holds(state_dir: Path, how: str) -> None:
    clock = FakeClock(T0 + timedelta(hours=1))
    store = ClipStore(state_dir, clock)
    # Sub-second starts: the file name has whole seconds, the container's tag the microseconds.
    old = write_test_clip(store, "front", T0 + timedelta(milliseconds=700), _frames(20, 0), fps=10,
                          events=[("m1", "motion_start")])
    held = write_test_clip(store, "front", T0 + timedelta(minutes=5), _frames(15, 60), fps=10, events=[("r1", "ring")])
    side = write_test_clip(store, "side", T0 + timedelta(minutes=9), _frames(10, 120), fps=10)
    writer = store.begin("front", T0 + timedelta(minutes=12), choose_codec("auto"), 160, 120)
    writer.abandon()  # the parts of a clip the index will forget, as a kill mid-clip leaves them
    snap_jpeg = b"\xff\xd8 a snapshot \xff\xd9"
    snapshot = write_snapshot(held.path, "r1", snap_jpeg)
    store.add_snapshot("r1", held.id, "front", held.start, snapshot, hashlib.sha256(snap_jpeg).hexdigest(),
                       len(snap_jpeg))
    # The footage desk's way of holding: a hold in the hold store, linked to its request in the request store.
    until = T0 + 90 * DAY
    hold_id = store.hold(clip_ids=[held.id], until=until, reason="preservation request", reference="AG:1 case 7")
    RequestStore(state_dir).link_hold("fr-1", hold_id, 0)
    before = _files(store.root)
    assert len(before) == 6  # three clips, a snapshot, two part files
    frame_times = {ref.id: store.frame_times(ref.id) for ref in (old, held, side)}

    _damage(state_dir / INDEX_NAME, how)
    keeper = TimeKeeper(state_dir, clock, trust="always")  # the daemon's clock watcher: the clock is trusted
    store = ClipStore(state_dir, clock, keeper)  # must not raise: a bad index cannot keep the daemon down
    rebuilt_at = clock.now()
    report = store.recover()

    # Not one byte of footage is gone: clips and snapshot in place, the orphaned parts in quarantine.
    after = _files(store.root)
    assert report.quarantine is not None and report.quarantine.parent == state_dir / QUARANTINE_DIR
    quarantined = _files(state_dir / QUARANTINE_DIR)
    assert len(after) + len(quarantined) == len(before)
    assert after == {k: v for k, v in before.items() if not k.endswith(".part")}
    assert quarantined == {f"{report.quarantine.name}/{k}": v for k, v in before.items() if k.endswith(".part")}

    assert report.problem and report.index_problem
    assert set(report.rebuilt) == {old.id, held.id, side.id}
    if how in ("zero-filled", "header"):
        assert report.index_kept is not None and report.index_kept.exists()
        assert "unreadable" in report.index_problem
    else:
        assert "empty" in report.index_problem
    clips = {c.id: c for c in store.list()}
    assert set(clips) == {old.id, held.id, side.id}
    for ref in (old, held, side):
        got = clips[ref.id]
        assert got.path == ref.path and got.sha256 == ref.sha256 and got.frames == ref.frames
        assert got.camera == ref.camera and got.start == ref.start  # to the microsecond, from the container
        assert store.verify(ref.id)
        assert store.frame_times(ref.id) == frame_times[ref.id]
        # Its times are reconstructed: untrusted time (exported only if the owner includes such clips), aged
        # from the rebuild, so never deleted earlier than it would have been.
        assert not got.trusted and got.age_from == rebuilt_at
    assert [s.path for s in store.snapshots(held.id)] == [snapshot]

    # The legal hold is in force again, and retention keeps its clip past every class's age.
    assert report.holds_restored == (hold_id,)
    assert clips[held.id].held and not clips[old.id].held
    clock.advance((30 * DAY - timedelta(seconds=1)).total_seconds())  # rebuilt clips are "ring": 30 days
    assert store.apply_retention(POLICY, free_bytes=10**12).deleted == ()  # a normal clip would be gone by now
    clock.advance(1)
    deleted = {d.clip_id for d in store.apply_retention(POLICY, free_bytes=10**12).deleted}
    assert deleted == {old.id, side.id}  # normal rules for the rest, once their age from the rebuild is up
    assert held.path.exists() and store.get(held.id).held

    # A second start finds nothing new to report.
    again = store.recover()
    assert not again.problem and again.rebuilt == () and again.orphans == ()


def test_an_index_damaged_inside_is_kept_aside_and_rebuilt(state_dir: Path) -> None:
    clock = FakeClock(T0)
    store = ClipStore(state_dir, clock)
    refs = [write_test_clip(store, "front", T0 + timedelta(minutes=i), _frames(10, 30 * i), fps=10) for i in range(3)]
    index = state_dir / INDEX_NAME
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    data = bytearray(index.read_bytes())
    page = 4096
    assert len(data) > 2 * page
    data[page + 8 : 2 * page] = b"\x5a" * (page - 8)  # a b-tree page scribbled over (an SD card's bad block)
    index.write_bytes(bytes(data))
    before = _files(store.root)
    store = ClipStore(state_dir, clock)
    report = store.recover()
    assert report.index_problem and report.index_kept is not None and report.index_kept.exists()
    assert _files(store.root) == before
    assert {c.id for c in store.list()} == {r.id for r in refs}


def test_clips_list_reports_an_unreadable_index_clearly(state_dir: Path) -> None:
    clock = FakeClock(T0)
    store = ClipStore(state_dir, clock)
    write_test_clip(store, "front", T0, _frames(5, 0), fps=10)
    _damage(state_dir / INDEX_NAME, "header")
    damaged = ClipStore(state_dir, clock)
    assert damaged.index_problem is not None and INDEX_NAME in damaged.index_problem
    with pytest.raises(Exception, match="moves an unreadable index aside"):
        damaged.list()


def test_a_clip_rebuilt_on_an_untrusted_clock_ages_from_the_first_trusted_time(state_dir: Path) -> None:
    """Rebuilt while the clock is not trusted (a CLI process, or a 1970 boot): no age yet, so retention cannot
    delete it by age; the first trusted time settles it, as for any clip recorded on an untrusted clock."""
    clock = FakeClock(T0 + timedelta(hours=1))
    store = ClipStore(state_dir, clock)
    ref = write_test_clip(store, "front", T0 + timedelta(microseconds=250_001), _frames(10, 0), fps=10)
    _damage(state_dir / INDEX_NAME, "deleted")
    store = ClipStore(state_dir, clock)  # no clock watcher: the clock is not known to be trusted
    assert store.recover().rebuilt == (ref.id,)
    got = store.get(ref.id)
    assert got.start == ref.start and not got.trusted and got.age_from is None
    clock.advance(400 * DAY.total_seconds())
    assert store.apply_retention(POLICY, free_bytes=10**12).deleted == ()
    synced = TimeKeeper(state_dir, clock, trust="always")
    settled_at = clock.now()
    store = ClipStore(state_dir, clock, synced)
    assert store.apply_retention(POLICY, free_bytes=10**12).deleted == ()
    assert store.get(ref.id).age_from == settled_at
