"""The one hold store: holds placed by the owner and by preservation requests in one file, one expiry sweep that
either the recorder's sweeper or the footage desk may run first (the desk audits each request's hold once)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.errors import StorageError
from edge.recording.holds import HOLDS_NAME, HoldStore
from edge.recording.store import ClipStore, UnknownClip
from tests.clips import write_test_clip
from tests.footage.factory import NOW, document, signed
from tests.footage.test_export_e2e import FPS, WIN_START, frames
from tests.footage.test_service import desk_for


def test_the_recorders_sweep_expires_a_request_hold_and_the_desk_audits_it_once(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    clip = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    request, decision = desk.submit(signed(document("preservation")))
    assert decision.decision == "hold"
    (link,) = desk.store.holds(request)
    (hold,) = store.holds()
    assert link["hold_id"] == hold.id and hold.clip_ids == (clip.id,) and store.get(clip.id).held
    assert (tmp_path / HOLDS_NAME).exists()

    clock.advance(timedelta(days=91).total_seconds())
    assert store.expire_holds() == [hold.id]  # the recorder's RetentionSweeper runs this first
    assert not store.get(clip.id).held
    assert desk.store.holds(request)[0]["expired_at"] is None  # not audited yet
    assert desk.sweep() == [f"{request}: hold {hold.id} expired"]
    assert desk.sweep() == [] and store.expire_holds() == []
    assert desk.rows()[0]["state"] == "hold_expired"
    assert [r["kind"] for r in desk.audit.records()].count("hold_expired") == 1
    ok, message = desk.verify_audit()
    assert ok, message


def test_a_request_with_no_clip_holds_its_time_only(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    desk = desk_for(tmp_path, clock)
    doc = document("preservation")
    doc["scope"]["cameras"] = ["side_gate"]
    request, decision = desk.submit(signed(doc))
    assert decision.decision == "hold"
    (link,) = desk.store.holds(request)
    assert link["hold_id"].startswith("none-") and link["clips"] == "[]" and link["until"] is not None
    (hold,) = HoldStore(tmp_path, clock).holds()
    assert hold.id == link["hold_id"] and hold.clip_ids == () and hold.window is None and hold.active
    assert desk.store.active_holds("metro-pd", clock.now()) == 1


def test_holding_an_unknown_clip_places_nothing(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    with pytest.raises(UnknownClip, match="cannot hold unknown clip 'nope'"):
        store.hold(clip_ids=["nope"], until=NOW + timedelta(days=1), reason="r", reference="W-1")
    assert store.holds() == []
    with pytest.raises(StorageError, match="needs clip_ids, a window, or both"):
        HoldStore(tmp_path, clock).place(until=NOW + timedelta(days=1), reason="r", reference="W-1")
