"""The command line end to end: submit, replay, list, show, approve (narrowing), deny, export, report, keygen,
exports verify and audit verify, with real files and a real state directory."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.cli import footage as footage_cli
from edge.cli import main
from edge.clock import FakeClock
from edge.footage.desk import FootageDesk
from edge.recording.store import ClipStore
from tests.clips import write_test_clip
from tests.footage.factory import NOW, document, install_device_key, rules, signed
from tests.footage.test_export_e2e import FPS, WIN_START, find_faces, frames


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    state = tmp_path / "state"
    clock = FakeClock(NOW)
    store = ClipStore(state, clock)
    a = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=10), frames(4, 1), FPS)
    b = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=20), frames(4, 2), FPS)
    install_device_key(state)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": {"front_door": {}, "side_gate": {}}, "mqtt": {"enabled": False},
                                   "storage": {"state_dir": str(state)}, "footage_requests": rules()}))

    # The CLI judges with the real clock; pin it (and the test detector) for the fixed test documents.
    real = FootageDesk.__init__

    def pinned(self: FootageDesk, config: Any, clock_: Any = None, **kw: Any) -> None:
        kw.setdefault("find_faces", find_faces)
        real(self, config, clock, **kw)

    monkeypatch.setattr(FootageDesk, "__init__", pinned)
    warrant = tmp_path / "warrant.json"
    warrant.write_bytes(signed(document("warrant")))
    return {"cfg": str(cfg), "state": state, "clips": (a, b), "warrant": warrant, "tmp": tmp_path}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_owner_flow(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup["cfg"]
    code, out, _ = run(capsys, "requests", "submit", str(setup["warrant"]), "--config", cfg, "--json")
    assert code == 0
    submitted = json.loads(out)
    request = submitted["id"]
    assert submitted["decision"] == "owner_review" and len(submitted["clips"]) == 2

    code, out, _ = run(capsys, "requests", "submit", str(setup["warrant"]), "--config", cfg, "--json")
    assert json.loads(out)["reasons"][0]["code"] == "REPLAY"

    code, out, _ = run(capsys, "requests", "list", "--config", cfg)
    assert code == 0 and request in out and "REPLAY" in out

    a, _ = setup["clips"]
    code, _, err = run(capsys, "requests", "approve", request, "--clips", "nope", "--config", cfg)
    assert code == 1 and "never widen" in err
    code, out, _ = run(capsys, "requests", "approve", request, "--clips", a.id, "--config", cfg, "--json")
    assert code == 0 and [c["clip"] for c in json.loads(out)["clips"]] == [a.id]

    code, out, _ = run(capsys, "requests", "export", request, "--config", cfg, "--json")
    assert code == 0
    exported = json.loads(out)
    assert [f["clip"] for f in exported["files"]] == [a.id]

    identity = setup["tmp"] / "agency.key"
    import base64

    from tests.footage.factory import AGENCY_BOX  # the configured agency's encryption key pair

    identity.write_text(base64.b64encode(bytes(AGENCY_BOX)).decode())
    code, out, _ = run(capsys, "keys", "show", "--config", cfg, "--json")
    device = json.loads(out)["public_key"]
    code, out, _ = run(capsys, "exports", "verify", exported["path"], "--identity", str(identity),
                       "--device-key", device, "--extract", str(setup["tmp"] / "x"))
    assert code == 0 and "OK" in out
    assert (setup["tmp"] / "x" / "manifest.json").exists()
    code, _, err = run(capsys, "exports", "verify", exported["path"], "--device-key", device)
    assert code == 1 and "--identity" in err
    code, _, err = run(capsys, "exports", "verify", exported["path"], "--identity", str(identity))
    assert code == 1 and "no device key given" in err and "--device-key" in err

    code, out, _ = run(capsys, "requests", "show", request, "--config", cfg, "--json")
    shown = json.loads(out)
    assert shown["now"]["reasons"][-1]["code"] == "APPROVAL_USED" and len(shown["exports"]) == 1

    code, out, _ = run(capsys, "requests", "report", "--config", cfg, "--json")
    report = json.loads(out)
    assert report["requests"] == 2 and report["by_basis"] == {"warrant": 2} and report["exports"] == 1
    code, out, _ = run(capsys, "requests", "report", "--config", cfg, "--since", "2030-01-01T00:00:00Z")
    assert "Footage requests since 2030-01-01T00:00:00.000Z: 0" in out

    code, out, _ = run(capsys, "audit", "verify", "--config", cfg)
    assert code == 0 and "chain intact" in out


def test_deny_and_errors(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup["cfg"]
    _, out, _ = run(capsys, "requests", "submit", str(setup["warrant"]), "--config", cfg, "--json")
    request = json.loads(out)["id"]
    code, out, _ = run(capsys, "requests", "deny", request, "--reason", "ask me again with a court signature",
                       "--config", cfg, "--json")
    assert code == 0 and json.loads(out)["decision"] == "deny"
    code, _, err = run(capsys, "requests", "export", request, "--config", cfg)
    assert code == 1 and "OWNER_DENIED" in err
    code, _, err = run(capsys, "requests", "show", "fr-missing", "--config", cfg)
    assert code == 1 and "no footage request" in err
    code, _, err = run(capsys, "requests", "submit", str(setup["tmp"] / "absent.json"), "--config", cfg)
    assert code == 1 and "cannot read request document" in err
    code, _, err = run(capsys, "requests", "evaluate", str(setup["warrant"]), "--config", cfg, "--now", "soon")
    assert code == 1 and "--now" in err
    kinds = [json.loads(line)["kind"] for line in (setup["state"] / "audit" / "footage.jsonl").read_text().splitlines()]
    assert kinds == ["intake", "decision", "owner_deny"]


def test_non_owner_cannot_decide(setup: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = setup["cfg"]
    _, out, _ = run(capsys, "requests", "submit", str(setup["warrant"]), "--config", cfg, "--json")
    request = json.loads(out)["id"]
    monkeypatch.setattr(footage_cli.os, "geteuid", lambda: os.stat(setup["state"]).st_uid + 4242)
    code, _, err = run(capsys, "requests", "approve", request, "--config", cfg)
    assert code == 1 and "only the owner" in err


def test_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "id.key"
    code, out, _ = run(capsys, "exports", "keygen", str(path))
    assert code == 0 and len(out.strip()) == 44 and path.stat().st_mode & 0o777 == 0o600
    code, _, err = run(capsys, "exports", "keygen", str(path))
    assert code == 1 and "not overwriting" in err


def test_audit_verify_catches_a_deleted_log(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup["cfg"]
    run(capsys, "requests", "submit", str(setup["warrant"]), "--config", cfg)
    assert run(capsys, "audit", "verify", "--config", cfg)[0] == 0
    for path in (setup["state"] / "audit").iterdir():
        path.unlink()
    code, _, err = run(capsys, "audit", "verify", "--config", cfg)
    assert code == 1 and "record 1: missing" in err


def test_auto_released_warrant_is_exported_at_submit(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = Path(setup["cfg"])
    data = yaml.safe_load(cfg.read_text())
    data["footage_requests"]["auto_release_verified_warrants"] = True
    cfg.write_text(yaml.safe_dump(data))
    code, out, _ = run(capsys, "requests", "submit", str(setup["warrant"]), "--config", str(cfg), "--json")
    body = json.loads(out)
    assert code == 0 and body["decision"] == "release" and Path(body["export"]).exists()
    assert [r["code"] for r in body["reasons"]] == ["VERIFIED_WARRANT", "AUTO_RELEASED"]


def test_show_commands_print_for_people_and_json_for_scripts(setup: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        _check_show_commands(setup, capsys)
    finally:
        monkeypatch.undo()
        time.tzset()


def _check_show_commands(setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup["cfg"]
    a, b = setup["clips"]
    _, out, _ = run(capsys, "requests", "submit", str(setup["warrant"]), "--config", cfg, "--json")
    request = json.loads(out)["id"]
    run(capsys, "requests", "approve", request, "--config", cfg)

    code, out, _ = run(capsys, "requests", "show", request, "--config", cfg, "--json")
    shown = json.loads(out)
    assert code == 0 and shown["id"] == request and shown["legal_basis"] == "warrant"
    assert {c["clip"] for c in shown["now"]["clips"]} == {a.id, b.id} and shown["now"]["decision"] == "release"
    assert [x["kind"] for x in shown["owner_actions"]] == ["approve"]

    code, out, _ = run(capsys, "requests", "show", request, "--config", cfg)
    assert code == 0
    heads = [line for line in out.splitlines() if not line.startswith(" ")]
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in heads}
    column = {len(line) - len(line.split(":", 1)[1].lstrip()) for line in heads}
    assert len(column) == 1, "values start in one column"
    assert fields["request"] == request and fields["state"] and fields["legal basis"] == "warrant"
    assert fields["decision now"].startswith("release")
    assert fields["clips in scope"] == "2 (front_door 2)"  # a count per camera
    # ... and exactly what the approval releases: each clip part with its local times and sha256 prefix.
    released = out.split("approval releases:", 1)[1].splitlines()[:2]
    assert [line.split()[0] for line in released] == [a.id, b.id]
    assert all(f"sha256 {clip.sha256[:16]}..." in out for clip in (a, b))
    assert " CET (" in released[0]
    received = fields["received"]  # local time (Berlin in March: CET), UTC in brackets
    assert received.endswith(" UTC)") and " CET (" in received, received

    code, out, _ = run(capsys, "audit", "show", "--config", cfg, "--json")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["seq"] for r in records] == list(range(1, len(records) + 1))
    kinds = [r["kind"] for r in records]
    assert kinds[:2] == ["intake", "decision"] and "owner_approve" in kinds

    code, out, _ = run(capsys, "audit", "show", "--config", cfg)
    lines = out.splitlines()
    assert code == 0 and len(lines) == len(records) + 1
    assert lines[0].startswith("#1  ") and " CET (" in lines[0] and " intake " in lines[0] and request in lines[0]
    decision = next(line for line in lines if " decision " in line)
    assert "clips=2" in decision and a.id not in decision  # counts, not UUID walls
    assert lines[-1].startswith(f"{len(records)} record(s) in ")


def test_requests_list_prints_local_time_with_utc_in_brackets(setup: dict[str, Any],
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from edge.cli import human_time

    cfg = setup["cfg"]
    assert run(capsys, "requests", "submit", str(setup["warrant"]), "--config", cfg)[0] == 0
    code, out, _ = run(capsys, "requests", "list", "--config", cfg, "--json")
    received = json.loads(out)[0]["received_at"]
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        code, out, _ = run(capsys, "requests", "list", "--config", cfg)
        local = human_time(received)
        code_json, out_json, _ = run(capsys, "requests", "list", "--config", cfg, "--json")
    finally:
        monkeypatch.undo()
        time.tzset()
    assert code == 0 and code_json == 0
    assert "CET (" in local and "UTC)" in local
    (line,) = out.splitlines()
    assert local in line and received not in line
    assert json.loads(out_json)[0]["received_at"] == received  # --json unchanged: RFC 3339 UTC


def test_show_names_the_agency_as_configured_and_the_document_s_own_name_as_what_it_says(
        setup: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """`requests show` printed the document's own name beside the id as if it were the agency's; now the
    configured name (as the page's list and card, one function: edge.actions.footage.agency_name)."""
    cfg = setup["cfg"]
    doc = document("warrant", request_id="MPD-2026-0009")
    doc["agency"]["name"] = "Federal Bureau of Everything"
    grand = setup["tmp"] / "grand.json"
    grand.write_bytes(signed(doc))
    shown = {}
    for path in (setup["warrant"], grand):
        _, out, _ = run(capsys, "requests", "submit", str(path), "--config", cfg, "--json")
        _, out, _ = run(capsys, "requests", "show", json.loads(out)["id"], "--config", cfg)
        shown[path] = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("agency:"))
    assert shown[setup["warrant"]] == "Metro Police [metro-pd]"
    assert shown[grand] == "Metro Police (says it is: Federal Bureau of Everything) [metro-pd]"
