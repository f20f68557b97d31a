"""The page served by the real uvicorn thread for the browser tests, over a seeded state dir (a warrant request
with clips in its window, a ring with its clip and snapshot), and the steps the browser tests share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.clock import FakeClock
from edge.config import Config
from edge.footage.audit import AuditLog
from edge.web.auth import AuthStore
from edge.web.server import WebServer

from .browser import free_port, serious
from .conftest import NOW
from .helpers import OWNER, PASSWORD
from .seed import add_clip, seed_request, seed_ring_with_clip, seeded_config

RANG = NOW - timedelta(minutes=30)  # the seeded ring (with its clip and snapshot)


class Served:
    """`seed(config, clock)` runs before the ring is recorded (events it writes come before the ring)."""

    def __init__(self, tmp: Path, seed: Callable[[Config, FakeClock], None] | None = None, **web: Any) -> None:
        self.port = free_port()
        self.config = seeded_config(tmp, listen="127.0.0.1", port=self.port, **web)
        self.clock = FakeClock(NOW)
        self.clips = [add_clip(self.config, self.clock, 2), add_clip(self.config, self.clock, 10)]
        self.request = seed_request(self.config, self.clock)
        if seed is not None:
            seed(self.config, self.clock)
        self.ring, self.ring_clip = seed_ring_with_clip(self.config, self.clock, RANG)
        self.day = f"/events?day={RANG.astimezone().date()}"
        ok, jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), 128, np.uint8))
        assert ok
        self.server = WebServer(self.config, self.clock, lambda: jpeg.tobytes(), lambda e: None)
        self.server.start()
        assert self.server.started.wait(20), "the page did not start"
        self.origin = f"https://doorbell.test:{self.port}"
        self.auth = AuthStore(self.config.state_dir, self.config.web, lambda: self.clock.now().timestamp())

    def url(self, path: str) -> str:
        return self.origin + path


def serving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            seed: Callable[[Config, FakeClock], None] | None = None) -> Iterator[Served]:
    from edge.footage import redact

    def shipped() -> redact.ExportFinders:  # what `doorbell-edge run` hands every export (edge/cli)
        from edge.vision import redaction_finders as finders

        return redact.ExportFinders(finders.find_faces(), finders.check_faces(), finders.NAMES)

    monkeypatch.setattr(redact, "_provider", shipped)
    s = Served(tmp_path, seed)
    try:
        yield s
    finally:
        s.server.stop()


def set_up_owner(page: Any, served: Served, check_axe: bool = False) -> None:
    page.goto(served.url("/requests"))
    assert page.url == served.url("/setup")
    if check_axe:
        assert serious(page) == [], "the setup page"
    page.get_by_label("Setup code").fill(served.auth.new_setup_code())
    page.get_by_label("Your user name").fill(OWNER)
    page.get_by_label("Password (at least").fill(PASSWORD)
    page.get_by_label("The same password again").fill(PASSWORD)
    page.get_by_role("button", name="Create the owner account").click()
    page.wait_for_url(served.url("/"))


def no_sideways_scroll(page: Any) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"))


class AuditTail:
    """The audit log's records since the last look: what each step of the page wrote."""

    def __init__(self, served: Served) -> None:
        self.log = AuditLog(served.config.state_dir, served.clock)
        self.seen = len(self.log.records())

    def new(self) -> list[dict[str, Any]]:
        records = self.log.records()
        fresh, self.seen = records[self.seen:], len(records)
        return fresh
