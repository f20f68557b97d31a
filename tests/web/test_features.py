"""The page's newer features over TestClient: export from a request's card (its sha256 and place shown, never a
download), the document hash the owner saw checked by the footage desk itself, events with their snapshot and
a clip served for playing in place (with Range), the Host allow-list against DNS rebinding; what an export
sent (its file count, the clips it left out) and no decision offered again after it."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from pathlib import Path

from starlette.testclient import TestClient

from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.footage.desk import FootageDesk
from edge.footage.redact import ExportFinders
from edge.recording.store import ClipStore

from .conftest import NOW
from .helpers import (
    PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    Site,
    csrf_of,
    login,
    make_config,
    setup_owner,
)
from .seed import add_clip, seed_request, seed_ring_with_clip, seeded_config
from .test_requests import actions, decide_form


def kinds(site: Site) -> list[str]:
    return [r["kind"] for r in AuditLog(site.config.state_dir, site.clock).records()]


def approved(tmp_path: Path) -> tuple[Site, str, list[str]]:
    clock = FakeClock(NOW)
    cfg = seeded_config(tmp_path)
    clips = [add_clip(cfg, clock, 2), add_clip(cfg, clock, 10)]
    request = seed_request(cfg, clock)
    site = Site(cfg, clock)
    site.backend.find_faces = shipped_finders()  # the daemon's: the CLI shell hands them to every export
    return site, request, clips


def shipped_finders() -> ExportFinders:
    from edge.vision import redaction_finders as finders

    return ExportFinders(finders.find_faces(), finders.check_faces(), finders.NAMES)


def test_a_document_hash_other_than_the_one_shown_gets_409_from_the_desk_and_is_audited(tmp_path: Path) -> None:
    site, request, _clips = approved(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    form = decide_form(page, action="approve", password=PASSWORD, confirm="yes")
    assert form["seen"] == FootageDesk(site.config, site.clock).store.get(request).sha256
    form["seen"] = hashlib.sha256(b"another document").hexdigest()  # the page's own hash still matches
    r = client.post(f"/requests/{request}/decide", data=form)
    assert r.status_code == 409 and "changed since" in r.text
    assert actions(site, request) == []
    refused = [x for x in AuditLog(tmp_path, site.clock).records() if x["kind"] == "web_refused"]
    assert [(x["data"]["request"], x["data"]["why"]) for x in refused] == [(request, "document changed since shown")]


def test_an_approved_request_is_exported_from_its_card_and_never_offered_for_download(tmp_path: Path) -> None:
    site, request, clips = approved(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    assert f'action="/requests/{request}/export"' not in page  # nothing to export before the owner approves
    r = client.post(f"/requests/{request}/decide", data=decide_form(page, action="approve", password=PASSWORD,
                                                                     confirm="yes"))
    assert r.status_code == 303
    page = client.get(f"/requests/{request}").text
    assert f'action="/requests/{request}/export"' in page and "encrypted to the agency" in page
    token = csrf_of(page)
    assert client.post(f"/requests/{request}/export", data={}).status_code == 403  # no CSRF token
    assert "export_start" not in kinds(site)

    site.auth.add_viewer(VIEWER, VIEWER_PASSWORD)
    viewer = site.client("192.168.1.81")
    assert login(viewer, VIEWER, VIEWER_PASSWORD).status_code == 303
    seen_by_viewer = viewer.get(f"/requests/{request}").text
    assert f'action="/requests/{request}/export"' not in seen_by_viewer
    assert viewer.post(f"/requests/{request}/export", data={"csrf": csrf_of(seen_by_viewer)}).status_code == 403
    assert "export_start" not in kinds(site)

    r = client.post(f"/requests/{request}/export", data={"csrf": token})
    assert r.status_code == 303, r.text
    [export] = FootageDesk(site.config, site.clock).store.exports(request)
    bundle = Path(export["path"])
    assert bundle.is_file() and hashlib.sha256(bundle.read_bytes()).hexdigest() == export["sha256"]
    page = client.get(f"/requests/{request}").text
    assert export["sha256"] in page and str(bundle) in page
    assert f'action="/requests/{request}/export"' not in page  # exported once
    # Never a download: no link to a clip, to the bundle or to any file of the request; the routes do not exist.
    assert not re.search(r'href="[^"]*(/clips/|\.mp4|\.webm|bundle|exports/)', page)
    assert 'download' not in page.lower().replace("not offer it for download", "").replace(
        "never offers it or its clips for download", "")
    for path in (f"/requests/{request}/bundle", f"/requests/{request}/export", f"/exports/{bundle.name}"):
        assert client.get(path).status_code in (404, 405)
    assert kinds(site)[-2:] == ["export_start", "export_complete"]
    ok, message = FootageDesk(site.config, site.clock).verify_audit()
    assert ok, message
    assert "Verified" in client.get("/audit").text
    assert clips  # the clips exist on the device; they reach the agency only inside the encrypted bundle


def exported(tmp_path: Path, *, untrusted: bool) -> tuple[Site, TestClient, str, str, str]:
    """A one-clip request approved and exported from its card; (site, client, request, clip, the card before
    approval). untrusted: the clip was recorded while the device clock was not trusted."""
    clock = FakeClock(NOW)
    cfg = seeded_config(tmp_path)
    clip = add_clip(cfg, clock, 2)
    if untrusted:
        ClipStore(cfg.state_dir, clock).mark_untrusted(clip)  # recorded before the clock was trusted
    request = seed_request(cfg, clock)
    site = Site(cfg, clock)
    site.backend.find_faces = shipped_finders()
    client = site.client()
    setup_owner(site, client)
    before = client.get(f"/requests/{request}").text
    r = client.post(f"/requests/{request}/decide", data=decide_form(before, action="approve", password=PASSWORD,
                                                                     confirm="yes"))
    assert r.status_code == 303, r.text
    page = client.get(f"/requests/{request}").text
    r = client.post(f"/requests/{request}/export", data={"csrf": csrf_of(page)})
    assert r.status_code == 303, r.text
    return site, client, request, clip, before


def test_an_export_that_left_a_clip_out_says_so_on_the_card(tmp_path: Path) -> None:
    """Found by trying the page (helper webtest): on a device whose clock was not trusted when a clip was
    recorded, the export leaves that clip out (docs/time.md), and the card showed it as a plain success."""
    site, client, request, clip, before = exported(tmp_path, untrusted=True)
    # Before approval the card says which clip will be left out, and why.
    assert "not trusted" in before and "left out" in before and clip in before
    [done] = [r for r in AuditLog(site.config.state_dir, site.clock).records() if r["kind"] == "export_complete"]
    assert done["data"]["files"] == []  # the desk left the clip out, as docs/time.md says
    assert any(clip in note and "excluded" in note for note in done["data"]["notes"])
    page = client.get(f"/requests/{request}").text
    assert "excluded" in page.lower() and "not trusted" in page, f"the card does not say {clip} was left out"
    assert "No clip was exported" in page and "(0 files)" in page


def test_after_the_export_the_card_does_not_ask_to_decide_again(tmp_path: Path) -> None:
    """Found by trying the page (helper webtest): after an export the decision is owner_review again
    (APPROVAL_USED) and the card offered Approve, Narrow and Deny again, as if nothing had been done."""
    _site, client, request, clip, before = exported(tmp_path, untrusted=False)
    assert "not trusted" not in before and "left out" not in before
    page = client.get(f"/requests/{request}").text
    assert "sha256" in page  # the export is shown
    assert 'value="approve"' not in page and f'action="/requests/{request}/deny"' not in page
    assert "Exported on" in page and "(1 file)" in page and "No clip was exported" not in page
    assert clip


def test_events_show_their_snapshot_and_stream_their_clip_with_ranges(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    site = Site(make_config(tmp_path), clock)
    event_id, clip_id = seed_ring_with_clip(site.config, clock, NOW - timedelta(minutes=30))
    client = site.client()
    assert client.get(f"/clips/{clip_id}").status_code == 303  # before setup: to /setup
    setup_owner(site, client)
    page = client.get(f"/events?day={(NOW - timedelta(minutes=30)).astimezone().date()}").text
    assert f'<img class="snap" src="/snapshots/{event_id}"' in page
    assert f'<video src="/clips/{clip_id}" controls' in page
    snap = client.get(f"/snapshots/{event_id}")
    assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
    assert snap.content[:3] == b"\xff\xd8\xff"
    ref = ClipStore(site.config.state_dir, clock).get(clip_id)
    whole = client.get(f"/clips/{clip_id}")
    assert whole.status_code == 200 and whole.headers["content-type"] == ref.mime
    assert whole.content == ref.path.read_bytes() and whole.headers.get("accept-ranges") == "bytes"
    assert "attachment" not in whole.headers.get("content-disposition", "")
    part = client.get(f"/clips/{clip_id}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == ref.path.read_bytes()[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{ref.size}"
    assert client.get("/clips/no-such-clip").status_code == 404
    assert client.get("/snapshots/no-such-event").status_code == 404
    client.post("/logout", data={"csrf": csrf_of(client.get("/").text)})
    assert client.get(f"/clips/{clip_id}").headers["location"] == "/login"  # logged out: nothing


def test_the_page_answers_only_to_the_device_s_names(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    site = Site(make_config(tmp_path, hostname="doorbell", extra_names=["door.example.org"]), clock)
    client = site.client()
    for host in ("doorbell", "doorbell.local", "DOORBELL.local.", "door.example.org", "localhost",
                 "localhost:8443", "127.0.0.1:8443", "[::1]:8443"):
        r = client.get("/healthz", headers={"host": host})
        assert r.status_code == 200, host
    for host in ("evil.example.com", "doorbell.evil.example.com", "doorbell.local.evil.example", "",
                 "10.255.255.1", "attacker.test:8443", "doorbell:1@evil.example.com", "doorbell:x",
                 "[::1]evil", "[::1]:8443@evil", "doorbell:8443:1"):
        r = client.get("/setup", headers={"host": host})
        assert r.status_code == 421, host
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
    # A rebinding page cannot post either, with a token or without.
    r = client.post("/setup", headers={"host": "evil.example.com"}, data={"csrf": "x", "code": "y"})
    assert r.status_code == 421
