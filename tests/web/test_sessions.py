"""Sessions over the test client with an injected clock: the timeout warning's markup and "Stay logged in", the
Now picture not counting as activity, login coming back to `next` (never off the site), and the draft a decision
leaves when its session timed out (the JavaScript-off path: plain form posts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.web.app import COOKIE, safe_next

from .helpers import OWNER, PASSWORD, VIEWER, VIEWER_PASSWORD, Site, csrf_of, login, setup_owner
from .test_requests import actions, decide_form, make

IDLE = 30 * 60


def checked_clips(page: str) -> list[str]:
    return re.findall(r'name="clip" value="([^"]+)" checked', page)


# --- the warning, "Stay logged in", what counts as activity ---------------------------------------------------

def test_every_page_says_the_limits_in_words_and_carries_the_warning_for_the_script(site: Site) -> None:
    client = site.client()
    setup_owner(site, client)
    site.clock.advance(60)
    for path in ("/", "/events", "/requests", "/audit", "/account"):
        page = client.get(path).text
        assert "You are logged out after 30 minutes without activity, and 12 hours after you log in." in page
        box = re.search(r'<div id="timeout"[^>]*role="alertdialog"[^>]*data-idle-left="(\d+)" '
                        r'data-absolute-left="(\d+)"\s+data-warn="(\d+)" hidden>', page)
        assert box, path
        assert (int(box.group(1)), int(box.group(2)), int(box.group(3))) == (IDLE, 12 * 3600 - 60, 120)
        assert '<script src="/static/session.js" defer></script>' in page
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script (CSP allows none)"
        assert ">Stay logged in</button>" in page and 'action="/session/extend"' in page
    script = client.get("/static/session.js")
    assert script.status_code == 200 and "/session/extend" in script.text
    assert "You are logged out after" not in client.get("/login").text  # no session: no warning, no footer


def test_stay_logged_in_extends_the_session_and_needs_its_csrf_token(site: Site, clock: FakeClock) -> None:
    stays, leaves = site.client("192.168.1.20"), site.client("192.168.1.21")
    setup_owner(site, stays)
    assert login(leaves).status_code == 303
    token = csrf_of(stays.get("/").text)
    csrf_of(leaves.get("/").text)
    clock.advance(IDLE - 60)  # the warning would show now (2 minutes before)
    assert stays.post("/session/extend", data={}).status_code == 403
    assert stays.post("/session/extend", data={"csrf": token},
                      headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    r = stays.post("/session/extend", data={"csrf": token})
    assert r.status_code == 204 and r.content == b""
    clock.advance(IDLE - 60)  # 58 minutes since either page was last drawn
    assert stays.get("/").status_code == 200
    assert leaves.get("/").headers["location"] == "/login"
    clock.advance(IDLE + 1)
    r = stays.post("/session/extend", data={"csrf": token})  # too late: an ended session is not revived
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert stays.get("/").headers["location"] == "/login"


def test_the_now_picture_refreshing_every_second_does_not_keep_the_session_alive(tmp_path: Path,
                                                                               clock: FakeClock) -> None:
    from .helpers import make_config

    site = Site(make_config(tmp_path), clock, frame=b"\xff\xd8jpeg")
    client = site.client()
    setup_owner(site, client)
    assert client.get("/").status_code == 200
    statuses = []
    for _ in range(31 * 6):  # a phone left on Now: the script asks for the picture (every 10 s here) for 31 min
        clock.advance(10)
        statuses.append(client.get("/now.jpg").status_code)
    assert statuses[:29 * 6] == [200] * (29 * 6)  # the picture keeps coming while the session lasts
    assert statuses[-1] == 303  # but no person did anything for 30 minutes: the session ended
    assert client.get("/").headers["location"] == "/login"


def test_the_session_check_says_the_time_left_without_touching_it(site: Site, clock: FakeClock) -> None:
    client = site.client()
    setup_owner(site, client)
    assert client.get("/session").json() == {"live": True, "idle_left": IDLE, "absolute_left": 12 * 3600}
    clock.advance(600)
    assert client.get("/session").json()["idle_left"] == IDLE - 600
    clock.advance(600)
    assert client.get("/session").json()["idle_left"] == IDLE - 1200  # the check itself is not activity
    clock.advance(IDLE - 1200 + 1)
    r = client.get("/session")
    assert r.status_code == 401 and r.json() == {"live": False}


# --- login comes back to where you were ------------------------------------------------------------------------

def test_login_comes_back_to_the_page_asked_for(site: Site) -> None:
    client = site.client()
    setup_owner(site, client)
    client.cookies.delete(COOKIE)
    r = client.get("/events?day=2026-03-09")
    assert r.headers["location"] == "/login?next=%2Fevents%3Fday%3D2026-03-09"
    page = client.get(r.headers["location"]).text
    assert '<input type="hidden" name="next" value="/events?day=2026-03-09">' in page
    r = client.post("/login", data={"csrf": csrf_of(page), "username": OWNER, "password": PASSWORD,
                                    "next": "/events?day=2026-03-09"})
    assert r.status_code == 303 and r.headers["location"] == "/events?day=2026-03-09"
    assert client.get("/login?next=%2Faudit").headers["location"] == "/audit"  # already logged in
    assert client.get("/now.jpg").status_code in (200, 404)
    client.cookies.delete(COOKIE)
    assert client.get("/now.jpg").headers["location"] == "/login"  # a picture is not a page to come back to


@pytest.mark.parametrize("target", [
    "//evil.test/x", "https://evil.test/", "http:/evil.test", "/\\evil.test", "\\\\evil.test", "javascript:alert(1)",
    "/events\r\nSet-Cookie: x=1", "/\tevil", " /events", "evil.test", "", "/login", "/logout", "/setup",
    "/" + "a" * 2001,
])
def test_login_never_goes_off_the_site(site: Site, target: str) -> None:
    assert safe_next(target) == "/"
    client = site.client()
    setup_owner(site, client)
    client.cookies.delete(COOKIE)
    page = client.get("/login").text
    r = client.post("/login", data={"csrf": csrf_of(page), "username": OWNER, "password": PASSWORD,
                                    "next": target})
    assert r.status_code == 303 and r.headers["location"] == "/"


# --- a decision sent after the timeout keeps its ticked clips (works with JavaScript off) ----------------------

def test_a_narrow_sent_after_the_idle_timeout_is_kept_and_its_clips_ticked_after_login(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    assert checked_clips(page) == clips
    site.clock.advance(IDLE + 60)  # the owner read the request for 31 minutes before sending
    form = decide_form(page, action="narrow", password=PASSWORD, confirm="yes", clip=[clips[1]])
    r = client.post(f"/requests/{request}/decide", data=form)
    assert r.status_code == 303
    assert r.headers["location"] == f"/login?next=%2Frequests%2F{request}&draft=1"
    assert actions(site, request) == []  # nothing decided
    db = (site.config.state_dir / "web" / "web.db").read_bytes()
    assert PASSWORD.encode() not in db and clips[1].encode() in db  # the clips are kept, never the password
    kinds = [x["kind"] for x in AuditLog(tmp_path, site.clock).records()]
    assert "web_login_failed" not in kinds

    login_page = client.get(r.headers["location"]).text
    assert "Your session ended before your decision was sent, so nothing was decided." in login_page
    r = client.post("/login", data={"csrf": csrf_of(login_page), "username": OWNER, "password": PASSWORD,
                                    "next": f"/requests/{request}"})
    assert r.headers["location"] == f"/requests/{request}"
    card = client.get(f"/requests/{request}").text
    assert "The 1 clip you had ticked is ticked again (you had chosen Narrow)" in " ".join(card.split())
    assert checked_clips(card) == [clips[1]]
    assert re.search(r'<input id="password" name="password" type="password"[^>]*required>', card)  # empty
    assert 'name="confirm" value="yes" required>' in card  # "I confirm" not ticked again by itself
    assert actions(site, request) == []  # a draft is never applied by itself
    again = client.get(f"/requests/{request}").text
    assert checked_clips(again) == clips and "had ticked" not in again  # used once, then gone
    r = client.post(f"/requests/{request}/decide", data=decide_form(card, action="narrow", password=PASSWORD,
                                                                      confirm="yes", clip=checked_clips(card)))
    assert r.status_code == 303
    [(kind, data)] = actions(site, request)
    assert kind == "approve" and data["clips"] == [clips[1]]


def test_an_approve_after_the_absolute_timeout_is_kept_too_but_not_after_the_keeping_time(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    for _ in range(12 * 2 + 1):  # busy every 29 minutes: only the 12-hour limit ends it
        site.clock.advance(29 * 60)
        page = client.get(f"/requests/{request}")
    assert page.status_code == 303
    page = client.get(f"/requests/{request}")  # still ended: it needs a login
    assert page.headers["location"] == f"/login?next=%2Frequests%2F{request}"
    state = site.config.state_dir
    other = Site(site.config, site.clock)  # a page drawn just before the limit, sent after it
    owner = other.client("192.168.1.40")
    login(owner)
    drawn = owner.get(f"/requests/{request}").text
    site.clock.advance(12 * 3600 + 1)
    r = owner.post(f"/requests/{request}/decide", data=decide_form(drawn, action="approve", clip=clips))
    assert r.headers["location"].endswith("&draft=1")
    assert other.web.sessions.take_draft(OWNER, request) is not None
    site.clock.advance(12 * 3600 + 60)  # ended more than the keeping time (the absolute timeout) ago
    r = owner.post(f"/requests/{request}/decide", data=decide_form(drawn, action="approve", clip=clips))
    assert r.headers["location"] == "/login"
    assert other.web.sessions.take_draft(OWNER, request) is None
    assert state.exists()


def test_no_draft_without_the_session_s_token_its_origin_or_after_logout(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    url = f"/requests/{request}/decide"
    site.clock.advance(IDLE + 60)
    form = decide_form(page, action="narrow", clip=[clips[0]])
    for bad in ({**form, "csrf": "x" * 43}, {k: v for k, v in form.items() if k != "csrf"}):
        r = client.post(url, data=bad)
        assert (r.status_code, r.headers["location"]) == (303, "/login")
    r = client.post(url, data=form, headers={"Origin": "https://evil.test"})
    assert r.status_code == 403
    r = client.post(url, data=form, headers={"Sec-Fetch-Site": "same-site"})
    assert r.status_code == 403
    assert site.web.sessions.take_draft(OWNER, request) is None

    login(client)  # log out, then the old cookie: logged out means gone, not ended
    page = client.get(f"/requests/{request}").text
    old = client.cookies.get(COOKIE)
    client.post("/logout", data={"csrf": csrf_of(page)})
    replay = site.client("192.168.1.20")
    replay.cookies.set(COOKIE, old or "", domain="doorbell.test")
    r = replay.post(url, data=decide_form(page, action="narrow", clip=[clips[0]]))
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert site.web.sessions.take_draft(OWNER, request) is None
    r = site.client("192.168.1.99").post(url, data=form)  # no cookie at all
    assert (r.status_code, r.headers["location"]) == (303, "/login")


def test_a_draft_is_only_for_its_user_and_only_for_clips_the_request_asks_for(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    owner = site.client()
    setup_owner(site, owner)
    site.auth.add_viewer(VIEWER, VIEWER_PASSWORD)
    sessions = site.web.sessions
    assert sessions.save_draft(OWNER, request, "narrow", [clips[0]])
    viewer = site.client("192.168.1.80")
    login(viewer, VIEWER, VIEWER_PASSWORD)
    assert "had ticked" not in viewer.get(f"/requests/{request}").text
    assert sessions.take_draft(VIEWER, request) is None
    assert sessions.take_draft(OWNER, request) is not None  # the viewer's visit left the owner's draft alone

    assert sessions.save_draft(OWNER, request, "narrow", [clips[0], "clip-not-asked-for"])
    page = owner.get(f"/requests/{request}").text
    assert "had ticked" not in page and checked_clips(page) == clips  # ignored ...
    assert sessions.take_draft(OWNER, request) is None  # ... and dropped

    assert not sessions.save_draft(OWNER, request, "release everything", [clips[0]])
    assert not sessions.save_draft(OWNER, "x" * 129, "narrow", [clips[0]])
    assert sessions.save_draft(OWNER, request, "narrow", [clips[0]])
    site.clock.advance(12 * 3600 + 1)  # kept as long as the absolute timeout, then dropped
    assert sessions.take_draft(OWNER, request) is None
    assert login(owner).status_code == 303  # the 12 hours ended the owner's session too
    page = owner.get(f"/requests/{request}").text
    assert sessions.save_draft(OWNER, request, "narrow", [clips[0]])
    r = owner.post(f"/requests/{request}/deny", data={"csrf": csrf_of(page), "reason": "no"})
    assert r.status_code == 303 and actions(site, request)[0][0] == "deny"
    page = owner.get(f"/requests/{request}").text
    assert "had ticked" not in page  # decided meanwhile: nothing to restore
    assert sessions.take_draft(OWNER, request) is None


def test_a_password_change_drops_the_user_s_drafts(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    assert site.web.sessions.save_draft(OWNER, request, "narrow", [clips[0]])
    new = "another long pass phrase"
    r = client.post("/account/password", data={"csrf": csrf_of(client.get("/account").text), "old": PASSWORD,
                                                "new": new, "new2": new})
    assert r.status_code == 303, r.text
    assert site.web.sessions.take_draft(OWNER, request) is None


# --- new session ids -------------------------------------------------------------------------------------------

def test_the_session_id_changes_at_narrow_as_at_approve_and_login(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    before_login = client.cookies.get(COOKIE)
    client.cookies.delete(COOKIE)
    login(client)
    at_login = client.cookies.get(COOKIE)
    assert at_login and at_login != before_login
    page = client.get(f"/requests/{request}").text
    r = client.post(f"/requests/{request}/decide", data=decide_form(page, action="narrow", password=PASSWORD,
                                                                     confirm="yes", clip=[clips[0]]))
    assert r.status_code == 303
    after = client.cookies.get(COOKIE)
    assert after and after != at_login
    replay = site.client("192.168.1.30")
    replay.cookies.set(COOKIE, at_login, domain="doorbell.test")
    assert replay.get("/").headers["location"] == "/login"
    assert client.get("/").status_code == 200
