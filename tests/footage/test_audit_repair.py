"""A torn audit tail (a power cut mid-append): it blocks every step that could release footage and burns no
request id, never blocks a denial, and `doorbell-edge audit repair` moves it aside into a kept file, records the
repair and leaves a chain that verifies. Other damage is refused, not "repaired"."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edge.clock import FakeClock
from edge.errors import StorageError
from edge.footage.audit import AuditLog

from .crash import killed_at
from .factory import NOW, document, install_device_key, rules, signed
from .test_service import desk_for

TORN = [
    b'{"data":{"request":"fr-1234abcd","reason":"n',  # the line was cut short
    b"\x00" * 37,  # the file grew but the block never reached the card
    b'{"data":\x00\x00\x00\x00garbled\n',  # a whole "line" of garbage
]


def tear(desk_state: Path, torn: bytes) -> Path:
    log = desk_state / "audit" / "footage.jsonl"
    with log.open("ab") as fh:
        fh.write(torn)
    return log


def cli_config(tmp_path: Path, state: Path) -> Path:
    install_device_key(state)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"front_door": {}, "side_gate": {}}, "mqtt": {"enabled": False},
                                    "storage": {"state_dir": str(state)}, "footage_requests": rules()}))
    return path


@pytest.mark.parametrize("torn", TORN, ids=["cut", "zeros", "garbage-line"])
def test_torn_tail_blocks_release_not_denial(tmp_path: Path, torn: bytes) -> None:
    clock = FakeClock(NOW)
    desk = desk_for(tmp_path, clock)
    approved, _ = desk.submit(signed(document("consent_request", request_id="A")))
    waiting, _ = desk.submit(signed(document("consent_request", request_id="B")))
    desk.approve(approved)
    tear(tmp_path, torn)
    before = desk.audit.path.read_bytes()

    resend = signed(document("warrant", request_id="C"))
    for step in (lambda: desk.submit(resend), lambda: desk.approve(waiting), lambda: desk.export(approved)):
        with pytest.raises(StorageError, match="audit repair"):
            step()
    assert desk.audit.path.read_bytes() == before  # nothing appended behind the torn record
    assert not list((tmp_path / "footage" / "exports").rglob("*.bundle"))
    assert {row["request_id"]: row["state"] for row in desk.rows()} == {"A": "approved", "B": "waiting"}

    assert desk.deny(waiting, "no").decision == "deny"  # a refusal goes through, repairing first
    records = desk.audit.records()
    assert [r["kind"] for r in records[-2:]] == ["repair", "owner_deny"]
    kept = desk.audit.dir / records[-2]["data"]["kept"]
    assert kept.read_bytes() == torn and records[-2]["data"]["torn_bytes"] == len(torn)
    ok, message = desk.verify_audit()
    assert ok, message
    _, decision = desk.submit(resend)  # the id the torn tail refused was not used up
    assert decision.codes == ("VERIFIED_WARRANT",)


def test_audit_repair_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.cli import main

    state = tmp_path / "state"
    clock = FakeClock(NOW)
    monkeypatch.setattr("edge.footage.desk.SystemClock", lambda: clock)
    desk = desk_for(state, clock)
    desk.submit(signed(document("consent_request")))
    cfg = str(cli_config(tmp_path, state))
    assert main(["audit", "repair", "--config", cfg]) == 0
    assert "nothing to repair" in capsys.readouterr().out

    tear(state, TORN[0])
    assert main(["audit", "verify", "--config", cfg]) == 1
    err = capsys.readouterr().err
    assert "record 3: incomplete last line" in err and "doorbell-edge audit repair" in err

    assert main(["audit", "repair", "--config", cfg]) == 0
    out = capsys.readouterr().out
    kept = sorted((state / "audit").glob("footage.jsonl.torn-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == TORN[0]
    assert f"{len(TORN[0])} torn byte(s) after record 2 moved to {kept[0]}" in out
    assert "repair recorded as record 3" in out and "3 record(s), chain intact" in out
    (repair,) = [r for r in desk.audit.records() if r["kind"] == "repair"]
    assert repair["data"]["after_record"] == 2 and repair["data"]["kept"] == kept[0].name
    assert main(["audit", "verify", "--config", cfg]) == 0
    assert main(["audit", "repair", "--config", cfg]) == 0  # run again: nothing more to do
    assert "nothing to repair" in capsys.readouterr().out
    assert [r["kind"] for r in desk.audit.records()].count("repair") == 1


def test_repair_refuses_damage_that_is_not_a_torn_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.cli import main

    state = tmp_path / "state"
    clock = FakeClock(NOW)
    monkeypatch.setattr("edge.footage.desk.SystemClock", lambda: clock)
    desk = desk_for(state, clock)
    request, _ = desk.submit(signed(document("consent_request")))
    desk.deny(request, "no")
    log = desk.audit.path
    original = log.read_bytes()
    lines = original.split(b"\n")
    lines[0] = lines[0].replace(b"consent_request", b"warrant")  # an edited record in the middle
    log.write_bytes(b"\n".join(lines))
    edited = log.read_bytes()
    assert edited != original
    assert main(["audit", "repair", "--config", str(cli_config(tmp_path, state))]) == 1
    assert "not a torn last record, so not repaired" in capsys.readouterr().err
    assert log.read_bytes() == edited and not list(log.parent.glob("footage.jsonl.torn-*"))

    lines = original.split(b"\n")
    lines[-2] = lines[-2].replace(b'"no"', b'"yes"')
    log.write_bytes(b"\n".join(lines))
    assert log.read_bytes() != original
    with pytest.raises(StorageError, match="not a torn last record"):  # the last record edited, still JSON
        AuditLog(state, clock).repair("test")


@pytest.mark.parametrize("point", ["audit-repair:after-keep", "audit-repair:after-truncate"])
def test_kill_during_repair_is_finished_by_the_next_repair(tmp_path: Path, point: str) -> None:
    clock = FakeClock(NOW)
    desk = desk_for(tmp_path, clock)
    desk.submit(signed(document("consent_request")))
    tear(tmp_path, TORN[0])
    killed_at(point, lambda: AuditLog(tmp_path, clock).repair("test"))
    record = AuditLog(tmp_path, clock).repair("test")
    assert record is not None and record["kind"] == "repair"  # recorded, never a silent cut
    (kept,) = sorted((tmp_path / "audit").glob("footage.jsonl.torn-*"))
    assert kept.read_bytes() == TORN[0] and record["data"]["kept"] == kept.name
    assert AuditLog(tmp_path, clock).repair("test") is None
    assert [r["kind"] for r in desk.audit.records()] == ["intake", "decision", "repair"]
    ok, message = desk.verify_audit()
    assert ok, message
