"""A lost or damaged web.db (deleted, replaced by garbage, truncated, emptied) while the page runs and at its start:
no 500s, a clear log line, the damaged file kept aside, a fresh store that offers only setup with a NEW code, old
cookies sent to setup, and one `web_reset` in the audit log."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.cli import main
from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.web.app import COOKIE
from edge.web.auth import AuthStore
from edge.web.webdb import Reset, StoreReset

from .helpers import OWNER, PASSWORD, Site, csrf_of, make_config, setup_owner


def web_db(site: Site) -> Path:
    return site.config.state_dir / "web" / "web.db"


def deleted(path: Path) -> None:
    path.unlink()


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(40_000))  # a new file under the name (write_bytes truncates the same inode)


def truncated(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)  # an SD card that lost the second half


def emptied(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(0)


DAMAGE: dict[str, Callable[[Path], None]] = {"deleted": deleted, "garbage": garbage, "truncated": truncated,
                                              "emptied": emptied}
WHY = {"deleted": "missing", "garbage": "damaged", "truncated": "damaged", "emptied": "emptied"}


def resets(site: Site) -> list[dict[str, object]]:
    return [r["data"] for r in AuditLog(site.config.state_dir, site.clock).records() if r["kind"] == "web_reset"]


def kept_files(site: Site) -> list[Path]:
    return sorted(web_db(site).parent.glob("web.db.unreadable-*"))


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_while_running_gives_setup_not_500s_and_keeps_the_file(site: Site, damage: str,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    client = site.client()
    setup_owner(site, client)
    assert client.get("/account").status_code == 200
    DAMAGE[damage](web_db(site))
    damaged = web_db(site).read_bytes() if web_db(site).exists() else None

    statuses = [client.get(path).status_code for path in ("/", "/events", "/account", "/requests", "/session")]
    statuses += [site.client(f"192.168.1.{i}").get("/").status_code for i in range(100, 120)]  # a flood
    assert 500 not in statuses and set(statuses) == {303}, statuses
    r = client.get("/")
    assert (r.status_code, r.headers["location"]) == (303, "/setup")  # the old cookie: setup
    assert client.get("/setup").status_code == 200
    r = site.client("192.168.1.50").post("/login", data={"username": OWNER, "password": PASSWORD})
    assert r.headers["location"] == "/setup"  # no account exists: not even the login form is offered

    [reset] = resets(site)  # once, however many requests saw it
    assert reset["why"] == WHY[damage]
    kept = kept_files(site)
    if damage == "deleted":
        assert kept == [] and reset["kept"] is None
    else:
        assert [p.name for p in kept] == [reset["kept"]]
        assert kept[0].read_bytes() == damaged and kept[0].stat().st_mode & 0o777 == 0o600
        assert kept[0].name.startswith("web.db.unreadable-20260310T12")
    assert "the page's accounts and sessions are reset" in caplog.text
    assert "doorbell-edge web setup-code" in caplog.text
    fresh = web_db(site)
    assert fresh.stat().st_mode & 0o777 == 0o600
    with sqlite3.connect(fresh) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM users").fetchone() == (0,)
    assert not site.auth.has_owner()


def test_after_a_reset_setup_needs_a_new_code_from_the_device(site: Site) -> None:
    client = site.client()
    old_code = site.auth.new_setup_code()  # a code made before the loss (then the owner set up with another)
    setup_owner(site, client)
    web_db(site).write_bytes(b"not a database at all" * 100)
    assert client.get("/").headers["location"] == "/setup"
    page = client.get("/setup").text
    form = {"csrf": csrf_of(page), "username": "mallory", "password": PASSWORD, "password2": PASSWORD}
    for code in (old_code, ""):
        r = client.post("/setup", data={**form, "code": code})
        assert r.status_code == 400 and "not valid" in r.text and not site.auth.has_owner()
    r = client.post("/setup", data={**form, "username": OWNER, "code": site.auth.new_setup_code()})
    assert r.status_code == 303 and site.auth.has_owner()
    assert client.get("/").status_code == 200
    kinds = [r["kind"] for r in AuditLog(site.config.state_dir, site.clock).records()
             if r["kind"] in ("web_setup", "web_reset")]
    assert kinds == ["web_setup", "web_reset", "web_setup"]


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_found_at_start(tmp_path: Path, clock: FakeClock, damage: str) -> None:
    site = Site(make_config(tmp_path), clock)
    setup_owner(site, site.client())
    DAMAGE[damage](web_db(site))
    damaged = web_db(site).read_bytes() if web_db(site).exists() else None

    restarted = Site(make_config(tmp_path), clock)
    client = restarted.client()
    assert client.get("/").headers["location"] == "/setup"
    assert not restarted.auth.has_owner()
    [reset] = resets(restarted)
    kept = kept_files(restarted)
    if damage in ("garbage", "truncated"):
        assert reset["why"] == "damaged" and [p.name for p in kept] == [reset["kept"]]
        assert kept[0].read_bytes() == damaged
    else:  # deleted, or a 0-byte file (SQLite's empty database): nothing to keep, the audit log says it
        assert reset["why"] == "missing or empty at start" and kept == []
    again = Site(make_config(tmp_path), clock)  # another restart before anyone set up: no second record
    assert len(resets(again)) == 1
    setup_owner(again, again.client())
    assert again.client().get("/setup").status_code == 303


def test_the_first_start_records_no_reset(tmp_path: Path, clock: FakeClock) -> None:
    site = Site(make_config(tmp_path), clock)
    assert site.client().get("/").headers["location"] == "/setup"
    assert resets(site) == []


def test_a_stray_journal_is_kept_aside_with_a_deleted_file(site: Site) -> None:
    client = site.client()
    setup_owner(site, client)
    journal = web_db(site).with_name("web.db-journal")
    web_db(site).unlink()
    journal.write_bytes(b"a hot journal of the old file" * 50)
    assert client.get("/").headers["location"] == "/setup"
    assert not journal.exists()
    [aside] = list(web_db(site).parent.glob("web.db.unreadable-*-journal"))
    assert aside.read_bytes().startswith(b"a hot journal")
    assert not site.auth.has_owner()


def test_removing_web_db_and_running_setup_code_while_the_daemon_runs(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The documented password reset (delete web.db, run `web setup-code`) works without a restart: the page
    notices the new file, forgets that an owner existed, and takes the new code."""
    import re
    from datetime import UTC, datetime

    import yaml

    state = tmp_path / "state"
    site = Site(make_config(state), FakeClock(datetime.now(UTC)))  # the CLI's clock is the real one
    client = site.client()
    setup_owner(site, client)
    assert client.get("/").status_code == 200
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"state_dir": str(state)}, "mqtt": {"enabled": False},
                                   "web": {"enabled": True, "hostname": "doorbell.test",
                                           "argon2_memory_kib": 19456, "argon2_time_cost": 2}}))
    web_db(site).unlink()
    assert main(["web", "setup-code", "-c", str(cfg)]) == 0
    code = re.search(r"setup code: (\S+)", capsys.readouterr().out)
    assert code
    assert client.get("/").headers["location"] == "/setup"  # the old cookie
    page = client.get("/setup").text
    r = client.post("/setup", data={"csrf": csrf_of(page), "code": code.group(1), "username": OWNER,
                                    "password": "a new pass phrase here", "password2": "a new pass phrase here"})
    assert r.status_code == 303 and site.auth.has_owner()
    assert [r["why"] for r in resets(site)] == ["replaced"]


