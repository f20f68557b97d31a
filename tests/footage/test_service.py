"""The footage desk's shell duties: replay claims, forged ids, one export at a time, hold expiry, and
footage_request events landing in the real MQTT outbox without content."""

from __future__ import annotations

import fcntl
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.clock import FakeClock
from edge.errors import RequestError
from edge.footage.desk import FootageDesk
from edge.footage.store import RequestStore
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .factory import NOW, OTHER_KEY, config, document, rules, signed, z
from .test_export_e2e import FPS, WIN_START, find_faces, frames


def desk_for(state: Path, clock: FakeClock, **kw: Any) -> FootageDesk:
    kw.setdefault("emit", lambda event: None)
    return FootageDesk(config(state, **kw.pop("rules", {})), clock, find_faces=find_faces, **kw)


def test_forged_submission_does_not_use_up_the_agency_id(tmp_path: Path) -> None:
    desk = desk_for(tmp_path, FakeClock(NOW))
    _, forged = desk.submit(signed(document("warrant"), agency_key=OTHER_KEY))
    assert forged.codes == ("BAD_SIGNATURE",)
    _, real = desk.submit(signed(document("warrant")))
    assert real.decision == "owner_review"
    _, again = desk.submit(signed(document("warrant")))
    assert again.codes == ("REPLAY",)


def test_racing_submissions_one_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(NOW)
    first, second = desk_for(tmp_path, clock), desk_for(tmp_path, clock)
    monkeypatch.setattr(RequestStore, "was_seen", lambda self, agency, rid: None)  # both pass the early check
    _, a = first.submit(signed(document("warrant")))
    _, b = second.submit(signed(document("warrant")))
    assert a.decision == "owner_review" and b.codes == ("REPLAY",)


def test_denial_at_intake_is_final(tmp_path: Path) -> None:
    clock = FakeClock(NOW - timedelta(days=3))  # before the document's issued_at
    desk = desk_for(tmp_path, clock)
    request, decision = desk.submit(signed(document("warrant")))
    assert "NOT_YET_VALID" in decision.codes
    clock.advance(3 * 86400)
    assert desk.current(request)[2].codes == decision.codes
    with pytest.raises(RequestError, match="cannot be approved"):
        desk.approve(request)


