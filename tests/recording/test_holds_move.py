"""A state dir written by the version that kept holds in the clip index and the request store (made by
fixtures/make_holds_v1.py from commit cc6735e) is opened by the hold store: every hold moves into holds.sqlite3 with
its until, clips and request link, once, surviving a SIGKILL at each step; retention still refuses the held clip;
and losing the clip index afterwards lifts nothing."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.clock import FakeClock, parse_rfc3339, rfc3339
from edge.errors import RequestError, StorageError
from edge.footage.desk import FootageDesk
from edge.footage.store import RequestStore
from edge.recording import holds_move
from edge.recording.holds import HOLDS_NAME, HoldStore
from edge.recording.holds_move import MOVED_NAME
from edge.recording.retention import RetentionPolicy
from edge.recording.store import INDEX_NAME, ClipStore
from tests.footage.crash import killed_at
from tests.footage.factory import config
from tests.footage.test_service import find_faces

FIXTURE = Path(__file__).parent / "fixtures" / "holds_v1"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
NOW = parse_rfc3339(EXPECTED["now"])
CLIP = EXPECTED["clip"]
SHORT = RetentionPolicy(days={"motion": 1, "person": 1, "ring": 1}, max_bytes=None, min_free_bytes=0)
MOVE_POINTS = ["holds-move:before-rename", "holds-move:after-rename", "holds-move:links-before-commit"]


@pytest.fixture
def old_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(FIXTURE / "state", state)
    # git keeps no 0600 mode: give the device key the mode the old code wrote it with (else it is refused)
    for key in (state / "keys").glob("*.pem"):
        key.chmod(0o600)
    return state


def _desk(state: Path, clock: FakeClock) -> FootageDesk:
    return FootageDesk(config(state), clock, find_faces=find_faces, emit=lambda event: None)


def _old_tables(state: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The holds as the previous version kept them (read straight from its files)."""
    with sqlite3.connect(state / INDEX_NAME) as index, sqlite3.connect(state / "footage" / "requests.sqlite3") as req:
        return (index.execute("SELECT * FROM holds ORDER BY id").fetchall(),
                req.execute("SELECT * FROM holds ORDER BY rowid").fetchall())


def _check_moved(state: Path, clock: FakeClock) -> None:
    """Every hold of the old state dir is in the hold store, with its until, clips and request link."""
    holds = {h.id: h for h in HoldStore(state, clock).holds()}
    manual, window, lifted = EXPECTED["manual"], EXPECTED["window"], EXPECTED["lifted"]
    assert holds[manual["id"]].clip_ids == (CLIP,) and rfc3339(holds[manual["id"]].until) == manual["until"]
    assert holds[manual["id"]].reference == "W-77" and holds[manual["id"]].active
    assert rfc3339(holds[window["id"]].until) == window["until"] and holds[window["id"]].cameras == ("front_door",)
    assert holds[window["id"]].window is not None and holds[window["id"]].active
    assert rfc3339(holds[lifted["id"]].until) == lifted["until"]
    assert holds[lifted["id"]].released is not None and not holds[lifted["id"]].active
    request_holds = EXPECTED["request_holds"]
    assert len(holds) == 3 + len(request_holds)
    for row in request_holds:
        hold = holds[row["hold_id"]]
        assert rfc3339(hold.until) == row["until"] and list(hold.clip_ids) == row["clips"] and hold.active
    links = RequestStore(state).holds()
    assert [{**h, "clips": json.loads(h["clips"])} for h in links] == request_holds


def test_an_old_state_dir_keeps_every_hold_with_its_until_clips_and_request(old_state: Path) -> None:
    before = _old_tables(old_state)
    clock = FakeClock(NOW)
    store = ClipStore(old_state, clock)
    assert (old_state / HOLDS_NAME).exists() and (old_state / MOVED_NAME).exists()
    _check_moved(old_state, clock)
    assert _old_tables(old_state) == before  # left as they were: the previous version can still read them

    # The footage desk sees the same holds: states, the audit's agreement, the renewal count from the link.
    desk = _desk(old_state, clock)
    states = {row["id"]: row["state"] for row in desk.rows()}
    assert states == {EXPECTED["requests"]["held"]: "held", EXPECTED["requests"]["empty"]: "held"}
    ok, message = desk.verify_audit()
    assert ok, message
    with pytest.raises(RequestError, match="already renewed 1 time"):
        desk.renew_hold(EXPECTED["requests"]["held"])

    # Retention still refuses the held clip, however old it is.
    clock.advance(timedelta(days=20).total_seconds())
    assert store.get(CLIP).held
    assert store.apply_retention(SHORT, free_bytes=10**12).deleted == ()
    assert store.get(CLIP).path.exists()

    # Opening again moves nothing twice.
    ClipStore(old_state, clock)
    _check_moved(old_state, FakeClock(NOW))


