"""The daemon's housekeeping audits lapsed approvals and counts pending footage requests for the state topic."""

from __future__ import annotations

import io
from pathlib import Path

from edge.app import App
from edge.clock import FakeClock
from edge.events.bus import Event
from edge.footage.desk import FootageDesk
from tests.footage.factory import NOW, config, document, signed


def test_housekeeping_audits_lapsed_approvals_and_counts_pending(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    cfg = config(tmp_path)
    desk = FootageDesk(cfg, clock, emit=lambda event: None)
    _waiting, decision = desk.submit(signed(document("warrant")))
    assert decision.decision == "owner_review"
    approved, _ = desk.submit(signed(document("consent_request", request_id="REQ-2")))

    quiet = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(update={"enabled": False})})
    app = App(quiet, clock=clock, environ={}, stdout=io.StringIO())
    app.build()
    seen: list[Event] = []
    app.bus.subscribe(seen.append)
    app.housekeeping()
    assert app.state()["pending_requests"] == 2

    desk.approve(approved)
    clock.advance((cfg.footage_requests.approval_valid_hours + 1) * 3600)
    app.housekeeping()
    expiries = [r for r in desk.audit.records() if r["kind"] == "expiry"]
    assert len(expiries) == 1 and approved in str(expiries[0])
    assert [e.fields.get("state") for e in seen if e.type == "footage_request"] == ["approval_lapsed"]
    app.housekeeping()  # each lapse is audited once
    assert len([r for r in desk.audit.records() if r["kind"] == "expiry"]) == 1
