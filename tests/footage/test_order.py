"""Owner actions count in the order they were written, never by wall time: a clock stepped back between an
approval and a denial does not let the approval win, and an approval recorded as lapsed stays lapsed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.errors import RequestError
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .factory import NOW, document, signed
from .test_export_e2e import FPS, WIN_START, frames
from .test_service import desk_for


def test_deny_after_a_clock_step_back_beats_the_earlier_approval(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    request, _ = desk.submit(signed(document("consent_request")))
    assert desk.approve(request).decision == "release"
    clock.step(-3600)  # NTP steps the wall clock back an hour
    after = desk.deny(request, "changed my mind")
    assert after.decision == "deny" and "OWNER_DENIED" in after.codes
    with pytest.raises(RequestError, match="not released"):
        desk.export(request)
    clock.step(3600 + 300)  # and forward again: still the denial
    assert desk.current(request)[2].decision == "deny"
    with pytest.raises(RequestError, match="not released"):
        desk.export(request)
    assert not list((tmp_path / "footage" / "exports").rglob("*.bundle"))

    records = desk.audit.records()
    owner = [(r["seq"], r["kind"], r["ts"]) for r in records if r["kind"] in ("owner_approve", "owner_deny")]
    assert [kind for _, kind, _ in owner] == ["owner_approve", "owner_deny"]
    assert owner[0][0] < owner[1][0] and owner[1][2] < owner[0][2]  # written second, stamped an hour earlier
    assert "export_start" not in [r["kind"] for r in records]
    assert desk.audit.verify().ok
    row = desk.rows()[0]
    assert row["state"] == "denied" and row["decision"] == "deny"
    assert desk.report()["by_decision"] == {"deny": 1}


def test_an_approval_recorded_as_lapsed_stays_lapsed_when_the_clock_comes_back(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    desk = desk_for(tmp_path, clock)
    request, _ = desk.submit(signed(document("consent_request")))
    desk.approve(request)
    clock.advance(73 * 3600)  # a bogus jump past the 72 h approval validity
    assert desk.sweep() == [f"{request}: approval 1 lapsed"]
    clock.step(-73 * 3600 + 60)  # the clock comes back: the approval would be in time again
    decision = desk.current(request)[2]
    assert decision.decision == "owner_review" and "APPROVAL_LAPSED" in decision.codes
    assert "recorded as lapsed" in decision.reasons[-1].detail
    with pytest.raises(RequestError, match="not released"):
        desk.export(request)
    assert [r["kind"] for r in desk.audit.records()].count("expiry") == 1
    assert desk.rows()[0]["state"] == "waiting"  # the owner may approve afresh
    assert desk.approve(request).decision == "release"
