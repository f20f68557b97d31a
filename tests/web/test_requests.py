"""Deciding a footage request from the page: approve and narrow need the password, the "I confirm" box and the
request exactly as shown (409 otherwise); a tampered narrow is refused; deny needs no password; all audited."""

from __future__ import annotations

from pathlib import Path

from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.footage.desk import FootageDesk
from edge.web.app import COOKIE

from .conftest import NOW
from .helpers import OWNER, PASSWORD, VIEWER, VIEWER_PASSWORD, Site, csrf_of, login, setup_owner
from .seed import add_clip, seed_request, seeded_config


def decide_form(page: str, **extra: object) -> dict[str, object]:
    import re

    shown = re.search(r'name="shown" value="([0-9a-f]{64})"', page)
    seen = re.search(r'name="seen" value="([0-9a-f]{64})"', page)
    assert shown and seen, "the decide form carries no hash of the request as shown, or of its document"
    return {"csrf": csrf_of(page), "shown": shown.group(1), "seen": seen.group(1), **extra}


def actions(site: Site, request: str) -> list[tuple[str, dict[str, object]]]:
    desk = FootageDesk(site.config, site.clock, emit=lambda e: None)
    return [(kind, data) for _, kind, _, data in desk.store.actions(request)]


def make(tmp_path: Path) -> tuple[Site, str, list[str]]:
    clock = FakeClock(NOW)
    cfg = seeded_config(tmp_path)
    clips = [add_clip(cfg, clock, 2), add_clip(cfg, clock, 10)]
    request = seed_request(cfg, clock)
    site = Site(cfg, clock)
    return site, request, clips


