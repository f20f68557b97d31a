"""The audit owner actions (edge.actions.audit) on a real state dir: "verified up to entry N" for an intact log,
a log edited in place, a torn tail and witnessed heads; the transparency report."""

from __future__ import annotations

import json
from pathlib import Path

from edge.actions import audit as actions
from edge.actions import footage
from edge.clock import FakeClock
from edge.footage.desk import FootageDesk
from tests.footage.factory import NOW, config, document, signed


def desk_for(state: Path) -> FootageDesk:
    return FootageDesk(config(state), FakeClock(NOW), emit=lambda event: None, actor="owner")


def with_requests(state: Path) -> FootageDesk:
    desk = desk_for(state)
    first = footage.submit(desk, signed(document("consent_request", request_id="A1"))).request
    footage.submit(desk, signed(document("subpoena", request_id="A2")))  # denied at intake
    footage.deny(desk, first, "no")
    return desk


def test_an_intact_log_is_verified_up_to_its_last_entry(tmp_path: Path) -> None:
    desk = with_requests(tmp_path)
    records = desk.audit.records()
    result = actions.verify(desk)
    assert result.ok and not result.torn
    assert result.verified_up_to == result.records == len(records) == 5
    assert result.summary == "verified up to entry 5"
    assert "chain intact" in result.message and "agrees with the request store" in result.message


def test_an_edited_entry_stops_the_verification_before_it(tmp_path: Path) -> None:
    desk = with_requests(tmp_path)
    lines = desk.audit.path.read_text().splitlines()
    record = json.loads(lines[2])
    record["data"]["request_id"] = "EDITED"
    lines[2] = json.dumps(record)
    desk.audit.path.write_text("\n".join(lines) + "\n")
    result = actions.verify(desk)
    assert not result.ok
    assert result.verified_up_to == 2 and "record 3" in result.message
    assert result.summary == "NOT verified: the chain holds up to entry 2"


def test_a_torn_tail_is_reported_as_torn(tmp_path: Path) -> None:
    desk = with_requests(tmp_path)
    with desk.audit.path.open("ab") as fh:
        fh.write(b'{"seq": 6, "kind": "owner_de')  # a power cut mid-append
    result = actions.verify(desk)
    assert not result.ok and result.torn
    assert result.verified_up_to == 5


def test_witnessed_heads_are_checked(tmp_path: Path) -> None:
    desk = with_requests(tmp_path)
    records = desk.audit.records()
    good = actions.WitnessedHead(3, str(records[2]["hash"]), "the head seen at 3")
    bad = actions.WitnessedHead(3, "f" * 64, "a forged head")
    result = actions.verify(desk, [good])
    assert result.ok and result.witnessed[0].ok and "holds record 3" in result.witnessed[0].message
    result = actions.verify(desk, [good, bad])
    assert not result.ok and [c.ok for c in result.witnessed] == [True, False]
    assert "a forged head" in result.witnessed[1].message
    assert result.verified_up_to == 5  # the chain itself holds; the log is not the one that was witnessed


def test_the_transparency_report_counts_outcomes(tmp_path: Path) -> None:
    desk = with_requests(tmp_path)
    report = actions.transparency_report(desk)
    assert report["requests"] == 2
    assert report["by_decision"] == {"deny": 2}
    assert report["by_basis_and_decision"] == {"consent_request/deny": 1, "subpoena/deny": 1}
    assert report["exports"] == 0 and report["unratified"] == 0
