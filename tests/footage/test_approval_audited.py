"""Gaps an attack check found in issue 12's fixes: an export rests only on an approval the audit log holds (with the
same clips and hashes), and `audit verify` compares the decision record's content with the request store."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.errors import RequestError
from edge.footage.desk import FootageDesk
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .factory import NOW, document, signed
from .test_audit_anchor import rewrite, verify, write_config
from .test_export_e2e import FPS, WIN_START, frames
from .test_service import desk_for


def approved(tmp_path: Path) -> tuple[FootageDesk, str, Path]:
    state = tmp_path / "state"
    clock = FakeClock(NOW)
    clips = ClipStore(state, clock)
    write_test_clip(clips, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(state, clock, clips=clips)
    request, _ = desk.submit(signed(document("warrant")))
    desk.approve(request)
    return desk, request, state


def bundles(state: Path) -> list[Path]:
    return sorted((state / "footage").rglob("*.bundle")) if (state / "footage").exists() else []


def refusals(desk: FootageDesk, request: str) -> list[dict[str, object]]:
    return [r["data"] for r in desk.audit.records()
            if r["kind"] == "export_refused" and r["data"]["request"] == request]


def test_an_approval_whose_audit_record_was_removed_exports_nothing(tmp_path: Path) -> None:
    desk, request, state = approved(tmp_path)
    before = bundles(state)
    rewrite(state, lambda r: r["kind"] != "owner_approve")  # removed from the log, the chain re-hashed
    assert desk.audit.verify().ok
    with pytest.raises(RequestError, match=r"approval \d+ in the request store has no matching owner_approve record "
                                           r"in the audit log .*nothing is exported"):
        desk.export(request)
    assert bundles(state) == before
    (refused,) = refusals(desk, request)
    assert refused["reason"] == "approval_not_audited"
    assert not [r for r in desk.audit.records() if r["kind"] == "export_start"]


def test_an_approval_replayed_into_the_store_exports_nothing(tmp_path: Path) -> None:
    """The approval row copied (same clips, same hashes) after its export used it: one record, two approvals."""
    desk, request, state = approved(tmp_path)
    desk.export(request)
    (body,) = [d for _, k, _, d in desk.store.actions(request) if k == "approve"]
    with sqlite3.connect(state / "footage" / "requests.sqlite3") as db:
        db.execute("INSERT INTO actions (request, kind, at, data) VALUES (?,?,?,?)",
                   (request, "approve", "2026-03-10T12:01:00.000Z", json.dumps(body)))
    exported_before = len(desk.store.exports(request))
    with pytest.raises(RequestError, match="no matching owner_approve record"):
        desk.export(request)
    assert len(desk.store.exports(request)) == exported_before
    assert [r["reason"] for r in refusals(desk, request)] == ["approval_not_audited"]


def test_an_approval_edited_in_the_store_to_unblur_exports_nothing(tmp_path: Path) -> None:
    """(An edited clip hash is refused by the policy already: CLIP_CHANGED.) Unblurring a clip the owner did not."""
    desk, request, state = approved(tmp_path)
    with sqlite3.connect(state / "footage" / "requests.sqlite3") as db:
        seq, data = db.execute("SELECT seq, data FROM actions WHERE request=? AND kind='approve'",
                               (request,)).fetchone()
        body = json.loads(data)
        body["unblur"] = [body["clips"][0]]
        db.execute("UPDATE actions SET data=? WHERE seq=?", (json.dumps(body), seq))
    with pytest.raises(RequestError, match="no matching owner_approve record"):
        desk.export(request)
    assert [r["reason"] for r in refusals(desk, request)] == ["approval_not_audited"]


def test_an_honest_approval_still_exports(tmp_path: Path) -> None:
    desk, request, _ = approved(tmp_path)
    result = desk.export(request)
    assert result.path.exists() and not refusals(desk, request)


def test_a_decision_record_rechained_to_another_outcome_is_caught(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    desk = desk_for(state, FakeClock(NOW))
    request, decision = desk.submit(signed(document("consent_request")))
    assert decision.decision == "owner_review"
    cfg = write_config(tmp_path, state)
    code, text = verify(capsys, cfg)
    assert code == 0, text

    def to_deny(record: dict[str, object]) -> bool:
        if record["kind"] == "decision":
            data = record["data"]
            assert isinstance(data, dict)
            data["decision"] = "deny"
            data["reasons"] = [{"code": "UNKNOWN_AGENCY", "detail": "rewritten"}]
        return True

    rewrite(state, to_deny)
    assert desk.audit.verify().ok  # the chain holds: only the store remembers the real decision
    code, text = verify(capsys, cfg)
    assert code == 1
    assert f"request {request}: its decision record " in text
    assert "says deny (UNKNOWN_AGENCY)" in text and "the request store says owner_review" in text