def test_the_card_shows_summary_basis_note_and_every_rule_result(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    assert f'href="/requests/{request}"' in client.get("/requests").text
    page = client.get(f"/requests/{request}").text
    assert "Metro Police ask for 2 clips" in page and "They say it is a warrant" in page
    assert "What this means" in page and "A judge signed a warrant" in page
    assert "VERIFIED_WARRANT" in page and "Advisory:" in page
    assert "a warrant or court order signed by a trusted court" in page
    assert all(c in page for c in clips) and 'value="approve"' in page and 'value="narrow"' in page


def test_approve_needs_password_and_confirm_then_rotates_the_session(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    url = f"/requests/{request}/decide"
    r = client.post(url, data=decide_form(page, action="approve", confirm="yes"))
    assert r.status_code == 403 and actions(site, request) == []
    r = client.post(url, data=decide_form(page, action="approve", confirm="yes", password="wrong password!!"))
    assert r.status_code == 403 and actions(site, request) == []
    failed = [x for x in AuditLog(tmp_path, site.clock).records() if x["kind"] == "web_login_failed"]
    assert failed[-1]["data"]["at"] == f"decide {request}"
    r = client.post(url, data=decide_form(page, action="approve", password=PASSWORD))
    assert r.status_code == 400 and actions(site, request) == []  # no "I confirm"
    old = client.cookies.get(COOKIE)
    r = client.post(url, data=decide_form(page, action="approve", password=PASSWORD, confirm="yes",
                                          clip=clips))
    assert r.status_code == 303, r.text
    [(kind, data)] = actions(site, request)
    assert kind == "approve" and data["by"] == f"web:{OWNER}" and sorted(data["clips"]) == sorted(clips)
    assert client.cookies.get(COOKIE) != old
    replay = site.client()
    replay.cookies.set(COOKIE, old or "", domain="doorbell.test")
    assert replay.get("/").headers["location"] == "/login"
    desk = FootageDesk(site.config, site.clock, emit=lambda e: None)
    ok, message = desk.verify_audit()
    assert ok, message
    assert "OWNER_APPROVED" in client.get(f"/requests/{request}").text
    audit = client.get("/audit").text
    assert "1 request(s) received" in audit and "warrant: release" in audit and "Verified" in audit


def test_a_request_that_changed_since_it_was_shown_gets_409_and_no_change(tmp_path: Path) -> None:
    site, request, _clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    add_clip(site.config, site.clock, 20)  # a third clip falls in the window after the page was shown
    r = client.post(f"/requests/{request}/decide", data=decide_form(page, action="approve", password=PASSWORD,
                                                                     confirm="yes"))
    assert r.status_code == 409 and "changed since" in r.text
    assert actions(site, request) == []


def test_narrow_releases_only_a_subset_and_a_tampered_narrow_is_refused(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    url = f"/requests/{request}/decide"
    r = client.post(url, data=decide_form(page, action="narrow", password=PASSWORD, confirm="yes",
                                          clip=[clips[0], "clip-not-asked-for"]))
    assert r.status_code == 400 and "not in request" in r.text and actions(site, request) == []
    r = client.post(url, data=decide_form(page, action="narrow", password=PASSWORD, confirm="yes",
                                          clip=[clips[0]]))
    assert r.status_code == 303
    [(kind, data)] = actions(site, request)
    assert kind == "approve" and data["clips"] == [clips[0]]


def test_deny_needs_no_password_and_is_audited(tmp_path: Path) -> None:
    site, request, _clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    deny_csrf = csrf_of(page)
    r = client.post(f"/requests/{request}/deny", data={"csrf": deny_csrf, "reason": "Not without talking to me"})
    assert r.status_code == 303
    [(kind, data)] = actions(site, request)
    assert kind == "deny" and data == {"reason": "Not without talking to me", "by": f"web:{OWNER}"}
    assert [x["kind"] for x in AuditLog(tmp_path, site.clock).records()][-1] == "owner_deny"
    assert 'value="approve"' not in client.get(f"/requests/{request}").text
    assert r.headers["location"] == f"/requests/{request}?done=denied"
    assert "You denied this request" in client.get(r.headers["location"]).text
    assert "Done." not in client.get(f"/requests/{request}?done=<script>").text  # only the three known words


def test_a_viewer_reads_the_request_without_controls_and_gets_403_on_deciding(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    owner = site.client()
    setup_owner(site, owner)
    site.auth.add_viewer(VIEWER, VIEWER_PASSWORD)
    viewer = site.client("192.168.1.80")
    assert login(viewer, VIEWER, VIEWER_PASSWORD).status_code == 303
    page = viewer.get(f"/requests/{request}").text
    assert "VERIFIED_WARRANT" in page and 'value="approve"' not in page and ">Deny<" not in page
    token = csrf_of(page)
    for path in ("decide", "deny"):
        r = viewer.post(f"/requests/{request}/{path}", data={"csrf": token, "password": VIEWER_PASSWORD,
                                                             "confirm": "yes", "action": "approve", "clip": clips})
        assert r.status_code == 403
    assert actions(site, request) == []


def test_a_blocking_result_takes_approve_away_and_says_why(tmp_path: Path) -> None:
    from ..footage.factory import document, signed

    site, _request, _clips = make(tmp_path)
    doc = document("warrant", request_id="MPD-2026-0002")
    doc["scope"]["cameras"] = ["back_yard"]
    request, decision = FootageDesk(site.config, site.clock, emit=lambda e: None).submit(signed(doc))
    assert decision.decision == "deny"
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    assert "BAD_CAMERA" in page and "Blocking:" in page and "a camera this device does not have" in page
    assert 'value="approve"' not in page and "Approve is not offered: blocked by BAD_CAMERA" in page
    rows = client.get("/requests").text
    assert rows.index("Waiting for you") < rows.index("denied")  # pending first


def test_the_card_names_the_agency_as_configured_and_the_document_s_name_only_as_what_it_says(
        tmp_path: Path) -> None:
    """The list used the configured name but the card the document's own: a request signed with Metro Police's
    key that calls itself something grander is shown as Metro Police, with its own name only as what it says."""
    from ..footage.factory import document, signed

    site, plain, _clips = make(tmp_path)
    doc = document("warrant", request_id="MPD-2026-0002")
    doc["agency"]["name"] = "Federal Bureau of Everything"
    grand, _ = FootageDesk(site.config, site.clock, emit=lambda e: None).submit(signed(doc))
    client = site.client()
    setup_owner(site, client)

    card = client.get(f"/requests/{grand}").text
    assert "<dt>Agency</dt><dd>Metro Police\n" in card
    assert "The request says it is: Federal Bureau of Everything." in card
    assert "Metro Police ask for 2 clips" in card  # the summary line too
    assert card.count("Federal Bureau of Everything") == 1
    same = client.get(f"/requests/{plain}").text
    assert "<dt>Agency</dt><dd>Metro Police\n" in same and "says it is" not in same
    listing = client.get("/requests").text
    assert listing.count("Metro Police · warrant") == 2 and "Federal Bureau" not in listing


def test_approve_with_a_clip_unticked_is_refused_and_nothing_is_released(tmp_path: Path) -> None:
    """Found by hand on a phone: Approve sent every clip even when the owner had unticked some on the card (and a
    draft restores unticked boxes), so footage the form showed as not chosen left the device. The card's form says
    it shows the boxes; Approve then needs all of them ticked, and points at Narrow."""
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    assert 'name="ticks" value="shown"' in page
    url = f"/requests/{request}/decide"
    for ticked in ([clips[0]], []):  # one unticked; all unticked (the browser then sends no clip at all)
        r = client.post(url, data=decide_form(page, action="approve", password=PASSWORD, confirm="yes",
                                              ticks="shown", clip=ticked))
        assert r.status_code == 400 and "Narrow" in r.text and actions(site, request) == [], r.text
    r = client.post(url, data=decide_form(page, action="approve", password=PASSWORD, confirm="yes",
                                          ticks="shown", clip=clips))
    assert r.status_code == 303
    [(kind, data)] = actions(site, request)
    assert kind == "approve" and sorted(data["clips"]) == sorted(clips)