def test_many_threads_on_a_damaged_file_reset_it_once(tmp_path: Path, clock: FakeClock) -> None:
    auth = AuthStore(tmp_path, make_config(tmp_path).web, lambda: clock.now().timestamp())
    seen: list[Reset] = []
    auth.db.listen(seen.append)
    auth.path.write_bytes(os.urandom(20_000))
    outcomes: list[str] = []
    start = threading.Barrier(8)

    def hit() -> None:
        start.wait()
        try:
            outcomes.append(str(auth.has_owner()))
        except StoreReset:
            outcomes.append("reset")

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(outcomes) == 8 and set(outcomes) <= {"reset", "False"} and "reset" in outcomes
    assert [r.why for r in seen] == ["damaged"]
    assert len(list(tmp_path.glob("web/web.db.unreadable-*"))) == 1
    assert auth.has_owner() is False


def test_a_web_db_from_before_drafts_is_upgraded_and_its_sessions_still_work(tmp_path: Path,
                                                                            clock: FakeClock) -> None:
    site = Site(make_config(tmp_path), clock)
    client = site.client()
    setup_owner(site, client)
    path = web_db(site)
    with sqlite3.connect(path) as db:  # the first version's sessions table
        rows = db.execute("SELECT id_hash, user, csrf, created, last_seen, client FROM sessions").fetchall()
        db.execute("DROP TABLE sessions")
        db.execute("DROP TABLE drafts")
        db.execute("CREATE TABLE sessions (id_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name) "
                   "ON DELETE CASCADE, csrf TEXT NOT NULL, created REAL NOT NULL, last_seen REAL NOT NULL, "
                   "client TEXT NOT NULL)")
        db.executemany("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)", rows)
    db.close()
    restarted = Site(make_config(tmp_path), clock)
    again = restarted.client()
    again.cookies.set(COOKIE, client.cookies.get(COOKIE) or "", domain="doorbell.test")
    assert again.get("/").status_code == 200  # the old session, in the upgraded table
    clock.advance(31 * 60)
    assert again.get("/").headers["location"] == "/login"  # and it still times out
    assert resets(restarted) == [] and kept_files(restarted) == []
    with sqlite3.connect(path) as db:
        columns = {r[1] for r in db.execute("PRAGMA table_info(sessions)")}
    db.close()
    assert {"ended", "boot", "mono_created", "mono_seen"} <= columns
