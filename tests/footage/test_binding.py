"""Issue 12, items 1 and 2, end to end through the desk and the command line, with a real clip store, request store,
audit log and bundles: a request is for this device (WRONG_DEVICE, UNBOUND_DEVICE), and an approval covers exactly
the clips the owner saw (a clip finishing later, or changed since, is not released under it)."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.clock import FakeClock
from edge.errors import RequestError, StorageError
from edge.footage.desk import FootageDesk
from edge.footage.exporter import verify_bundle
from edge.footage.keys import device_key, public_key_b64
from edge.recording.codec import choose_codec, make_encoder
from edge.recording.store import INDEX_NAME, ClipStore, sha256_file
from tests.cli.test_footage import run, setup  # noqa: F401  (the CLI fixture: a real state dir, config file and two clips)
from tests.clips import write_test_clip

from .crash import killed_at
from .factory import AGENCY_BOX, DEVICE, ELSEWHERE, NOW, document, signed
from .test_export_e2e import FPS, WIN_START, frames
from .test_service import desk_for

AUTO = {"auto_release_verified_warrants": True}


def recorded(tmp_path: Path, **rules: Any) -> tuple[FakeClock, ClipStore, FootageDesk]:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    desk = desk_for(tmp_path, clock, clips=store, rules=rules)
    return clock, store, desk


def bundles(desk: FootageDesk) -> list[Path]:
    folder = desk.exporter.exports_dir()
    return sorted(p for p in folder.glob("*.bundle")) if folder.exists() else []


def records(desk: FootageDesk, kind: str) -> list[dict[str, Any]]:
    return [r["data"] for r in desk.audit.records() if r["kind"] == kind]


def exported_clips(desk: FootageDesk, request: str) -> set[str]:
    result = desk.export(request)
    check = verify_bundle(result.path.read_bytes(), AGENCY_BOX, public_key_b64(device_key(desk.state_dir)))
    assert check.ok, check.problems
    assert check.manifest is not None
    return {f["clip"] for f in check.manifest["files"] if f.get("clip")}


# --- item 1: a request is for this device -------------------------------------------------------------------


def test_warrant_for_another_device_is_denied_even_with_auto_release(tmp_path: Path) -> None:
    _, store, desk = recorded(tmp_path, **AUTO)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    request, decision = desk.submit(signed(document("warrant", device=ELSEWHERE)))
    assert decision.decision == "deny" and decision.codes == ("WRONG_DEVICE",)
    assert ELSEWHERE in decision.reasons[0].detail and DEVICE in decision.reasons[0].detail
    assert [r["reasons"][0]["code"] for r in records(desk, "decision")] == ["WRONG_DEVICE"]
    with pytest.raises(RequestError, match="cannot be approved"):
        desk.approve(request)
    with pytest.raises(RequestError, match="nothing leaves the device"):
        desk.export(request)
    assert bundles(desk) == [] and records(desk, "export_start") == []


def test_unbound_warrant_with_auto_release_waits_for_the_owner(tmp_path: Path) -> None:
    _, store, desk = recorded(tmp_path, **AUTO)
    clip = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    request, decision = desk.submit(signed(document("warrant", device=None)))
    assert decision.decision == "owner_review"
    assert decision.codes == ("VERIFIED_WARRANT", "UNBOUND_DEVICE")
    with pytest.raises(RequestError, match="not released"):
        desk.export(request)
    assert bundles(desk) == []
    assert [row["state"] for row in desk.rows()] == ["waiting"]  # the owner is asked, and told it is unbound

    approved = desk.approve(request)  # the owner checked the case and address: it is theirs
    assert approved.decision == "release" and "UNBOUND_DEVICE" in approved.codes
    assert exported_clips(desk, request) == {clip.id}


def test_a_bound_verified_warrant_is_still_auto_released(tmp_path: Path) -> None:
    _, store, desk = recorded(tmp_path, **AUTO)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    _, decision = desk.submit(signed(document("warrant", device=DEVICE.upper())))
    assert decision.decision == "release" and decision.codes == ("VERIFIED_WARRANT", "AUTO_RELEASED")


def test_cli_submit_with_auto_release_exports_neither_wrong_nor_unbound(setup: dict[str, Any],  # noqa: F811
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    cfg = Path(setup["cfg"])
    data = yaml.safe_load(cfg.read_text())
    data["footage_requests"]["auto_release_verified_warrants"] = True
    cfg.write_text(yaml.safe_dump(data))
    other = setup["tmp"] / "other.json"
    other.write_bytes(signed(document("warrant", device=ELSEWHERE)))
    code, out, _ = run(capsys, "requests", "submit", str(other), "--config", str(cfg))
    assert code == 0 and "DENY" in out and f"WRONG_DEVICE: the request is for device {ELSEWHERE}" in out
    unbound = setup["tmp"] / "unbound.json"
    unbound.write_bytes(signed(document("warrant", device=None, request_id="MPD-2026-0002")))
    code, out, _ = run(capsys, "requests", "submit", str(unbound), "--config", str(cfg))
    assert code == 0 and "OWNER_REVIEW" in out and "UNBOUND_DEVICE" in out and "exported" not in out
    exports = setup["state"] / "footage" / "exports"
    assert not exports.exists() or not list(exports.glob("*.bundle"))


# --- item 2: an approval covers what the owner saw ----------------------------------------------------------


def test_approve_all_then_a_new_clip_finishes(tmp_path: Path) -> None:
    """The acceptance case: the export contains exactly the approved clips, and the approval's audit record lists
    them with their hashes."""
    _, store, desk = recorded(tmp_path)
    first = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    request, _ = desk.submit(signed(document("consent_request")))
    approved = desk.approve(request)  # everything in scope now: one clip
    assert [s.clip_id for s in approved.segments] == [first.id]

    later = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=30), frames(3, 2), FPS)
    now = desk.current(request)[2]
    assert now.decision == "release" and [s.clip_id for s in now.segments] == [first.id]
    note = next(r for r in now.reasons if r.code == "CLIPS_NOT_APPROVED")
    assert later.id in note.detail

    (record,) = records(desk, "owner_approve")
    assert record["clips"] == [first.id]
    assert [(p["clip"], p["sha256"]) for p in record["shown"]] == [(first.id, first.sha256)]
    assert first.sha256 == sha256_file(first.path)

    assert exported_clips(desk, request) == {first.id}
    (started,) = records(desk, "export_start")
    assert [(c["clip"], c["sha256"]) for c in started["clips"]] == [(first.id, first.sha256)]

    # The later clip goes only under a new approval, which lists it.
    again = desk.approve(request)
    assert {s.clip_id for s in again.segments} == {first.id, later.id}
    assert {p["clip"] for p in records(desk, "owner_approve")[-1]["shown"]} == {first.id, later.id}


def test_clip_still_recording_at_approval_is_not_part_of_it(tmp_path: Path) -> None:
    _, store, desk = recorded(tmp_path)
    done = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    images = frames(3, 3)
    height, width = images[0].shape[:2]
    codec = choose_codec("auto")
    encoder = make_encoder(codec, width, height, FPS, 1.0, "medium")
    start = WIN_START + timedelta(seconds=40)
    writer = store.begin("front_door", start, codec, width, height)
    for i, image in enumerate(images):
        for packet in encoder.encode(image, start + timedelta(seconds=i / FPS), i / FPS):
            writer.write(packet)

    request, _ = desk.submit(signed(document("consent_request")))
    approved = desk.approve(request)
    assert [s.clip_id for s in approved.segments] == [done.id]  # the one being recorded was not shown

    encoder.close()
    finished = writer.finish()
    assert finished is not None and finished.id in {c.id for c in store.list()}
    assert exported_clips(desk, request) == {done.id}


def test_clip_recovered_after_a_crash_needs_a_new_approval(tmp_path: Path) -> None:
    """A clip torn by a power cut is not listed (nor approvable) until recovery remuxes it at the next start;
    recovered after the approval, it is not exported under it."""
    _, store, desk = recorded(tmp_path)
    done = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    images = frames(5, 5)
    codec = choose_codec("auto")
    encoder = make_encoder(codec, images[0].shape[1], images[0].shape[0], FPS, 1.0, "medium")
    start = WIN_START + timedelta(seconds=50)
    writer = store.begin("front_door", start, codec, images[0].shape[1], images[0].shape[0])
    for i, image in enumerate(images):
        for packet in encoder.encode(image, start + timedelta(seconds=i / FPS), i / FPS):
            writer.write(packet)
    writer.abandon()  # the process died here: no finish()
    encoder.close()

    request, _ = desk.submit(signed(document("consent_request")))
    assert [s.clip_id for s in desk.approve(request).segments] == [done.id]
    report = store.recover()
    assert report.recovered == (writer.id,) and writer.id in {c.id for c in store.list()}
    now = desk.current(request)[2]
    assert now.decision == "release" and "CLIPS_NOT_APPROVED" in now.codes
    assert exported_clips(desk, request) == {done.id}


def test_clip_changed_since_approval_is_refused(tmp_path: Path) -> None:
    """An approved clip whose bytes changed (here: its file replaced and the index rebuilt to match, as an index
    recovery would record it) is not released under the approval; nothing is exported until a new one."""
    _, store, desk = recorded(tmp_path)
    clip = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    request, _ = desk.submit(signed(document("consent_request")))
    desk.approve(request)

    other = write_test_clip(store, "side_gate", WIN_START - timedelta(hours=1), frames(3, 4), FPS)
    clip.path.write_bytes(other.path.read_bytes())
    with sqlite3.connect(tmp_path / INDEX_NAME) as db:
        db.execute("UPDATE clips SET sha256=?, size=? WHERE id=?",
                   (sha256_file(clip.path), clip.path.stat().st_size, clip.id))
    decision = desk.current(request)[2]
    assert decision.decision == "owner_review" and "CLIP_CHANGED" in decision.codes
    assert clip.id in next(r.detail for r in decision.reasons if r.code == "CLIP_CHANGED")
    with pytest.raises(RequestError, match="CLIP_CHANGED"):
        desk.export(request)
    assert bundles(desk) == [] and records(desk, "export_start") == []


def test_clip_file_changed_behind_the_index_is_refused(tmp_path: Path) -> None:
    _, store, desk = recorded(tmp_path)
    clip = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    request, _ = desk.submit(signed(document("consent_request")))
    desk.approve(request)
    with clip.path.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(StorageError, match="does not match its recorded sha256"):
        desk.export(request)
    assert bundles(desk) == []


def test_an_approval_from_before_clips_were_listed_releases_nothing(tmp_path: Path) -> None:
    """A store written by the older version: approve stored `clips: null`, meaning whatever was in scope at
    export time. It is not honoured any more; the owner approves again."""
    _, store, desk = recorded(tmp_path)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    request, _ = desk.submit(signed(document("consent_request")))
    desk.store.add_action(request, "approve", NOW, {"clips": None, "cameras": None, "data": None, "unblur": [],
                                                    "attest_original": False, "by": "owner"})
    decision = desk.current(request)[2]
    assert decision.decision == "owner_review" and "APPROVAL_UNLISTED" in decision.codes
    with pytest.raises(RequestError, match="APPROVAL_UNLISTED"):
        desk.export(request)
    assert desk.approve(request).decision == "release"


def test_kill_between_the_approval_record_and_the_store(tmp_path: Path) -> None:
    clock, store, desk = recorded(tmp_path)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    request, _ = desk.submit(signed(document("consent_request")))
    killed_at("approve:after-audit", lambda: desk_for(tmp_path, clock, clips=ClipStore(tmp_path, clock))
              .approve(request))
    desk = desk_for(tmp_path, clock, clips=ClipStore(tmp_path, clock))
    assert len(records(desk, "owner_approve")) == 1  # audited first ...
    assert desk.current(request)[2].decision == "owner_review"  # ... but not in force: nothing is released
    with pytest.raises(RequestError, match="not released"):
        desk.export(request)
    assert desk.approve(request).decision == "release"
    assert desk.audit.verify().ok


def test_cli_approve_prints_exactly_what_it_releases(setup: dict[str, Any],  # noqa: F811
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup["cfg"]
    a, b = setup["clips"]
    code, out, _ = run(capsys, "requests", "submit", str(setup["warrant"]), "--config", cfg, "--json")
    request = json.loads(out)["id"]
    code, out, _ = run(capsys, "requests", "show", request, "--config", cfg)
    would = out.split("an approval releases:", 1)[1].splitlines()[:2]  # before approving: what it would release
    assert code == 0 and [line.split()[0] for line in would] == [a.id, b.id]
    assert [line.split("sha256 ")[1] for line in would] == [f"{a.sha256[:16]}...", f"{b.sha256[:16]}..."]
    code, out, _ = run(capsys, "requests", "approve", request, "--config", cfg)
    assert code == 0
    lines = [line.strip() for line in out.splitlines() if line.strip().startswith("clip ")]
    assert [line.split()[1] for line in lines] == [a.id, b.id]
    assert [line.split("sha256 ")[1] for line in lines] == [a.sha256, b.sha256]
    assert "releases the 2 clip part(s) above and nothing else" in out

    code, out, _ = run(capsys, "requests", "approve", request, "--clips", b.id, "--config", cfg, "--json")
    body = json.loads(out)
    assert code == 0 and [(c["clip"], c["sha256"]) for c in body["clips"]] == [(b.id, b.sha256)]
    code, out, _ = run(capsys, "requests", "show", request, "--config", cfg, "--json")
    shown = json.loads(out)
    assert [(c["clip"], c["sha256"]) for c in shown["now"]["clips"]] == [(b.id, b.sha256)]
    assert [(p["clip"], p["sha256"]) for p in shown["owner_actions"][-1]["shown"]] == [(b.id, b.sha256)]
