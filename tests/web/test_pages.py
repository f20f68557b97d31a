"""The Now, Events, Faces and Audit pages over TestClient: one day of the event journal at a time (10,000 seeded
events), the newest frame never cached, the last ring and who, forgetting a face needs a confirmation."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from edge.clock import FakeClock
from edge.events.bus import Event
from edge.events.journal import EventJournal, HistoryBounds
from edge.events.journal_files import journal_path
from edge.vision.consent import DEFAULT_PURPOSE, Consent
from edge.vision.gallery import Gallery

from .conftest import NOW
from .helpers import BASE, Site, csrf_of, make_config, setup_owner
from .seed import WIN_START, add_clip, seed_request, seeded_config

PER_DAY = 500
DAYS = 20


def seed_events(site: Site) -> None:
    journal = EventJournal(journal_path(site.config), clock=site.clock,
                           history=HistoryBounds(keep_days=365, max_events=100_000))
    journal._db.execute("PRAGMA synchronous=OFF")  # seeding speed only; the page reads what a daemon writes
    start = NOW - timedelta(days=DAYS)
    for i in range(PER_DAY * DAYS):
        ts = start + timedelta(seconds=i * 86400 / PER_DAY + 1)
        journal.record(Event("motion_start", "front_door", ts, {}))
    journal.record(Event("ring", "front_door", NOW - timedelta(minutes=5), {"source": "button"}))
    journal.record(Event("face", "front_door", NOW - timedelta(minutes=4), {"result": "known", "person": "Ann",
                                                                            "confidence": 0.9}))
    journal.close()


def test_events_load_one_day_at_a_time_from_10000(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    site = Site(make_config(tmp_path), clock)
    seed_events(site)
    client = site.client()
    setup_owner(site, client)
    day = (NOW - timedelta(days=3)).date()
    seen: list[int] = []
    url = f"/events?day={day}"
    pages = 0
    while url:
        r = client.get(url)
        assert r.status_code == 200
        times = re.findall(r'<time datetime="([^"]+)"', r.text)
        assert 0 < len(times) <= 200
        assert all(t.startswith(str(day)) for t in times), "an event of another day is on the page"
        seen.extend(int(s) for s in re.findall(r'data-seq="(\d+)"', r.text))
        more = re.search(r'href="(/events\?day=[^"]+&amp;after=\d+)"', r.text)
        url = more.group(1).replace("&amp;", "&") if more else ""
        pages += 1
    assert pages == 3 and len(seen) == PER_DAY == len(set(seen)) and seen == sorted(seen)
    assert "Previous day" in r.text and f"day={day - timedelta(days=1)}" in r.text
    assert "No events on this day" in client.get(f"/events?day={(NOW + timedelta(days=2)).date()}").text
    assert client.get("/events?day=yesterday").status_code == 400


def test_now_shows_the_frame_uncached_and_the_last_ring_and_who(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    frame = b"\xff\xd8 a jpeg \xff\xd9"
    site = Site(make_config(tmp_path), clock, frame=frame)
    seed_events(site)
    client = site.client()
    setup_owner(site, client)
    page = client.get("/").text
    assert 'src="/now.jpg"' in page and 'src="/static/now.js"' in page and "Ann" in page
    rang = NOW - timedelta(minutes=5)
    assert f'<time datetime="{rang.astimezone().isoformat(timespec="seconds")}">{rang.astimezone():%Y-%m-%d %H:%M:%S}' \
        in page
    r = client.get("/now.jpg")
    assert r.content == frame and r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "image/jpeg"
    assert not list(tmp_path.rglob("*.jpg")), "watching the page stored a picture"
    blank = Site(make_config(tmp_path / "other"), clock)
    c2 = blank.client()
    setup_owner(blank, c2)
    assert c2.get("/now.jpg").status_code == 404 and "No picture yet" in c2.get("/").text


def enrol(state: Path, name: str) -> None:
    chip = np.full((150, 150, 3), 100, np.uint8)
    consent = Consent(name, date(2026, 3, 1), DEFAULT_PURPOSE, date(2027, 3, 1))
    Gallery(state).enroll(name, [chip], np.ones((1, 128), np.float32), consent, embedder="test.tflite", now=NOW)


def test_faces_show_the_consent_record_and_forget_needs_confirmation(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    site = Site(make_config(tmp_path), clock)
    client = site.client()
    setup_owner(site, client)
    enrol(tmp_path, "Ann")
    page = client.get("/faces").text
    assert "Ann" in page and "<dt>Given on</dt><dd>2026-03-01</dd>" in page
    r = client.post("/faces/forget", data={"csrf": csrf_of(page), "name": "Ann"})
    assert r.status_code == 400 and [p.name for p in Gallery(tmp_path).people()] == ["Ann"]
    r = client.post("/faces/forget", data={"csrf": csrf_of(page), "name": "Ann", "confirm": "yes"})
    assert r.status_code == 303 and Gallery(tmp_path).people() == []
    assert "Nobody is enrolled" in client.get("/faces").text


def test_the_audit_page_says_where_the_chain_breaks(tmp_path: Path) -> None:
    site = Site(make_config(tmp_path), FakeClock(NOW))
    client = site.client()
    setup_owner(site, client)
    client.get("/audit")
    log = tmp_path / "audit" / "footage.jsonl"
    lines = log.read_bytes().splitlines()
    assert len(lines) == 1
    lines[0] = lines[0].replace(b'"alice"', b'"mallory"')
    log.write_bytes(b"\n".join(lines) + b"\n")
    page = client.get("/audit").text
    assert "Not verified" in page and "up to entry 0" in page


@pytest.mark.parametrize(("day", "status"), [("0001-01-01", 400), ("9999-12-31", 400),
                                              ("0001-01-02", 200), ("9999-12-30", 200)])
def test_a_day_at_the_ends_of_the_calendar_is_a_clear_400(site: Site, day: str, status: int) -> None:
    """Found by trying the page (helper webtest): the first and last representable days are dates, but a day's
    bounds step outside datetime's range (ValueError "year 0 is out of range", OverflowError), so the page
    answered 500 without its security headers. Now 400 on the page's error page; the day next to each end works."""
    client = TestClient(site.app, base_url=BASE, client=("192.168.1.20", 40000), follow_redirects=False,
                        raise_server_exceptions=False)
    setup_owner(site, client)
    r = client.get(f"/events?day={day}")
    assert r.status_code == status, r.status_code
    assert "Content-Security-Policy" in r.headers
    if status == 400:
        assert f"{day} is outside the days the device can show" in r.text and 'href="/events"' in r.text
    else:
        assert "No events on this day." in r.text
        assert ("Previous day" in r.text) == (day == "9999-12-30") and ("Next day" in r.text) == (day == "0001-01-02")