def test_holds_moved_from_an_old_state_dir_expire_and_lift_through_the_one_hold_store(old_state: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(old_state, clock)
    desk = _desk(old_state, clock)
    held, empty = EXPECTED["requests"]["held"], EXPECTED["requests"]["empty"]
    assert sorted(desk.release_hold(held)) == sorted(h["hold_id"] for h in EXPECTED["request_holds"]
                                                     if h["request"] == held)
    assert store.get(CLIP).held  # the manual and window holds still keep it
    clock.advance(timedelta(days=91).total_seconds())
    swept = desk.sweep()
    (none_hold,) = [h["hold_id"] for h in EXPECTED["request_holds"] if h["request"] == empty]
    assert swept == [f"{empty}: hold {none_hold} expired"]
    assert desk.sweep() == []  # audited once
    assert {row["id"]: row["state"] for row in desk.rows()} == {held: "hold_released", empty: "hold_expired"}
    assert not store.get(CLIP).held and store.expire_holds() == []  # the desk's sweep expired the manual one too
    assert store.apply_retention(SHORT, free_bytes=10**12).deleted[0].clip_id == CLIP
    ok, message = desk.verify_audit()
    assert ok, message


def test_losing_the_clip_index_after_the_move_lifts_no_hold(old_state: Path) -> None:
    clock = FakeClock(NOW)
    ClipStore(old_state, clock)  # moves the holds
    for suffix in ("", "-wal", "-shm"):
        Path(f"{old_state / INDEX_NAME}{suffix}").unlink(missing_ok=True)
    store = ClipStore(old_state, clock)
    report = store.recover()
    assert report.rebuilt == (CLIP,) and "empty" in (report.index_problem or "")
    request_clip_holds = {h["hold_id"] for h in EXPECTED["request_holds"] if h["clips"]}
    assert set(report.holds_restored) == {EXPECTED["manual"]["id"], *request_clip_holds}
    assert store.get(CLIP).held
    clock.advance(timedelta(days=60).total_seconds())
    assert store.apply_retention(SHORT, free_bytes=10**12).deleted == ()
    _check_moved(old_state, FakeClock(NOW))


@pytest.mark.parametrize("point", MOVE_POINTS)
def test_a_kill_during_the_move_loses_no_hold(old_state: Path, point: str) -> None:
    clock = FakeClock(NOW)
    before = _old_tables(old_state)
    killed_at(point, lambda: RequestStore(old_state))
    assert (old_state / HOLDS_NAME).exists() == (point != "holds-move:before-rename")
    assert _old_tables(old_state) == before
    _check_moved(old_state, clock)
    store = ClipStore(old_state, clock)
    assert store.get(CLIP).held
    assert not any(p.name.endswith(".new") for p in old_state.iterdir())


def test_a_read_only_opener_reads_the_old_holds_and_writes_nothing(old_state: Path) -> None:
    store = RequestStore(old_state, create=False)
    rows = store.holds()
    assert [{**h, "clips": json.loads(h["clips"])} for h in rows] == EXPECTED["request_holds"]
    assert store.active_holds("metro-pd", NOW) == 2
    assert not (old_state / HOLDS_NAME).exists() and not (old_state / MOVED_NAME).exists()


def test_a_lost_hold_store_is_neither_filled_again_from_the_stale_old_tables_nor_started_empty(
    old_state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(NOW)
    ClipStore(old_state, clock)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{old_state / HOLDS_NAME}{suffix}").unlink(missing_ok=True)
    store = ClipStore(old_state, clock)
    assert "is gone although the holds were moved there" in caplog.text
    with pytest.raises(StorageError, match=HOLDS_NAME):
        store.holds()
    assert store.get(CLIP).held  # fail closed: every clip counts as held until the hold file is back
    clock.advance(timedelta(days=400).total_seconds())
    assert store.apply_retention(SHORT, free_bytes=10**12).deleted == ()
    assert store.get(CLIP).held
    assert not (old_state / HOLDS_NAME).exists()  # never made again, empty


def test_a_locked_old_index_stops_the_move_unmarked_and_the_next_open_moves_every_hold(
    old_state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(holds_move, "READ_TIMEOUT_S", 0.2)
    clock = FakeClock(NOW)
    writer = sqlite3.connect(old_state / INDEX_NAME, isolation_level=None)
    writer.execute("PRAGMA locking_mode=EXCLUSIVE")  # another process holds the old index: readers are locked out
    writer.execute("BEGIN EXCLUSIVE")
    try:
        store = HoldStore(old_state, clock)
        assert store.move_problem is not None and "locked" in store.move_problem, store.move_problem
        assert INDEX_NAME in store.move_problem
        assert not (old_state / MOVED_NAME).exists() and not (old_state / HOLDS_NAME).exists()
        assert not (old_state / f"{HOLDS_NAME}.new").exists()
        problem = store.problem()  # still locked: retried, still refused
        assert problem is not None and "locked" in problem
        with pytest.raises(StorageError, match="locked"):
            store.holds()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert store.problem() is None  # retried: the index's own holds are moved, not skipped
    assert (old_state / MOVED_NAME).exists()
    _check_moved(old_state, clock)


def test_a_corrupt_old_index_is_skipped_loudly_and_the_request_store_holds_still_move(
    old_state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = old_state / INDEX_NAME
    data = bytearray(index.read_bytes())
    data[:100] = b"\xff" * 100
    index.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    store = HoldStore(old_state, FakeClock(NOW))
    assert store.move_problem is None and (old_state / MOVED_NAME).exists()
    assert "is corrupt" in caplog.text and "lost" in caplog.text
    assert {h.id for h in store.holds()} == {row["hold_id"] for row in EXPECTED["request_holds"]}
