"""The clip store on a real SQLite file and real encoded clips: API, holds, recovery, retention, audit untouched."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.clock import FakeClock
from edge.errors import StorageError
from edge.recording.codec import choose_codec, make_encoder, probe
from edge.recording.rawstream import read_sidecar
from edge.recording.retention import RetentionPolicy
from edge.recording.store import ClipStore, UnknownClip, UnknownHold
from edge.recording.writer import finalize
from tests.clips import write_test_clip
from tests.recording.helpers import T0

DAY = timedelta(days=1)
POLICY = RetentionPolicy(days={"motion": 7, "person": 30, "ring": 30}, max_bytes=None, min_free_bytes=0)


def _frames(n: int = 20, shade: int = 0) -> list[np.ndarray]:
    out = []
    for i in range(n):
        image = np.full((120, 160, 3), (shade + 7 * i) % 256, np.uint8)
        image[20:60, (i * 5) % 120 : (i * 5) % 120 + 30] = 255
        out.append(image)
    return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def store(state_dir: Path, clock: FakeClock) -> ClipStore:
    return ClipStore(state_dir, clock)


def test_write_test_clip_gives_a_real_indexed_clip(store: ClipStore) -> None:
    ref = write_test_clip(store, "front", T0, _frames(20), fps=10, events=[("e1", "face")])
    assert ref.start == T0 and ref.end == T0 + timedelta(seconds=2)
    assert ref.events == ("e1",) and ref.klass == "person" and ref.frames == 20
    assert ref.path.is_file() and ref.path.is_relative_to(store.root)
    assert ref.sha256 == hashlib.sha256(ref.path.read_bytes()).hexdigest() and ref.size == ref.path.stat().st_size
    assert probe(ref.path)[0] == 20
    assert store.frame_times(ref.id) == [T0 + timedelta(seconds=i / 10) for i in range(20)]
    assert store.get(ref.id) == ref
    assert store.verify(ref.id)
    ref.path.write_bytes(ref.path.read_bytes() + b"x")
    assert not store.verify(ref.id)
    ref.path.unlink()
    assert not store.verify(ref.id)


def test_list_selects_clips_overlapping_a_half_open_window(store: ClipStore) -> None:
    a = write_test_clip(store, "front", T0, _frames(10), fps=10)  # [0 s, 1 s)
    b = write_test_clip(store, "front", T0 + timedelta(seconds=5), _frames(10), fps=10)  # [5 s, 6 s)
    c = write_test_clip(store, "side", T0 + timedelta(seconds=5), _frames(10), fps=10)
    ids = lambda refs: [r.id for r in refs]  # noqa: E731
    assert ids(store.list()) == [a.id, b.id, c.id]  # by start, then id
    assert ids(store.list(camera="front")) == [a.id, b.id]
    assert ids(store.list(start=T0 + timedelta(seconds=1))) == [b.id, c.id]  # a ends at 1 s: excluded
    assert ids(store.list(end=T0 + timedelta(seconds=5))) == [a.id]  # end is exclusive
    assert ids(store.list(camera="front", start=T0 + timedelta(seconds=0.5), end=T0 + timedelta(seconds=5.5))) == [
        a.id,
        b.id,
    ]


def test_unknown_ids_are_clear_errors(store: ClipStore) -> None:
    with pytest.raises(UnknownClip, match="no clip with id 'nope'"):
        store.get("nope")
    with pytest.raises(KeyError):
        store.frame_times("nope")
    with pytest.raises(StorageError):
        store.verify("nope")
    with pytest.raises(UnknownHold):
        store.release("hold-nope")


def test_holds_by_clip_and_by_window_including_later_clips(store: ClipStore, clock: FakeClock) -> None:
    a = write_test_clip(store, "front", T0, _frames(5), fps=10)
    b = write_test_clip(store, "side", T0, _frames(5), fps=10)
    h1 = store.hold(clip_ids=[a.id], until=T0 + 60 * DAY, reason="burglary", reference="W-2026-1")
    assert store.get(a.id).held and not store.get(b.id).held
    window = (T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    h2 = store.hold(cameras=["side"], window=window, until=T0 + 90 * DAY, reason="r", reference="W-2")
    # Recorded after the hold was placed, inside its window: covered on "side", not on "front".
    later_side = write_test_clip(store, "side", T0 + timedelta(hours=1, minutes=5), _frames(5), fps=10)
    later_front = write_test_clip(store, "front", T0 + timedelta(hours=1, minutes=5), _frames(5), fps=10)
    assert store.get(later_side.id).held and not store.get(later_front.id).held
    holds = {h.id: h for h in store.holds()}
    assert holds[h1].clip_ids == (a.id,) and holds[h2].cameras == ("side",) and holds[h2].window == window
    store.release(h1)
    assert not store.get(a.id).held
    assert not {h.id: h for h in store.holds()}[h1].active
    clock.advance((91 * DAY).total_seconds())
    assert not store.get(later_side.id).held  # past `until`: no longer protects
    assert store.expire_holds() == [h2]
    assert store.expire_holds() == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"until": T0 - DAY}, "not in the future"),
        ({"reason": " "}, "needs a reason"),
        ({"reference": ""}, "needs a reference"),
        ({"clip_ids": None, "window": None}, "needs clip_ids, a window"),
        ({"clip_ids": ["missing"]}, "unknown clip 'missing'"),
        ({"cameras": ["front"]}, "cameras only narrow a window hold"),
        ({"clip_ids": None, "window": (T0, T0)}, "not before its end"),
    ],
)
def test_bad_holds_are_refused_with_a_reason(store: ClipStore, kwargs: dict, message: str) -> None:
    ref = write_test_clip(store, "front", T0, _frames(3), fps=10)
    args = {"clip_ids": [ref.id], "until": T0 + DAY, "reason": "r", "reference": "W"} | kwargs
    with pytest.raises(StorageError, match=message):
        store.hold(**args)
    assert store.holds() == []


def _record_parts(store: ClipStore, n: int, start=T0) -> tuple[str, Path]:
    """A clip killed mid-recording: frames written, never finished."""
    codec = choose_codec("auto")
    encoder = make_encoder(codec, 160, 120, 10, 0.5, "medium")
    writer = store.begin("front", start, codec, 160, 120)
    for i, image in enumerate(_frames(n)):
        for packet in encoder.encode(image, start + timedelta(seconds=i / 10), i / 10):
            writer.write(packet)
    writer.add_event("ev-1", "motion_start", start)
    writer.abandon()
    return writer.id, writer.final


def test_recovery_keeps_complete_frames_of_a_torn_clip(store: ClipStore) -> None:
    clip_id, final = _record_parts(store, 25)
    raw = final.with_name(final.name + ".raw.part")
    side = final.with_name(final.name + ".frames.part")
    # A kill mid-frame: half of the last frame's bytes, and half of its sidecar line.
    frames = read_sidecar(side)
    raw.write_bytes(raw.read_bytes()[: -frames[-1].size // 2])
    text = side.read_text().splitlines(keepends=True)
    side.write_text("".join(text[:-1]) + text[-1][:5])
    report = store.recover()
    assert report.recovered == (clip_id,) and report.removed == () and report.orphans == ()
    ref = store.get(clip_id)
    assert ref.truncated and ref.frames == 24 and ref.events == ("ev-1",)
    assert probe(ref.path)[0] == 24 and store.verify(ref.id)
    assert sorted(p.name for p in store.root.rglob("*") if p.is_file()) == [final.name]


def test_recovery_after_a_power_cut_keeps_the_frames_the_stream_holds(store: ClipStore) -> None:
    clip_id, final = _record_parts(store, 25)
    raw = final.with_name(final.name + ".raw.part")
    side = final.with_name(final.name + ".frames.part")
    # The frame list reached the disk but the stream's last 5 frames did not (the kernel wrote the list first).
    frames = read_sidecar(side)
    raw.write_bytes(raw.read_bytes()[: -sum(f.size for f in frames[-5:])])
    report = store.recover()
    assert report.recovered == (clip_id,) and report.removed == ()
    ref = store.get(clip_id)
    assert ref.truncated and ref.frames == 20
    assert probe(ref.path)[0] == 20 and store.verify(ref.id)


def test_recovery_removes_a_clip_with_nothing_playable_and_stray_files(store: ClipStore) -> None:
    clip_id, final = _record_parts(store, 3)
    final.with_name(final.name + ".frames.part").write_text("# h264 h264 160x120\n")  # killed before frame 1
    stray = store.root / "front" / "stray.mp4"
    stray.write_bytes(b"junk")
    kept = write_test_clip(store, "front", T0 + DAY, _frames(5), fps=10)
    gone = write_test_clip(store, "front", T0 + 2 * DAY, _frames(5), fps=10)
    gone.path.unlink()  # indexed, but its file is missing
    report = store.recover()
    assert report.removed == (clip_id, gone.id) and report.orphans == (stray,)
    assert [c.id for c in store.list()] == [kept.id]
    assert {p for p in store.root.rglob("*") if p.is_file()} == {kept.path}


def test_recovery_after_a_kill_between_rename_and_index(store: ClipStore, monkeypatch: pytest.MonkeyPatch) -> None:
    clip_id, final = _record_parts(store, 12)
    # Finalise up to the rename, then "die" before the index update.
    import edge.recording.store as module

    def die(*_a, **_k):
        raise SystemExit("killed")

    original = module.ClipStore._write
    calls = {"n": 0}

    def write_then_die(self):
        calls["n"] += 1
        if final.exists():
            die()
        return original(self)

    monkeypatch.setattr(module.ClipStore, "_write", write_then_die)
    with pytest.raises(SystemExit):
        finalize(store, clip_id, final, choose_codec("auto"), truncated=False)
    monkeypatch.undo()
    assert final.exists() and store.list() == []
    store.recover()
    ref = store.get(clip_id)
    assert ref.frames == 12 and ref.truncated and store.verify(clip_id)


def test_retention_deletes_expired_keeps_held_and_never_touches_audit(store: ClipStore, clock: FakeClock) -> None:
    audit = store.state_dir / "audit"
    audit.mkdir()
    (audit / "log.jsonl").write_text('{"seq":1}\n')
    (audit / "old.mp4").write_bytes(b"an exported clip copy the audit log refers to")
    before = {p: p.read_bytes() for p in audit.rglob("*")}

    motion = write_test_clip(store, "front", T0, _frames(5), fps=10, events=[("m", "motion_start")])
    ring = write_test_clip(store, "front", T0 + timedelta(minutes=1), _frames(5), fps=10, events=[("r", "ring")])
    later = T0 + timedelta(minutes=2)
    held = write_test_clip(store, "front", later, _frames(5), fps=10, events=[("m2", "motion_start")])
    store.hold(clip_ids=[held.id], until=T0 + 365 * DAY, reason="case", reference="W-9")

    clock.advance((6 * DAY).total_seconds())
    assert store.apply_retention(POLICY, free_bytes=10**12).deleted == ()
    clock.advance((2 * DAY).total_seconds())  # day 8: motion clips are past 7 days
    report = store.apply_retention(POLICY, free_bytes=10**12)
    assert [d.clip_id for d in report.deleted] == [motion.id]
    assert not motion.path.exists() and held.path.exists() and ring.path.exists()
    clock.advance((30 * DAY).total_seconds())  # day 38: the ring clip goes too; the held one stays
    assert [d.clip_id for d in store.apply_retention(POLICY, free_bytes=10**12).deleted] == [ring.id]
    assert [c.id for c in store.list()] == [held.id]
    assert {p: p.read_bytes() for p in audit.rglob("*")} == before


def test_disk_cap_is_honoured_oldest_first_and_holds_win(store: ClipStore) -> None:
    refs = [
        write_test_clip(store, "front", T0 + timedelta(minutes=i), _frames(10, shade=i * 40), fps=10) for i in range(5)
    ]
    store.hold(clip_ids=[refs[0].id], until=T0 + DAY, reason="r", reference="W")
    sizes = [r.size for r in refs]
    cap = sum(sizes[3:]) + sizes[0]  # room for the held oldest and the two newest
    policy = RetentionPolicy(days=POLICY.days, max_bytes=cap, min_free_bytes=0)
    report = store.apply_retention(policy, free_bytes=10**12)
    assert [d.clip_id for d in report.deleted] == [refs[1].id, refs[2].id]
    assert {d.reason for d in report.deleted} == {"usage_cap"} and report.shortfall_bytes == 0
    assert store.usage_bytes() <= cap
    assert [c.id for c in store.list()] == [refs[0].id, refs[3].id, refs[4].id]


def test_a_hold_placed_after_planning_still_wins(store: ClipStore) -> None:
    ref = write_test_clip(store, "front", T0, _frames(5), fps=10)
    store.hold(clip_ids=[ref.id], until=T0 + DAY, reason="r", reference="W")
    assert store.delete(ref.id, "usage_cap") is False and ref.path.exists()


def test_writer_lock_is_exclusive(store: ClipStore) -> None:
    first = store.writer_lock()
    first.acquire()
    try:
        with pytest.raises(StorageError, match="another recorder"):
            store.writer_lock().acquire()
    finally:
        first.release()
    again = store.writer_lock()
    again.acquire()
    again.release()


def test_recovery_survives_a_garbled_part_file(store: ClipStore) -> None:
    clip_id, final = _record_parts(store, 10)
    raw = final.with_name(final.name + ".raw.part")
    raw.write_bytes(b"\xff" * raw.stat().st_size)  # not H.264 at all any more
    good = write_test_clip(store, "front", T0 + DAY, _frames(5), fps=10)
    report = store.recover()  # must not raise: one broken clip cannot keep the daemon from starting
    assert report.removed == (clip_id,)
    assert [c.id for c in store.list()] == [good.id]
    assert {p for p in store.root.rglob("*") if p.is_file()} == {good.path}
