"""SIGKILL at each boundary of submit and export (a forked child, edge.crashpoints): no burned request id, no
second bundle from one approval, no lost preservation hold, and the audit chain (and the store's agreement with
it) verifies after every crash."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.errors import RequestError
from edge.footage.desk import pending_requests
from edge.footage.exporter import verify_bundle
from edge.footage.keys import device_key, public_key_b64
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .crash import killed_at
from .factory import AGENCY_BOX, NOW, config, document, signed
from .test_export_e2e import FPS, WIN_START, frames
from .test_service import desk_for

SUBMIT_POINTS = ["submit:after-intake", "submit:after-decision", "submit:before-commit", "submit:after-commit"]


@pytest.mark.parametrize("point", SUBMIT_POINTS)
def test_kill_during_submit_never_burns_the_agency_id(tmp_path: Path, point: str) -> None:
    clock = FakeClock(NOW)
    raw = signed(document("warrant"))
    killed_at(point, lambda: desk_for(tmp_path, clock).submit(raw))
    desk = desk_for(tmp_path, clock)
    committed = point == "submit:after-commit"
    assert len(desk.store.all()) == (1 if committed else 0)
    ok, message = desk.verify_audit()
    assert ok, message

    _, resent = desk.submit(raw)  # the agency sends it again
    if committed:
        assert resent.codes == ("REPLAY",)  # it was recorded: the first copy stands
    else:
        assert resent.decision == "owner_review" and resent.codes == ("VERIFIED_WARRANT",)
    assert [row["state"] for row in desk.rows()].count("waiting") == 1
    ok, message = desk.verify_audit()
    assert ok, message
    intakes = [r["data"]["request"] for r in desk.audit.records() if r["kind"] == "intake"]
    assert len(intakes) == 2 and {row["id"] for row in desk.rows()} <= set(intakes)


def test_kill_after_a_preservation_submit_still_holds_the_clips(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    clip = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    raw = signed(document("preservation"))
    killed_at("submit:after-commit", lambda: desk_for(tmp_path, clock, clips=ClipStore(tmp_path, clock)).submit(raw))
    desk = desk_for(tmp_path, clock, clips=store)
    assert desk.store.holds() == [] and store.holds() == []  # killed before the hold was placed
    (request,) = [item.id for item in desk.store.all()]
    assert desk.sweep() == [f"{request}: hold placed"]
    (hold,) = store.holds()
    assert clip.id in hold.clip_ids
    assert desk.rows()[0]["state"] == "held" and desk.sweep() == []


EXPORT_POINTS = [
    ("export:after-audit-start", False),
    ("export:before-complete", False),
    ("export:after-audit-complete", True),  # the commit point: from here on the approval is used
    ("export:after-store-complete", True),
    ("export:after-rename", True),
]


@pytest.mark.parametrize(("point", "committed"), EXPORT_POINTS)
def test_kill_during_export_never_makes_a_second_bundle(tmp_path: Path, point: str, committed: bool) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    request, _ = desk.submit(signed(document("warrant")))
    desk.approve(request)

    killed_at(point, lambda: desk_for(tmp_path, clock, clips=ClipStore(tmp_path, clock)).export(request))
    retry = desk_for(tmp_path, clock, clips=store)
    if committed:
        with pytest.raises(RequestError, match="APPROVAL_USED"):
            retry.export(request)  # recovery finishes the interrupted export first; the approval is spent
    else:
        retry.export(request)
    exports = tmp_path / "footage" / "exports"
    (bundle,) = list(exports.rglob("*.bundle"))  # exactly one, and nothing half-made beside it
    assert not list((exports / ".partial").iterdir())
    assert verify_bundle(bundle.read_bytes(), AGENCY_BOX, public_key_b64(device_key(tmp_path))).ok
    completed = [e for e in retry.store.exports(request) if e["completed_at"]]
    assert len(completed) == 1 and completed[0]["path"] == str(bundle)
    records = retry.audit.records()
    (done,) = [r for r in records if r["kind"] == "export_complete"]
    assert done["data"]["path"] == str(bundle)
    ok, message = retry.verify_audit()
    assert ok, message
    assert retry.rows()[0]["state"] == "exported" and pending_requests(config(tmp_path), clock) == 0
    with pytest.raises(RequestError, match="APPROVAL_USED"):
        retry.export(request)
    assert len(list(exports.rglob("*.bundle"))) == 1
