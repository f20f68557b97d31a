"""A viewer in a real browser (Debian's Chromium, like Frigate's auth.spec.ts) at 1280x800 and at a 390x844
touch phone; and a clip opened in place among 10,000 events, closed again at the same scroll position."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.clock import FakeClock
from edge.config import Config
from edge.events.bus import Event
from edge.events.journal import EventJournal, HistoryBounds
from edge.events.journal_files import journal_path
from edge.footage.desk import FootageDesk
from edge.vision.gallery import Gallery

from .browser import Browser, launch, serious
from .helpers import OWNER, PASSWORD, VIEWER, VIEWER_PASSWORD
from .served import RANG, AuditTail, Served, serving

pytestmark = pytest.mark.slow

SID = "__Host-doorbell_sid"
OWNER_POSTS = ("decide", "deny", "export")  # a request's
OTHER_OWNER_POSTS = ("/faces/enrol", "/faces/forget", "/account/viewers", "/account/viewers/remove")

# Posted from inside the page with the viewer's own CSRF token (so only the role is wrong): each owner action as
# the browser sends a form (multipart, with a photo for the enrolment), then /logout the same way as the control.
POST_FROM_PAGE = """async ([paths, fields]) => {
  const csrf = document.querySelector('input[name=csrf]').value;
  const out = {};
  for (const path of [...paths, '/logout']) {
    const body = new FormData();
    body.append('csrf', csrf);
    for (const [k, v] of Object.entries(fields)) body.append(k, v);
    if (path === '/faces/enrol') body.append('photo', new Blob([new Uint8Array([255, 216, 255, 224])],
                                                               {type: 'image/jpeg'}), 'face.jpg');
    const r = await fetch(path, {method: 'POST', body, redirect: 'manual', credentials: 'same-origin'});
    out[path] = r.type === 'opaqueredirect' ? 'redirect' : r.status;
  }
  return out;
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch(["doorbell.test"])


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from serving(tmp_path, monkeypatch)


def sid_of(context: Any) -> str | None:
    return next((c["value"] for c in context.cookies() if c["name"] == SID), None)


@pytest.mark.parametrize("kind", ["desktop", "phone"])
def test_a_viewer_sees_events_and_audit_and_cannot_decide_enrol_or_export(browser: Browser, served: Served,
                                                                         kind: str) -> None:
    served.auth.create_owner(served.auth.new_setup_code(), OWNER, PASSWORD)
    served.auth.add_viewer(VIEWER, VIEWER_PASSWORD)
    context = browser.context(kind)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=served.origin)
    planted = "P" * 43  # a session id someone planted before the login (fixation): never the one used after it
    context.add_cookies([{"name": SID, "value": planted, "url": served.url("/"), "secure": True,
                          "httpOnly": True, "sameSite": "Strict"}])
    seen: list[str] = []
    context.on("request", lambda r: seen.append(r.url))
    page = context.new_page()
    blocked: list[str] = []  # what the CSP refused (an inline script or style would be), and script errors
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: blocked.append(str(e)))
    audit = AuditTail(served)

    # Log in; the password is pasted from the clipboard (password managers and paste work).
    page.goto(served.url("/login"))
    page.get_by_label("User name").fill(VIEWER)
    page.evaluate("text => navigator.clipboard.writeText(text)", VIEWER_PASSWORD)
    page.get_by_label("Password").click()
    page.keyboard.press("ControlOrMeta+V")
    assert page.get_by_label("Password").input_value() == VIEWER_PASSWORD
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(served.url("/"))
    first = sid_of(context)
    assert first and first != planted and len(first) >= 43
    assert [r["kind"] for r in audit.new()] == ["web_login"]

    # The menu has no Faces (nor anything else only the owner may do).
    links = page.get_by_role("navigation", name="Main").get_by_role("link").all_inner_texts()
    assert [t.strip() for t in links] == ["Now", "Events", "Requests", "Audit", "Account"], links
    response = page.goto(served.url("/faces"))
    assert response is not None and response.status == 403
    page.goto(served.url("/account"))
    assert page.get_by_role("button", name="Add viewer").count() == 0

    # The request card: read it all, decide nothing.
    page.goto(served.url(f"/requests/{served.request}"))
    assert "VERIFIED_WARRANT" in page.content()
    for name in ("Approve", "Narrow", "Deny", "Export"):
        assert page.get_by_role("button", name=name, exact=True).count() == 0, name
    assert page.locator('input[type="password"]').count() == 0
    assert page.get_by_text("Only the owner decides footage requests.").is_visible()
    assert serious(page) == [], "the request card as the viewer sees it"

    # The audit page and the events, with the clip played in place (and recorded, once).
    page.goto(served.url("/audit"))
    assert page.get_by_text("Verified", exact=False).first.is_visible()
    page.goto(served.url(served.day))
    page.get_by_text("Play the clip").click()
    video = page.locator(f'video[src="/clips/{served.ring_clip}"]')
    video.evaluate("v => v.play()")
    page.wait_for_function("v => v.currentTime > 1.0", arg=video.element_handle(), timeout=15000)
    video.evaluate("v => { v.currentTime = 0.2; }")  # seek back: more Range requests, no more records
    page.wait_for_function("v => !v.seeking", arg=video.element_handle(), timeout=15000)
    assert sum(u.endswith(f"/clips/{served.ring_clip}") for u in seen) >= 1
    records = [(r["kind"], r["data"]) for r in audit.new()]
    assert records == [("web_clip_viewed", {"user": VIEWER, "role": "viewer", "clip": served.ring_clip})], records

    # Every owner action posted from the viewer's own page with the viewer's own token: 403; /logout, posted
    # the same way, works (so the token and the post were good, and only the role was wrong).
    paths = [f"/requests/{served.request}/{p}" for p in OWNER_POSTS] + list(OTHER_OWNER_POSTS)
    fields = {"password": VIEWER_PASSWORD, "confirm": "yes", "action": "approve", "reason": "no",
              "name": "Anyone", "username": VIEWER, "consent_by": "Anyone", "consent_date": "2026-03-01",
              "consent": "yes"}
    statuses = page.evaluate(POST_FROM_PAGE, [paths, fields])
    assert statuses == {**{p: 403 for p in paths}, "/logout": "redirect"}, statuses
    assert [r["kind"] for r in audit.new()] == ["web_logout"]
    desk = FootageDesk(served.config, served.clock, emit=lambda e: None)
    assert desk.store.actions(served.request) == [] and desk.store.exports(served.request) == []
    assert sorted(u.name for u in served.auth.users()) == sorted([OWNER, VIEWER])
    assert Gallery(served.config.state_dir).people() == []
    page.goto(served.url("/"))
    assert page.url == served.url("/login")
    assert blocked == [] and any("/static/now.js" in u for u in seen)  # the one script ran, nothing refused
    context.close()


