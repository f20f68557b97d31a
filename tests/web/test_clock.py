"""The page under a wall clock that steps (a Pi boots with a wrong clock and NTP sets it later): a step back never
lengthens a session, a lockout or a setup code; a step forward ends sessions and breaks nothing."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.footage.audit import AuditLog

from .helpers import OWNER, PASSWORD, Site, csrf_of, login, make_config, setup_owner
from .test_requests import decide_form, make

PAGES = ("/", "/events", "/requests", "/audit", "/account")
IDLE_MIN = 30


def test_a_step_back_ends_sessions_instead_of_lengthening_them(site: Site, clock: FakeClock,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    client = site.client()
    setup_owner(site, client)
    clock.step(-30)  # a small correction (within a minute) is not a step worth ending a session for
    assert client.get("/").status_code == 200
    clock.advance(IDLE_MIN * 60 - 1)
    assert client.get("/").status_code == 200
    clock.step(-2 * 3600)  # the session now looks 2 hours younger than it is: it ends instead
    assert client.get("/").headers["location"] == "/login"
    assert "ahead of the clock ended (the clock stepped back)" in caplog.text
    assert site.web.sessions.sessions_of(OWNER) == 0
    clock.advance(2 * 3600 + 60)  # back past the time it was stamped: it does not come back
    assert client.get("/").headers["location"] == "/login"
    assert login(client).status_code == 303 and client.get("/").status_code == 200


def test_a_step_back_nobody_saw_does_not_lengthen_a_session_either(site: Site, clock: FakeClock) -> None:
    """Idle 29 minutes, the clock steps back an hour while no request comes, then an hour passes: by the wall
    clock the session was idle 29 minutes, stamped nothing ahead. The monotonic clock (same boot) says 89."""
    client = site.client()
    setup_owner(site, client)
    clock.advance(29 * 60)
    clock.step(-3600)
    clock.advance(60 * 60)  # 60 real minutes later (29 + 60 idle in all)
    assert client.get("/").headers["location"] == "/login"


def test_a_draft_is_not_left_by_a_session_stamped_ahead_of_the_clock(tmp_path: Path) -> None:
    site, request, clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    site.clock.step(-3600)
    r = client.post(f"/requests/{request}/decide", data=decide_form(page, action="narrow", clip=[clips[0]]))
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert site.web.sessions.take_draft(OWNER, request) is None
    assert site.web.sessions.save_draft(OWNER, request, "narrow", [clips[0]])
    site.clock.step(-3600)  # a draft stamped an hour ahead is not restored
    assert site.web.sessions.take_draft(OWNER, request) is None


def test_a_step_back_does_not_lengthen_a_lockout(tmp_path: Path, clock: FakeClock) -> None:
    site = Site(make_config(tmp_path), clock)
    setup_owner(site, site.client("192.168.1.2"))
    attacker = site.client("192.168.1.66")
    assert [login(attacker, OWNER, f"wrong password {i}").status_code for i in range(10)][-1] == 429
    clock.step(-6 * 3600)  # unchecked: the failures would be 6 hours "in the future" and lock for 6 hours more
    r = login(attacker)
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 300
    assert 0 < site.auth.retry_after("192.168.1.66") <= 300
    clock.advance(301)
    assert login(attacker).status_code == 303


def test_a_setup_code_made_before_a_step_back_is_not_valid(site: Site, clock: FakeClock) -> None:
    client = site.client()
    form = {"csrf": csrf_of(client.get("/setup").text), "username": OWNER, "password": PASSWORD,
            "password2": PASSWORD}
    code = site.auth.new_setup_code()
    clock.step(-3 * 3600)  # unchecked: the code would live 3 h 30 min instead of 30 minutes
    r = client.post("/setup", data={**form, "code": code})
    assert r.status_code == 400 and "made before the device" in r.text and not site.auth.has_owner()
    code = site.auth.new_setup_code()
    clock.step(-30)  # a small correction keeps the code
    r = client.post("/setup", data={**form, "code": code})
    assert r.status_code == 303 and site.auth.has_owner()


@pytest.mark.parametrize("to", [datetime(2036, 3, 10, 12, tzinfo=UTC), datetime(1970, 1, 1, 0, 1, tzinfo=UTC)])
def test_a_big_step_ends_sessions_and_every_page_still_answers(tmp_path: Path, to: datetime) -> None:
    """Forward ten years (the session times out) or back to 1970 (a Pi without a real-time clock at boot): the
    session ends, nothing answers 500, login works at the new time, the audit log still verifies."""
    site, request, _clips = make(tmp_path)
    client = site.client()
    setup_owner(site, client)
    attacker = site.client("192.168.1.66")
    for i in range(3):
        login(attacker, OWNER, f"wrong password {i}")
    code = site.auth.new_setup_code()
    site.clock.step((to - site.clock.now()).total_seconds())
    for path in (*PAGES, f"/requests/{request}", "/session"):
        assert client.get(path).status_code in (303, 401), path
    assert login(attacker).status_code == 303
    assert login(client).status_code == 303
    for path in (*PAGES, f"/requests/{request}"):
        assert client.get(path).status_code == 200, path
    assert client.get("/session").json()["idle_left"] == IDLE_MIN * 60
    assert site.auth.new_setup_code() != code
    assert AuditLog(tmp_path, site.clock).verify().ok