def test_the_events_page_offers_no_day_after_today(tmp_path: Path) -> None:
    from edge.web.backend import today

    site = Site(make_config(tmp_path), FakeClock(NOW))
    client = site.client()
    setup_owner(site, client)
    now = today()
    assert "Next day" not in client.get("/events").text  # today: nothing recorded yet tomorrow
    assert "Next day" not in client.get(f"/events?day={now + timedelta(days=3)}").text
    yesterday = client.get(f"/events?day={now - timedelta(days=1)}").text
    assert f'href="/events?day={now}">Next day' in yesterday


@pytest.fixture
def paris() -> Iterator[None]:
    """The device's local zone is Europe/Paris (CET, UTC+1 in March) for this test."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_times_are_local_in_words_and_agencies_by_name(tmp_path: Path, paris: None) -> None:
    """Found by trying the page (helper webtest): raw ISO UTC times everywhere, and the events of a local day
    listed with their UTC time of day; the request list named the agency by its id."""
    clock = FakeClock(NOW)
    cfg = seeded_config(tmp_path)
    add_clip(cfg, clock, 2)
    request = seed_request(cfg, clock)
    site = Site(cfg, clock)
    journal = EventJournal(journal_path(cfg), clock=clock, history=HistoryBounds(keep_days=365, max_events=100))
    journal.record(Event("ring", "front_door", NOW - timedelta(minutes=5), {"source": "button"}))
    journal.close()
    client = site.client()
    setup_owner(site, client)
    ring = "2026-03-10 12:55:00 CET (11:55:00 UTC)"
    assert ring in client.get("/").text
    events = client.get(f"/events?day={NOW.date()}").text
    assert '<time datetime="2026-03-10T12:55:00+01:00">12:55:00</time>' in events
    listing = client.get("/requests").text
    assert "Metro Police · warrant" in listing and "metro-pd ·" not in listing
    assert "received <time" in listing and "CET (" in listing
    card = client.get(f"/requests/{request}").text
    start = WIN_START + timedelta(minutes=2)
    assert f"front_door {start.astimezone():%Y-%m-%d %H:%M:%S} CET ({start:%H:%M:%S} UTC) to " in card
    audit = client.get("/audit").text
    assert "2026-03-10 13:00:00 CET (12:00:00 UTC)" in audit and "T12:00:00.000Z <" not in audit