EVENTS = 10_000
BEFORE_RING = 100  # on the ring's day, before it: the ring is the 101st event of its page


def ten_thousand_events(config: Config, clock: FakeClock) -> None:
    """10,000 events over 20 days; on the ring's day 100 come before the ring (the ring is recorded next)."""
    journal = EventJournal(journal_path(config), clock=clock, history=HistoryBounds(keep_days=365, max_events=20_000))
    journal._db.execute("PRAGMA synchronous=OFF")  # seeding speed only; the page reads what a daemon writes
    day_start = RANG.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    earlier = EVENTS - BEFORE_RING
    for i in range(earlier):
        journal.record(Event("motion_start", "front_door", day_start - timedelta(days=20) + i * timedelta(
            days=20) / earlier, {}))
    gap = (RANG - day_start) / (BEFORE_RING + 1)
    for i in range(BEFORE_RING):
        journal.record(Event("motion_start", "front_door", day_start + (i + 1) * gap, {}))
    journal.close()


@pytest.fixture
def busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from serving(tmp_path, monkeypatch, seed=ten_thousand_events)


def test_a_clip_opens_in_place_and_closing_it_keeps_the_scroll_position_among_10000_events(
        browser: Browser, busy: Served) -> None:
    busy.auth.create_owner(busy.auth.new_setup_code(), OWNER, PASSWORD)
    for kind in ("desktop", "phone"):
        context = browser.context(kind)
        page = context.new_page()
        page.goto(busy.url("/login"))
        page.get_by_label("User name").fill(OWNER)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(busy.url("/"))
        page.goto(busy.url(busy.day))
        assert page.locator("ol.events > li").count() == BEFORE_RING + 1  # one day, not the 10,000
        summary = page.locator("details.clip summary")
        summary.scroll_into_view_if_needed()
        top = page.evaluate("window.scrollY")
        assert top > 1000, f"the clip is not far down the list ({top} px)"
        url = page.url
        summary.click()
        video = page.locator(f'video[src="/clips/{busy.ring_clip}"]')
        assert video.is_visible()
        below = page.evaluate("""([s, v]) => v.getBoundingClientRect().top - s.getBoundingClientRect().bottom""",
                              [summary.element_handle(), video.element_handle()])
        assert 0 <= below < 50, f"the clip opened {below} px away from its event"
        video.evaluate("v => v.play()")
        page.wait_for_function("v => v.currentTime > 1.0", arg=video.element_handle(), timeout=15000)
        summary.click()  # close it
        assert not video.is_visible() and page.url == url
        assert abs(page.evaluate("window.scrollY") - top) <= 1, (kind, top, page.evaluate("window.scrollY"))
        context.close()
