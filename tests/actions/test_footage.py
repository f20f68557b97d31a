"""The footage owner actions (edge.actions.footage) on a real state dir: real SQLite request store, real clip
store and video files, the real audit log; what the web page will call, without the command line."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.actions import footage as actions
from edge.clock import FakeClock
from edge.errors import RequestChanged, RequestError
from edge.footage.approval import Narrowing
from edge.footage.desk import FootageDesk
from edge.footage.exporter import verify_bundle
from edge.footage.keys import device_key, public_key_b64
from edge.recording.store import ClipStore
from tests.clips import write_test_clip
from tests.footage.factory import AGENCY_BOX, NOW, OTHER_KEY, config, document, signed
from tests.footage.test_export_e2e import FPS, WIN_START, find_faces, frames


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    a = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    b = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=20), frames(3, 2), FPS)
    desk = FootageDesk(config(tmp_path), clock, clips=store, find_faces=find_faces, emit=lambda event: None,
                       actor="owner")
    return {"desk": desk, "clock": clock, "clips": (a, b), "state": tmp_path}


def kinds(desk: FootageDesk) -> list[str]:
    return [r["kind"] for r in desk.audit.records()]


def test_submit_list_show_approve_export(setup: dict[str, Any]) -> None:
    desk: FootageDesk = setup["desk"]
    raw = signed(document("warrant"))
    submitted = actions.submit(desk, raw)
    assert submitted.decision.decision == "owner_review" and submitted.export is None
    (row,) = actions.list_requests(desk)
    assert (row.id, row.state, row.decision, row.basis) == (submitted.request, "waiting", "owner_review", "warrant")
    assert row.to_dict()["codes"] == list(row.codes)

    details = actions.show(desk, submitted.request)
    assert details.state == "waiting" and details.summary["state"] == "waiting"
    assert details.document_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(details.summary["now"]["clips"]) == 2

    decision = actions.approve(desk, submitted.request, seen_sha256=details.document_sha256)
    assert decision.decision == "release" and len(decision.segments) == 2
    assert actions.list_requests(desk)[0].state == "approved"

    result = actions.export(desk, submitted.request)
    check = verify_bundle(result.path, AGENCY_BOX, public_key_b64(device_key(setup["state"])))
    assert check.ok, check.problems
    assert actions.list_requests(desk)[0].state == "exported"
    assert kinds(desk)[-3:] == ["owner_approve", "export_start", "export_complete"]


def test_approve_refuses_a_request_other_than_the_one_shown(setup: dict[str, Any]) -> None:
    desk: FootageDesk = setup["desk"]
    request = actions.submit(desk, signed(document("warrant"))).request
    shown = actions.show(desk, request).document_sha256
    before = kinds(desk)

    with pytest.raises(RequestChanged, match="not the one you were shown"):
        actions.approve(desk, request, seen_sha256="0" * 64)  # the page showed another document
    with pytest.raises(RequestError, match="not a sha256"):
        actions.approve(desk, request, seen_sha256="abc")

    # The stored document is swapped under the page (as an edit of requests.sqlite3 would): refused.
    other = signed(document("warrant", case_number="CR-99-0001"))
    with sqlite3.connect(setup["state"] / "footage" / "requests.sqlite3") as db:
        db.execute("UPDATE requests SET raw=? WHERE id=?", (other, request))
    with pytest.raises(RequestChanged):
        actions.approve(desk, request, seen_sha256=shown)
    with pytest.raises(RequestChanged):
        actions.narrow(desk, request, Narrowing(cameras=["front_door"]), seen_sha256=shown)
    assert kinds(desk) == before  # nothing audited, nothing approved
    assert desk.store.owner_actions(request) == []
    assert issubclass(RequestChanged, RequestError)


def test_narrow_releases_only_what_is_kept_and_never_widens(setup: dict[str, Any]) -> None:
    desk: FootageDesk = setup["desk"]
    a, b = setup["clips"]
    request = actions.submit(desk, signed(document("warrant"))).request
    shown = actions.show(desk, request).document_sha256
    with pytest.raises(RequestError, match="needs clips, cameras or data"):
        actions.narrow(desk, request, Narrowing())
    with pytest.raises(RequestError, match="never widen"):
        actions.narrow(desk, request, Narrowing(clips=["not-a-clip"]))
    with pytest.raises(RequestError, match="not in request"):
        actions.narrow(desk, request, Narrowing(cameras=["side_gate"]))
    decision = actions.narrow(desk, request, Narrowing(clips=[a.id]), seen_sha256=shown)
    assert [s.clip_id for s in decision.segments] == [a.id]
    body = desk.store.owner_actions(request)[-1]
    assert body.kind == "approve"
    result = actions.export(desk, request)
    assert [f["clip"] for f in result.manifest["files"]] == [a.id]
    assert b.id not in {f["clip"] for f in result.manifest["files"]}


def test_deny_ratify_and_the_report(setup: dict[str, Any]) -> None:
    desk: FootageDesk = setup["desk"]
    denied = actions.submit(desk, signed(document("consent_request", request_id="R1"))).request
    with pytest.raises(RequestError, match="needs a --reason"):
        actions.deny(desk, denied, " ")
    assert actions.deny(desk, denied, "no").decision == "deny"
    with pytest.raises(RequestError, match="not an emergency"):
        actions.ratify(desk, denied, "W-1")
    report = actions.report(desk)
    assert report["requests"] == 1 and report["by_decision"] == {"deny": 1}
    assert report["generated_at"].startswith("2026-03-10T12:00:00")
    assert actions.report(desk, NOW + timedelta(days=1))["requests"] == 0


def test_holds_are_placed_renewed_and_released(setup: dict[str, Any]) -> None:
    desk: FootageDesk = setup["desk"]
    doc = document("preservation", scope={**document()["scope"], "data": ["video"]})
    submitted = actions.submit(desk, signed(doc))
    assert submitted.decision.decision == "hold"
    assert actions.list_requests(desk)[0].state == "held"
    assert actions.renew_hold(desk, submitted.request) is not None
    with pytest.raises(RequestError, match="already renewed"):
        actions.renew_hold(desk, submitted.request)
    lifted = actions.release_hold(desk, submitted.request, "case closed")
    assert len(lifted) == 2 and "hold_release" in kinds(desk)
    assert actions.list_requests(desk)[0].state == "hold_released"


def test_evaluate_records_nothing(tmp_path: Path) -> None:
    desk = FootageDesk(config(tmp_path), FakeClock(NOW), emit=lambda event: None, actor="owner")
    decision = actions.evaluate(desk, signed(document("warrant")), NOW + timedelta(days=30))
    assert "EXPIRED" in decision.codes
    assert not (tmp_path / "footage").exists() and not (tmp_path / "audit").exists()
    assert actions.list_requests(desk) == []


def test_auto_released_warrant_is_exported_at_submit(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = FootageDesk(config(tmp_path, auto_release_verified_warrants=True), clock, clips=store, find_faces=find_faces,
                       emit=lambda event: None, actor="owner")
    submitted = actions.submit(desk, signed(document("warrant")))
    assert submitted.decision.decision == "release"
    assert submitted.export is not None and submitted.export.path.exists()


def test_the_agency_is_named_as_configured_and_the_document_s_own_name_only_as_what_it_says(
        setup: dict[str, Any]) -> None:
    """One function names a request's agency for `requests show` and the page's list and card: the name the
    owner configured for the agency id, never the document's; the document's own name kept only when it
    differs, as what it says; an unverified signature and an unknown id said as such."""
    desk: FootageDesk = setup["desk"]
    plain = actions.submit(desk, signed(document("warrant", request_id="MPD-1"))).request
    doc = document("warrant", request_id="MPD-2")
    doc["agency"]["name"] = "Federal Bureau of Everything"
    grand = actions.submit(desk, signed(doc)).request
    forged = actions.submit(desk, signed(document("warrant", request_id="MPD-3"), agency_key=OTHER_KEY)).request

    same = actions.request_agency(desk, actions.show(desk, plain))
    assert (same.name, same.says, same.configured, same.verified) == ("Metro Police", None, True, True)
    assert same.text == "Metro Police"
    differs = actions.request_agency(desk, actions.show(desk, grand))
    assert (differs.name, differs.says) == ("Metro Police", "Federal Bureau of Everything")
    assert differs.text == "Metro Police (says it is: Federal Bureau of Everything)"
    unverified = actions.request_agency(desk, actions.show(desk, forged))
    assert (unverified.name, unverified.verified) == ("Metro Police", False)
    assert unverified.text == "Metro Police (signature not verified)"
    rows = {r.id: r for r in actions.list_requests(desk)}
    assert rows[plain].verified and not rows[forged].verified and rows[plain].to_dict()["verified"] is True

    unknown = actions.agency_name(desk, "x-pd", False, "Metro Police")
    assert unknown.text == "unknown agency x-pd (says it is: Metro Police)" and not unknown.configured
    assert actions.agency_name(desk, None, False).text == "an unknown sender"
    assert actions.agency_name(desk, "metro-pd", True, "  metro police ").says is None  # same name, any case