def test_one_export_at_a_time(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    request, _ = desk.submit(signed(document("warrant")))
    desk.approve(request)
    fd = os.open(tmp_path / "footage" / "export.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(RequestError, match="another export"):
            desk.export(request)
    finally:
        os.close(fd)
    assert "export_start" not in [r["kind"] for r in desk.audit.records()]
    assert desk.export(request).path.exists()


def test_hold_expiry_is_audited_once(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    desk.submit(signed(document("preservation")))
    clock.advance(91 * 86400)
    assert len(desk.sweep()) == 1 and desk.sweep() == []
    assert [r["kind"] for r in desk.audit.records()].count("hold_expired") == 1
    assert desk.report()["holds_active"] == 0
    assert desk.audit.verify().ok


def test_events_reach_the_real_outbox_without_content(tmp_path: Path) -> None:
    from edge.events.guard import check_event
    from edge.mqtt.outbox import Outbox, outbox_path

    clock = FakeClock(NOW)
    cfg = config(tmp_path).model_copy(update={"mqtt": config(tmp_path).mqtt.model_copy(update={"enabled": True})})
    desk = FootageDesk(cfg, clock, find_faces=find_faces)
    request, _ = desk.submit(signed(document("warrant")))
    desk.deny(request, "no")
    with Outbox(outbox_path(cfg)) as outbox:
        pending = outbox.pending()
    payloads = [json.loads(p.payload) for p in pending]
    heads = [p for p in payloads if p["type"] == "system"]  # each audit append's new head (the MQTT witness)
    assert [h["audit_seq"] for h in heads] == [1, 2, 3] and {h["status"] for h in heads} == {"audit_appended"}
    payloads = [p for p in payloads if p["type"] != "system"]
    assert [p["state"] for p in payloads] == ["submitted", "denied"]
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[2] / "edge/schemas/event.schema.json").read_text())
    for body in payloads:
        jsonschema.validate(body, schema)
        assert body["type"] == "footage_request" and body["request"] == request
        assert "officer" not in json.dumps(body) and "Det. A. Example" not in json.dumps(body)
    from edge.footage.notify import footage_event

    check_event(footage_event(NOW, request=request, state="x", codes=["A"], clips=2))
    with pytest.raises(ValueError):
        footage_event(NOW, request=request, image=b"jpeg")


def test_photo_or_watch_list_is_never_accepted(tmp_path: Path) -> None:
    desk = desk_for(tmp_path, FakeClock(NOW))
    doc = document("warrant")
    doc["scope"]["watch_list"] = ["aGVsbG8="]
    _, decision = desk.submit(signed(doc))
    assert decision.codes == ("INCOMPLETE",) and "watch-lists" in decision.reasons[0].detail


def test_report_counts_outcomes(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    released, _ = desk.submit(signed(document("warrant", request_id="R1")))
    desk.approve(released)
    desk.export(released)
    refused, _ = desk.submit(signed(document("consent_request", request_id="R2")))
    desk.deny(refused, "no")
    desk.submit(signed(document("consent_request", request_id="R3")))
    desk.submit(signed(document("preservation", request_id="R4")))
    desk.submit(signed(document("subpoena", request_id="R5")))
    report = desk.report()
    assert report["by_decision"] == {"deny": 2, "hold": 1, "owner_review": 1, "release": 1}
    assert report["by_basis_and_decision"] == {
        "consent_request/deny": 1, "consent_request/owner_review": 1, "preservation/hold": 1,
        "subpoena/deny": 1, "warrant/release": 1,
    }
    assert report["exports"] == 1 and report["holds"] == 1 and report["unratified"] == 0
    clock.advance(30 * 86400)  # what happened stays; the request nobody answered has expired
    assert desk.report()["by_decision"] == {"deny": 3, "hold": 1, "release": 1}


def test_pending_requests_for_the_state_sensor(tmp_path: Path) -> None:
    from edge.footage.desk import pending_requests

    clock = FakeClock(NOW)
    assert pending_requests(config(tmp_path), clock) == 0 and not (tmp_path / "footage").exists()
    desk = desk_for(tmp_path, clock)
    waiting, _ = desk.submit(signed(document("consent_request", request_id="P1")))
    desk.submit(signed(document("subpoena", request_id="P2")))  # denied at intake
    assert pending_requests(config(tmp_path), clock) == 1
    desk.deny(waiting, "no")
    assert pending_requests(config(tmp_path), clock) == 0


def test_finished_requests_have_their_own_state_and_are_not_pending(tmp_path: Path) -> None:
    """Issue 10: Home Assistant showed "1 pending" after an export. Exported, denied, expired and hold-only
    requests each have a state of their own and only `waiting` counts."""
    from edge.footage.desk import pending_requests

    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    cfg = config(tmp_path)

    def states() -> dict[str, str]:
        return {row["request_id"]: row["state"] for row in desk.rows()}

    exported, _ = desk.submit(signed(document("warrant", request_id="E1")))
    denied, _ = desk.submit(signed(document("consent_request", request_id="D1")))
    short = document("consent_request", request_id="X1", expires_at=z(NOW + timedelta(hours=1)))
    desk.submit(signed(short))
    desk.submit(signed(document("preservation", request_id="H1")))
    assert states() == {"E1": "waiting", "D1": "waiting", "X1": "waiting", "H1": "held"}
    assert pending_requests(cfg, clock) == 3

    desk.approve(exported)
    assert states()["E1"] == "approved" and pending_requests(cfg, clock) == 2
    desk.export(exported)
    assert states()["E1"] == "exported" and pending_requests(cfg, clock) == 2  # APPROVAL_USED is not pending
    desk.deny(denied, "no")
    assert states()["D1"] == "denied" and pending_requests(cfg, clock) == 1
    clock.advance(2 * 3600)  # X1's validity runs out unanswered
    assert states() == {"E1": "exported", "D1": "denied", "X1": "expired", "H1": "held"}
    assert pending_requests(cfg, clock) == 0
    clock.advance(91 * 86400)
    desk.sweep()
    assert states()["H1"] == "hold_expired" and pending_requests(cfg, clock) == 0


def test_requests_list_prints_the_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from edge.cli import main

    clock = FakeClock(NOW)
    monkeypatch.setattr("edge.footage.desk.SystemClock", lambda: clock)  # the CLI judges as of NOW too
    desk = desk_for(tmp_path / "state", clock)
    refused, _ = desk.submit(signed(document("consent_request", request_id="L1")))
    desk.deny(refused, "no")
    desk.submit(signed(document("preservation", request_id="L2")))
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": {"front_door": {}, "side_gate": {}}, "mqtt": {"enabled": False},
                                   "storage": {"state_dir": str(tmp_path / "state")},
                                   "footage_requests": rules()}))
    assert main(["requests", "list", "--config", str(cfg)]) == 0
    words = [line.split() for line in capsys.readouterr().out.splitlines()]
    # the state stands two columns after the agency's request id (local time and UTC come first)
    state = {rid: w[w.index(rid) + 2] for w in words for rid in ("L1", "L2") if rid in w}
    assert state == {"L1": "denied", "L2": "held"}
    assert main(["requests", "list", "--json", "--config", str(cfg)]) == 0
    rows = sorted(json.loads(capsys.readouterr().out), key=lambda row: row["request_id"])
    assert [row["state"] for row in rows] == ["denied", "held"]
