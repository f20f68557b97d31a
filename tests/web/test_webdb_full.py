"""A full disk under web.db is not a damaged web.db: the page answers 503 with Retry-After while nothing can be
written, moves nothing aside, resets no account, and carries on with the same session once there is room.

Mounts a real tmpfs (root); skips without root, except under CI=true where it fails instead."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.footage.audit import AuditLog

from .conftest import NOW
from .helpers import Site, make_config, setup_owner


@pytest.fixture
def web_on_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """<state>/web on a real 1 MB tmpfs; returns the state dir."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this test mounts a tmpfs and must run as root in CI")
        pytest.skip("mounting a tmpfs needs root")
    state = tmp_path / "state"
    web = state / "web"
    web.mkdir(parents=True, mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(web)], check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(web)], check=True)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size) == size:
                    pass
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


def test_a_full_disk_gives_503_keeps_web_db_and_the_session_carries_on(web_on_tmpfs: Path) -> None:
    clock = FakeClock(NOW)
    site = Site(make_config(web_on_tmpfs), clock)
    client = site.client()
    setup_owner(site, client)
    assert client.get("/events").status_code == 200
    web = web_on_tmpfs / "web"
    before = sorted(p.name for p in web.iterdir())

    filler = fill(web)
    other = site.client("192.168.1.30")
    answers = [other.get("/login").status_code]
    for _ in range(3):  # a login needs a write (a new session, or a counted failure): none can be made
        other.get("/login")
        csrf = other.cookies.get("__Host-doorbell_pre") or ""
        r = other.post("/login", data={"csrf": csrf, "username": "owner", "password": "wrong password!"})
        answers.append(r.status_code)
    assert answers[1:] == [503, 503, 503], answers
    assert r.headers["retry-after"] == "5"
    assert sorted(p.name for p in web.iterdir()) == sorted([*before, "filler"])  # nothing moved aside
    assert "web_reset" not in [r["kind"] for r in AuditLog(web_on_tmpfs, clock).records()]

    filler.unlink()
    assert client.get("/events").status_code == 200  # the same session, the same owner: nothing was lost
    assert site.auth.has_owner()
