"""The session in a real browser (Debian's Chromium via Playwright): the timeout warning and "Stay logged in" with
JavaScript, and with JavaScript off a decision sent after the timeout that keeps its ticked clips through the
login. The page's clock (Playwright's fake timers) and the device's (FakeClock) are moved together."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.footage.desk import FootageDesk

from .browser import Browser, launch, serious
from .helpers import OWNER, PASSWORD
from .served import Served, serving, set_up_owner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch(["doorbell.test"])


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    yield from serving(tmp_path, monkeypatch)


@pytest.fixture
def served_1min(tmp_path: Path) -> Iterator[Served]:
    """The shortest idle timeout the config allows (1 minute): the warning shows 30 s before it."""
    s = Served(tmp_path, idle_timeout_min=1)
    try:
        yield s
    finally:
        s.server.stop()


def pause_soon(page: Any) -> None:
    """Stop the page's clock half a second from its now: from here on its time moves only by run_for."""
    from datetime import UTC, datetime

    page.clock.pause_at(datetime.fromtimestamp(page.evaluate("Date.now()") / 1000 + 0.5, UTC))


def until(page: Any, condition: str, timeout: float = 20.0) -> None:
    """Poll a condition from Python: Playwright's own waiting runs on the page's timers, which a paused clock
    stops, while the page's fetches still answer in real time."""
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(condition):
        assert time.monotonic() < deadline, f"not true after {timeout} s: {condition}"
        time.sleep(0.05)


def test_the_timeout_warning_shows_before_expiry_and_stay_logged_in_extends_the_session(
        browser: Browser, served_1min: Served) -> None:
    """Idle timeout 1 minute: the warning (an alertdialog, its button focused) shows 30 s before; "Stay logged
    in" (pressed with the keyboard) extends the session on the device without leaving the half-written form; left
    alone, the page then says the session ended. The page's clock and the device's clock move together."""
    s = served_1min
    context = browser.context("phone")
    page = context.new_page()
    page.clock.install()
    set_up_owner(page, s)
    page.goto(s.url(f"/requests/{s.request}"))
    page.locator(f'input[name="clip"][value="{s.clips[1]}"]').uncheck()  # a decision half written
    pause_soon(page)
    dialog = page.get_by_role("alertdialog")
    assert dialog.is_hidden()

    def wait(seconds: int) -> None:
        s.clock.advance(seconds)
        page.clock.run_for(seconds * 1000)

    checks: list[str] = []
    page.on("request", lambda r: checks.append(r.url) if r.url.endswith("/session") else None)
    wait(28)
    page.wait_for_timeout(500)  # real time: a check started now would have answered
    assert checks == [] and page.evaluate("document.getElementById('timeout').hidden")  # not yet
    wait(3)
    until(page, "!document.getElementById('timeout').hidden")
    assert dialog.is_visible() and checks == [s.url("/session")]  # the device was asked first
    assert "You will be logged out in" in dialog.inner_text() and "Stay logged in" in dialog.inner_text()
    assert page.evaluate("document.activeElement.textContent") == "Stay logged in"
    page.clock.resume()  # axe waits on timers of its own
    assert serious(page) == [], "the page with the warning"
    pause_soon(page)
    with page.expect_response(lambda r: r.url.endswith("/session/extend")) as extended:
        page.keyboard.press("Enter")
    assert extended.value.status == 204
    until(page, "document.getElementById('timeout').hidden")
    assert page.url == s.url(f"/requests/{s.request}")
    assert not page.locator(f'input[name="clip"][value="{s.clips[1]}"]').is_checked()  # the form is as it was

    s.clock.advance(40)  # 71 s after the page was drawn: without the extension the session would be over
    state = page.evaluate("fetch('/session').then(r => r.json())")
    assert state["live"] and 15 <= state["idle_left"] <= 20, state
    page.clock.run_for(40_000)
    s.clock.advance(25)  # nobody answers this time
    page.clock.run_for(30_000)
    until(page, "document.getElementById('timeout-text').textContent.startsWith('You have been logged out')")
    assert page.get_by_text("You have been logged out").is_visible()
    link = page.get_by_role("link", name="Log in again")
    assert link.get_attribute("href") == f"/login?next=%2Frequests%2F{s.request}"
    assert page.get_by_role("button", name="Stay logged in").is_hidden()
    assert page.evaluate("fetch('/session').then(r => r.status)") == 401
    context.close()


def test_with_javascript_off_a_narrow_sent_after_the_timeout_survives_the_login(browser: Browser,
                                                                              served: Served) -> None:
    context = browser.context("phone", java_script_enabled=False)
    page = context.new_page()
    set_up_owner(page, served)
    card = served.url(f"/requests/{served.request}")
    page.goto(card)
    assert "You are logged out after 30 minutes without activity" in page.content()
    page.locator(f'input[name="clip"][value="{served.clips[1]}"]').uncheck()
    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_label("I confirm").check()
    served.clock.advance(31 * 60)  # the owner was called away before pressing Narrow
    page.get_by_role("button", name="Narrow", exact=True).click()
    page.wait_for_url(served.url(f"/login?next=%2Frequests%2F{served.request}&draft=1"))
    assert page.get_by_text("nothing was decided").is_visible()
    desk = FootageDesk(served.config, served.clock, emit=lambda e: None)
    assert desk.store.actions(served.request) == []
    page.get_by_label("User name").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(card)
    assert page.get_by_role("status").filter(has_text="ticked again").is_visible()
    assert page.locator(f'input[name="clip"][value="{served.clips[0]}"]').is_checked()
    assert not page.locator(f'input[name="clip"][value="{served.clips[1]}"]').is_checked()
    assert page.get_by_label("Your password").input_value() == ""
    assert not page.get_by_label("I confirm").is_checked()
    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_label("I confirm").check()
    page.get_by_role("button", name="Narrow", exact=True).click()
    page.wait_for_url(card + "?done=narrowed")
    [(_, kind, _, data)] = desk.store.actions(served.request)
    assert kind == "approve" and data["clips"] == [served.clips[0]]
    context.close()
