"""Consent on the Faces page (test client): each person's consent in words with who, when, for what, until when
and their id, ended consents first with "renew or forget", warnings in words (never colour alone); the renewal form
(owner only, CSRF, a ticked confirmation) goes through edge.actions.faces.renew: one audit record by id, errors in
the page's words."""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import numpy as np

from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.vision.consent import DEFAULT_PURPOSE, Consent
from edge.vision.gallery import Gallery

from .conftest import NOW
from .helpers import VIEWER, VIEWER_PASSWORD, Site, csrf_of, login, make_config, setup_owner


def enrol(state: Path, name: str, until: date, given: date = date(2026, 3, 1)) -> str:
    chip = np.full((150, 150, 3), 100, np.uint8)
    person = Gallery(state).enroll(name, [chip], np.ones((1, 128), np.float32),
                                   Consent(f"{name} (self)", given, DEFAULT_PURPOSE, until), "m",
                                   now=NOW.replace(day=given.day))
    assert person.person_id is not None
    return person.person_id


def older_record(state: Path, name: str) -> None:
    """As a version before consent end dates wrote it (no purpose, end date or id)."""
    folder = state / "faces" / name.lower()
    (folder / "photos").mkdir(parents=True)
    np.save(folder / "templates.npy", np.ones((1, 128), np.float32))
    (folder / "person.json").write_text(json.dumps({
        "name": name, "consent_by": name, "consent_date": "2024-01-02", "enrolled_at": "2024-01-02T10:00:00Z",
        "photos": 0, "embedder": "m", "stored": "chips"}))


def cards(page: str) -> dict[str, str]:
    """Each person's card, by name, in the page's order."""
    return {m.group(1): m.group(0) for m in re.finditer(r'<li class="card"><h2>([^<]+)</h2>.*?</li>', page, re.S)}


def test_the_faces_page_shows_each_consent_and_lists_ended_ones_first(tmp_path: Path) -> None:
    site = Site(make_config(tmp_path), FakeClock(NOW))  # 2026-03-10
    client = site.client()
    setup_owner(site, client)
    ids = {"Val": enrol(tmp_path, "Val", date(2027, 3, 10)), "Soon": enrol(tmp_path, "Soon", date(2026, 3, 15)),
           "Gone": enrol(tmp_path, "Gone", date(2026, 3, 5), given=date(2026, 3, 1))}
    older_record(tmp_path, "Old")
    # Gone's consent was valid when given; by the page's clock (2026-03-10) it ended on 2026-03-05.
    page = client.get("/faces").text
    shown = cards(page)
    assert list(shown) == ["Gone", "Old", "Soon", "Val"]
    assert ('<p class="warning"><strong>Warning:</strong> consent ended on 2026-03-05 \u2014 not recognised. Renew it '
            "or forget Gone.</p>") in shown["Gone"]
    assert ("<strong>Warning:</strong> no end date recorded for this consent. Record one: renew the consent "
            "below.") in shown["Old"]
    assert "<strong>Warning:</strong> consent ends in 5 days (last day 2026-03-15)." in shown["Soon"]
    assert '<p class="ok"><strong>Consent:</strong> valid until 2027-03-10.</p>' in shown["Val"]
    for name, card in shown.items():
        if name != "Old":
            assert f"<code>{ids[name]}</code>" in card and f"<dd>{name} (self)</dd>" in card
            assert f"<dt>For</dt><dd>{DEFAULT_PURPOSE.replace(chr(39), '&#39;')}</dd>" in card
    assert "<dd>not recorded (enrolled by an older version)</dd>" in shown["Old"]
    old_id = Gallery(tmp_path).enrolled("Old").person_id  # type: ignore[union-attr]
    assert old_id and f"<code>{old_id}</code>" in shown["Old"]  # the page's opening gave it one
    # The renewal form is open where something needs doing, closed where the consent is fine.
    assert "<details open>" in shown["Gone"] and "<details open>" in shown["Old"]
    assert "<details>" in shown["Soon"] and "<details>" in shown["Val"]
    assert 'action="/faces/consent"' in shown["Val"] and 'name="consent_until" type="date" required' in shown["Val"]


