"""Clips watched on the page are audited: one web_clip_viewed record per session and clip, not one per Range
request; a second session makes a second record; no record, no clip; the memory of what was recorded is
bounded and forgetting only ever costs a second record."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.web.auth import User
from edge.web.sessions import Session
from edge.web.watched import Watched

from .conftest import NOW
from .helpers import OWNER, VIEWER, VIEWER_PASSWORD, Site, login, make_config, setup_owner
from .seed import seed_ring_with_clip


def viewed(site: Site) -> list[dict[str, Any]]:
    return [r["data"] for r in AuditLog(site.config.state_dir, site.clock).records() if r["kind"] == "web_clip_viewed"]


def site_with_clip(tmp_path: Path) -> tuple[Site, str]:
    clock = FakeClock(NOW)
    site = Site(make_config(tmp_path), clock)
    _event, clip_id = seed_ring_with_clip(site.config, clock, NOW - timedelta(minutes=30))
    return site, clip_id


def test_one_record_per_session_and_clip_not_per_range_request(tmp_path: Path) -> None:
    site, clip_id = site_with_clip(tmp_path)
    owner = site.client()
    setup_owner(site, owner)
    assert owner.get("/clips/no-such-clip").status_code == 404 and viewed(site) == []  # nothing shown, nothing
    for span in ("bytes=0-99", "bytes=100-199", "bytes=200-"):
        assert owner.get(f"/clips/{clip_id}", headers={"Range": span}).status_code == 206
    assert viewed(site) == [{"user": OWNER, "role": "owner", "clip": clip_id}]

    again = site.client("192.168.1.21")  # the owner on another device: a second session
    assert login(again).status_code == 303
    assert again.get(f"/clips/{clip_id}", headers={"Range": "bytes=0-99"}).status_code == 206
    assert again.get(f"/clips/{clip_id}").status_code == 200
    site.auth.add_viewer(VIEWER, VIEWER_PASSWORD)
    viewer = site.client("192.168.1.22")
    assert login(viewer, VIEWER, VIEWER_PASSWORD).status_code == 303
    assert viewer.get(f"/clips/{clip_id}").status_code == 200
    assert viewed(site) == [{"user": OWNER, "role": "owner", "clip": clip_id}] * 2 + [
        {"user": VIEWER, "role": "viewer", "clip": clip_id}]
    assert AuditLog(site.config.state_dir, site.clock).verify().ok
    assert "web_clip_viewed" in owner.get("/audit").text


def test_no_record_no_clip_when_the_audit_log_cannot_be_written(tmp_path: Path) -> None:
    site, clip_id = site_with_clip(tmp_path)
    client = site.client()
    setup_owner(site, client)
    log = AuditLog(site.config.state_dir, site.clock).path
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"seq": 99, "torn')  # a power cut in the middle of an append
    r = client.get(f"/clips/{clip_id}", headers={"Range": "bytes=0-99"})
    assert r.status_code == 503 and "audit log" in r.text and b"ftyp" not in r.content
    log.write_bytes(whole)  # repaired: the clip is shown, and recorded then
    assert client.get(f"/clips/{clip_id}", headers={"Range": "bytes=0-99"}).status_code == 206
    assert [d["clip"] for d in viewed(site)] == [clip_id]


def session(sid: str, name: str = OWNER) -> Session:
    return Session(User(name, "owner"), "csrf", sid)


def test_the_memory_is_bounded_and_forgetting_costs_only_a_second_record() -> None:
    records: list[dict[str, Any]] = []
    watched = Watched(lambda kind, **data: records.append({"kind": kind, **data}), limit=3)
    for clip in ("c1", "c2", "c3", "c4", "c5"):
        watched.clip(session("s1"), clip)
        watched.clip(session("s1"), clip)
    assert len(watched) == 3 and [r["clip"] for r in records] == ["c1", "c2", "c3", "c4", "c5"]
    watched.clip(session("s1"), "c5")  # still remembered
    watched.clip(session("s1"), "c1")  # forgotten (the oldest): recorded again, never skipped
    assert [r["clip"] for r in records] == ["c1", "c2", "c3", "c4", "c5", "c1"] and len(watched) == 3


def test_the_player_s_first_requests_together_make_one_record() -> None:
    records: list[str] = []
    gate = threading.Barrier(8)

    def slow_record(kind: str, **data: Any) -> None:
        records.append(data["clip"])
        threading.Event().wait(0.05)  # an fsync on an SD card: the other requests arrive meanwhile

    watched = Watched(slow_record)

    def view() -> None:
        gate.wait()
        watched.clip(session("s1"), "c1")

    threads = [threading.Thread(target=view) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert records == ["c1"]


def test_a_failed_record_is_not_remembered() -> None:
    from edge.errors import StorageError

    calls: list[str] = []

    def failing(kind: str, **data: Any) -> None:
        calls.append(data["clip"])
        if len(calls) == 1:
            raise StorageError("disk full")

    watched = Watched(failing)
    with pytest.raises(StorageError):
        watched.clip(session("s1"), "c1")
    watched.clip(session("s1"), "c1")
    assert calls == ["c1", "c1"] and len(watched) == 1
