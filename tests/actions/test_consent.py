"""Consent through edge.actions.faces (what the CLI and the page call): an enrolment without a full consent record
is refused before any model loads or any file is written; a renewal changes only the consent record, is audited
exactly once (by the person's id, before the record changes) and is all-or-nothing under SIGKILL at every step;
an older version's record gets an id once, and keeps it."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.actions.faces import enrol, forget, list_faces, renew
from edge.clock import FakeClock
from edge.config import Config
from edge.errors import EdgeError, StorageError
from edge.footage.audit import AuditLog
from edge.vision.consent import DEFAULT_PURPOSE, Consent
from edge.vision.gallery import Gallery
from tests.footage.crash import killed_at

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 2026-03-10 in every time zone within +-11 h
FIRST = Consent("Ann", date(2026, 3, 1), DEFAULT_PURPOSE, date(2026, 6, 1))
SECOND = Consent("Ann's mother", date(2026, 3, 10), "to be greeted by name", date(2027, 3, 10))


def config(tmp_path: Path) -> Config:
    return Config.model_validate({"storage": {"state_dir": str(tmp_path / "state")}})


def enrolled(cfg: Config) -> str:
    chips = [np.full((150, 150, 3), 40 + i, np.uint8) for i in range(2)]
    person = Gallery(cfg.state_dir).enroll("Ann", chips, np.full((2, 128), 0.5, np.float32), FIRST, "m", NOW)
    assert person.person_id is not None
    return person.person_id


def faces_files(cfg: Config) -> dict[str, bytes]:
    root = cfg.state_dir / "faces"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def audit(cfg: Config, kind: str) -> list[dict[str, Any]]:
    return [r["data"] for r in AuditLog(cfg.state_dir, FakeClock(NOW)).records() if r["kind"] == kind]


@pytest.mark.parametrize(("consent", "error"), [
    (Consent("Ann", date(2026, 3, 1), DEFAULT_PURPOSE, None), "give the day the consent ends"),
    (Consent("Ann", date(2026, 3, 1), DEFAULT_PURPOSE, date(2026, 3, 9)), "consent end date 2026-03-09 is in the past"),
    (Consent("Ann", date(2026, 3, 1), DEFAULT_PURPOSE, date(2026, 2, 28)),
     "consent end date 2026-02-28 is not after the consent date 2026-03-01"),
    (Consent("Ann", date(2026, 3, 1), "", date(2027, 1, 1)), "say what the consent is for"),
])
def test_enrolment_without_a_full_consent_is_refused_before_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, consent: Consent, error: str) -> None:
    monkeypatch.setattr("edge.actions.faces.load_engine", lambda *a: pytest.fail("models loaded for a refused consent"))
    photo = tmp_path / "ann.jpg"
    photo.write_bytes(b"never read")
    cfg = config(tmp_path)
    with pytest.raises(StorageError, match=error):
        enrol(cfg, FakeClock(NOW), "Ann", [photo], consent)
    assert not (cfg.state_dir / "faces").exists() and audit(cfg, "face_enrol") == []


def test_a_renewal_changes_only_the_consent_and_is_audited_once(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    pid = enrolled(cfg)
    before = faces_files(cfg)
    clock = FakeClock(NOW)
    with pytest.raises(StorageError, match="consent end date 2026-03-09 is in the past"):
        renew(cfg, clock, "Ann", Consent("Ann", date(2026, 3, 5), DEFAULT_PURPOSE, date(2026, 3, 9)))
    assert faces_files(cfg) == before and audit(cfg, "face_consent") == []  # refused: nothing written or audited

    person = renew(cfg, clock, "ann", SECOND, by="web:alice")  # the name as the folder spells it
    assert (person.name, person.consent_by, person.consent_date, person.consent_purpose, person.consent_until,
            person.person_id) == ("Ann", "Ann's mother", "2026-03-10", "to be greeted by name", "2027-03-10", pid)
    after = faces_files(cfg)
    assert {k: v for k, v in after.items() if k != "ann/person.json"} == {
        k: v for k, v in before.items() if k != "ann/person.json"}  # photos and templates as they were
    assert json.loads(after["ann/person.json"])["enrolled_at"] == "2026-03-10T12:00:00Z"
    assert audit(cfg, "face_consent") == [{"person_id": pid, "consent_date": "2026-03-10",
                                           "consent_until": "2027-03-10", "previous_until": "2026-06-01",
                                           "by": "web:alice"}]
    assert AuditLog(cfg.state_dir, clock).verify().ok
    (listed,) = list_faces(cfg, clock).listed
    assert listed.status.text == "valid until 2027-03-10"


@pytest.mark.parametrize(("point", "renewed"), [
    ("enroll:photos-written", False), ("enroll:staged", False), ("enroll:old-moved-aside", True),
    ("enroll:renamed", True), ("gallery:removing", True)])
def test_a_renewal_killed_at_any_step_leaves_the_old_or_the_new_record(tmp_path: Path, point: str,
                                                                       renewed: bool) -> None:
    cfg = config(tmp_path)
    pid = enrolled(cfg)
    before = faces_files(cfg)
    killed_at(point, lambda: renew(cfg, FakeClock(NOW), "Ann", SECOND))
    gallery = Gallery(cfg.state_dir)  # opening finishes or undoes what the kill left
    (person,) = gallery.people()
    assert person.person_id == pid and person.photos == 2
    assert (person.consent_by, person.consent_until) == (("Ann's mother", "2027-03-10") if renewed
                                                         else ("Ann", "2026-06-01"))
    assert sorted(os.listdir(cfg.state_dir / "faces")) == ["ann"]  # no staging or trash left
    after = faces_files(cfg)
    assert {k: v for k, v in after.items() if k != "ann/person.json"} == {
        k: v for k, v in before.items() if k != "ann/person.json"}
    # The record is written before the change: exactly one, whether the change then landed or not.
    assert [r["consent_until"] for r in audit(cfg, "face_consent")] == ["2027-03-10"]
    assert AuditLog(cfg.state_dir, FakeClock(NOW)).verify().ok


def legacy_record(cfg: Config) -> Path:
    """Ann as a version before consent end dates and ids wrote her: no consent_purpose, consent_until, person_id."""
    folder = cfg.state_dir / "faces" / "ann"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "000.jpg").write_bytes(b"chip")
    np.save(folder / "templates.npy", np.full((1, 128), 0.5, np.float32))
    (folder / "person.json").write_text(json.dumps({
        "name": "Ann", "consent_by": "Ann", "consent_date": "2024-01-02", "enrolled_at": "2024-01-02T10:00:00Z",
        "photos": 1, "embedder": "m", "stored": "chips"}))
    return folder


def test_an_older_record_gets_an_id_once_and_the_audit_log_uses_it(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    folder = legacy_record(cfg)
    Gallery(cfg.state_dir, recover=False)  # `faces test` opens it read-only: nothing written
    assert "person_id" not in json.loads((folder / "person.json").read_text())

    (first,) = Gallery(cfg.state_dir).people()  # the first opening writes the id, all-or-nothing
    assert first.person_id is not None and first.consent_until is None
    stat = (folder / "person.json").stat()
    for _ in range(3):  # later openings read it, and write nothing
        (again,) = Gallery(cfg.state_dir).people()
        assert again.person_id == first.person_id
    assert (folder / "person.json").stat().st_ino == stat.st_ino
    assert (folder / "person.json").stat().st_mtime_ns == stat.st_mtime_ns
    (listed,) = list_faces(cfg, FakeClock(NOW)).listed
    assert listed.status.code == "no_end_date" and listed.status.warning and listed.status.recognised

    assert forget(cfg, "Ann", clock=FakeClock(NOW), by="web:alice")
    assert audit(cfg, "face_forget") == [{"person_id": first.person_id, "consent_date": "2024-01-02",
                                          "consent_until": None, "by": "web:alice"}]
    assert "Ann" not in (cfg.state_dir / "audit" / "footage.jsonl").read_text()


def test_an_older_record_is_renewed_in_place(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    legacy_record(cfg)
    person = renew(cfg, FakeClock(NOW), "Ann", SECOND)
    assert person.consent_until == "2027-03-10" and person.person_id is not None
    assert [r["person_id"] for r in audit(cfg, "face_consent")] == [person.person_id]
    assert (cfg.state_dir / "faces" / "ann" / "photos" / "000.jpg").read_bytes() == b"chip"


def test_renewing_someone_not_enrolled_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with pytest.raises(EdgeError, match="Bob is not enrolled"):
        renew(cfg, FakeClock(NOW), "Bob", SECOND)
    assert audit(cfg, "face_consent") == []