def renew(client: object, page: str, **fields: str) -> object:
    data = {"csrf": csrf_of(page), "name": "Gone", "consent_by": "Gone's father", "consent_date": "2026-03-10",
            "consent_purpose": "to be greeted at the door", "consent_until": "2027-03-10", "consent": "yes",
            **fields}
    return client.post("/faces/consent", data=data)  # type: ignore[attr-defined]


def test_the_renewal_form_records_a_new_consent_once(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    site = Site(make_config(tmp_path), clock)
    client = site.client()
    setup_owner(site, client)
    pid = enrol(tmp_path, "Gone", date(2026, 3, 5))
    photos = {p: p.read_bytes() for p in (tmp_path / "faces" / "gone").rglob("*") if p.is_file() and
              p.name != "person.json"}
    page = client.get("/faces").text
    log = AuditLog(tmp_path, clock)

    for fields, words in [
        ({"consent_date": "2026-03-01", "consent_until": "2026-03-09"},
         "consent end date 2026-03-09 is in the past (today is 2026-03-10)"),
        ({"consent_until": "2026-03-10"}, "consent end date 2026-03-10 is not after the consent date 2026-03-10"),
        ({"consent_until": ""}, "give the day the consent ends"),
        ({"consent_until": "next year"}, "the day the consent ends is not a date (YYYY-MM-DD)"),
        ({"consent_date": "2026-03-11"}, "consent date 2026-03-11 is in the future"),
        ({"consent_purpose": " "}, "say what the consent is for"),
        ({"consent": ""}, "tick the box: Gone (or their guardian) agreed to this"),
        ({"name": "Nobody"}, "Nobody is not enrolled"),
    ]:
        r = renew(client, page, **fields)
        assert r.status_code == 400 and f"Consent not recorded: {words}" in r.text, (fields, r.text)  # type: ignore
        assert "--consent" not in r.text  # type: ignore[attr-defined]
    assert [x for x in log.records() if x["kind"] == "face_consent"] == []
    r = client.post("/faces/consent", data={"name": "Gone", "consent_until": "2027-03-10", "consent": "yes"})
    assert r.status_code == 403  # no CSRF token

    r = renew(client, page)
    assert r.status_code == 303 and r.headers["location"] == "/faces"  # type: ignore[attr-defined]
    person = Gallery(tmp_path).enrolled("Gone")
    assert person is not None and (person.consent_by, person.consent_date, person.consent_purpose,
                                   person.consent_until, person.person_id) == (
        "Gone's father", "2026-03-10", "to be greeted at the door", "2027-03-10", pid)
    assert {p: p.read_bytes() for p in photos} == photos  # the photos and templates as they were
    shown = cards(client.get("/faces").text)["Gone"]
    assert "valid until 2027-03-10" in shown and "<dd>to be greeted at the door</dd>" in shown
    [record] = [x["data"] for x in log.records() if x["kind"] == "face_consent"]
    assert record == {"person_id": pid, "consent_date": "2026-03-10", "consent_until": "2027-03-10",
                      "previous_until": "2026-03-05", "by": "web:alice"}
    assert "Gone" not in log.path.read_text() and log.verify().ok

    clock.advance(366 * 86400)  # a year on, by the page's clock (the session has ended: log in again)
    assert login(client).status_code == 303
    assert "ended on 2027-03-10 \u2014 not recognised" in cards(client.get("/faces").text)["Gone"]


def test_a_viewer_gets_403_on_the_renewal_form(tmp_path: Path) -> None:
    site = Site(make_config(tmp_path), FakeClock(NOW))
    owner = site.client()
    setup_owner(site, owner)
    enrol(tmp_path, "Gone", date(2026, 3, 5))
    before = (tmp_path / "faces" / "gone" / "person.json").read_bytes()
    site.auth.add_viewer(VIEWER, VIEWER_PASSWORD)
    viewer = site.client("192.168.1.83")
    assert login(viewer, VIEWER, VIEWER_PASSWORD).status_code == 303
    page = viewer.get("/").text
    assert "/faces/consent" not in page
    r = renew(viewer, page)
    assert r.status_code == 403  # type: ignore[attr-defined]
    assert (tmp_path / "faces" / "gone" / "person.json").read_bytes() == before
    assert not [x for x in AuditLog(tmp_path, site.clock).records() if x["kind"].startswith("face_")]
