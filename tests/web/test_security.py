"""The page's security core over Starlette's TestClient (https://doorbell.test, so Secure cookies apply): setup
gated by a one-time code, argon2id, sessions, cookie flags, CSRF, throttling that survives a restart, audit."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.routing import Route

from edge.cli import main
from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.web.app import COOKIE

from .helpers import (
    OWNER,
    PASSWORD,
    VIEWER,
    VIEWER_PASSWORD,
    Site,
    csrf_of,
    login,
    make_config,
    setup_owner,
)


def audit_kinds(site: Site) -> list[str]:
    return [r["kind"] for r in AuditLog(site.config.state_dir, site.clock).records()]


def get_routes(site: Site) -> list[str]:
    paths = []
    for route in site.app.routes:
        if isinstance(route, Route) and "GET" in (route.methods or ()):
            paths.append(route.path.replace("{request_id}", "R-1"))
    return paths


# --- fresh state and setup ------------------------------------------------------------------------------------

def test_fresh_state_every_route_but_setup_static_health_redirects_to_setup(site: Site) -> None:
    client = site.client()
    checked = 0
    for path in get_routes(site):
        r = client.get(path)
        if path in ("/setup", "/healthz", "/ca.crt"):
            assert r.status_code == 200, path
        else:
            assert (r.status_code, r.headers["location"]) == (303, "/setup"), path
            checked += 1
    assert checked >= 8
    for path in ("/login", "/logout", "/account/password", "/faces/forget", "/requests/R-1/decide"):
        assert client.post(path, data={}).headers.get("location") == "/setup", path
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/healthz").text == "ok"


def test_setup_needs_the_code_uses_it_once_and_the_code_expires(site: Site, clock: FakeClock) -> None:
    client = site.client()
    page = client.get("/setup")
    form = {"csrf": csrf_of(page.text), "username": OWNER, "password": PASSWORD, "password2": PASSWORD}
    assert client.post("/setup", data=form).status_code == 400  # no code
    assert client.post("/setup", data={**form, "code": "AAAA-BBBB"}).status_code == 400
    assert not site.auth.has_owner()

    code = site.auth.new_setup_code()
    clock.advance(31 * 60)  # default TTL 30 min
    r = client.post("/setup", data={**form, "code": code})
    assert r.status_code == 400 and "expired" in r.text and not site.auth.has_owner()

    code = site.auth.new_setup_code()
    r = client.post("/setup", data={**form, "code": code.lower().replace("-", " ")})  # typed loosely
    assert r.status_code == 303 and site.auth.has_owner()
    other = site.client("192.168.1.30")
    page = other.get("/setup")
    assert page.status_code == 303  # an owner exists: setup is closed
    assert site.auth.users()[0].name == OWNER and site.auth.users()[0].role == "owner"
    with pytest.raises(Exception, match="already has an owner"):
        site.auth.create_owner(code, "mallory", PASSWORD)
    assert "web_setup" in audit_kinds(site)


def test_setup_code_is_random_120_bits_and_never_shown_or_logged(site: Site, caplog: pytest.LogCaptureFixture
                                                                  ) -> None:
    caplog.set_level(logging.INFO)
    codes = {site.auth.new_setup_code() for _ in range(20)}
    assert len(codes) == 20
    code = site.auth.new_setup_code()
    letters = code.replace("-", "")
    assert len(letters) == 24 and re.fullmatch(r"[A-Z2-7]+", letters)  # 24 base32 letters = 120 bits
    client = site.client()
    bodies = [client.get("/setup").text]
    page = client.get("/setup")
    r = client.post("/setup", data={"csrf": csrf_of(page.text), "code": code, "username": OWNER,
                                    "password": PASSWORD, "password2": PASSWORD})
    bodies += [r.text, str(r.headers)]
    bodies += [client.get(p).text for p in ("/", "/audit", "/account")]
    assert all(letters not in b and code not in b for b in bodies)
    assert letters not in caplog.text and code not in caplog.text
    log_text = (site.config.state_dir / "audit" / "footage.jsonl").read_text()
    assert letters not in log_text and code not in log_text
    assert letters not in (site.config.state_dir / "web" / "web.db").read_bytes().decode("latin-1")


def test_cli_setup_code_works_once_and_shows_the_fingerprint_the_page_shows(tmp_path: Path, clock: FakeClock,
                                                                             capsys: pytest.CaptureFixture[str]
                                                                             ) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"storage": {"state_dir": str(state)}, "mqtt": {"enabled": False},
                                   "web": {"enabled": True, "hostname": "doorbell.test",
                                           "argon2_memory_kib": 19456, "argon2_time_cost": 2}}))
    assert main(["web", "setup-code", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    code = re.search(r"setup code: (\S+)", out)
    printed_fp = re.search(r"fingerprint \(SHA-256\): (\S+)", out)
    assert code and printed_fp
    site = Site(make_config(state), FakeClock(datetime.now(UTC)))  # the CLI's clock is the real one
    client = site.client()
    page = client.get("/setup")
    assert printed_fp.group(1) in page.text.replace("<wbr>", "")  # <wbr>: where a phone may wrap, not text
    r = client.post("/setup", data={"csrf": csrf_of(page.text), "code": code.group(1), "username": OWNER,
                                    "password": PASSWORD, "password2": PASSWORD})
    assert r.status_code == 303
    assert main(["web", "setup-code", "-c", str(cfg)]) != 0  # an owner exists: no more codes


def test_password_length_and_unicode_pass_phrase(site: Site) -> None:
    client = site.client()
    code = site.auth.new_setup_code()
    page = client.get("/setup")
    short = "elevenchars"
    assert len(short) == 11
    r = client.post("/setup", data={"csrf": csrf_of(page.text), "code": code, "username": OWNER,
                                    "password": short, "password2": short})
    assert r.status_code == 400 and "at least 12" in r.text
    phrase = "Grüße aus Köln, 東京 und Zürich — ein langer Satz mit Leerzeichen!!"[:64]
    assert len(phrase) == 64 and " " in phrase
    code = site.auth.new_setup_code()  # the failed attempt spent nothing (the code was never used)
    r = client.post("/setup", data={"csrf": csrf_of(page.text), "code": code, "username": OWNER,
                                    "password": phrase, "password2": phrase})
    assert r.status_code == 303
    fresh = site.client("192.168.1.40")
    assert login(fresh, OWNER, phrase).status_code == 303
    page = site.client("192.168.1.41").get("/login").text
    assert 'autocomplete="username"' in page and 'autocomplete="current-password"' in page


def test_hashes_are_argon2id_and_a_cheaper_one_is_upgraded_at_login(tmp_path: Path, clock: FakeClock) -> None:
    site = Site(make_config(tmp_path), clock)
    setup_owner(site, site.client())
    stored = site.auth.stored_hash(OWNER)
    assert stored is not None and stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    stronger = Site(make_config(tmp_path, argon2_memory_kib=32768, argon2_time_cost=3), clock)
    assert login(stronger.client()).status_code == 303
    upgraded = stronger.auth.stored_hash(OWNER)
    assert upgraded is not None and upgraded.startswith("$argon2id$v=19$m=32768,t=3,p=1$")
    assert login(stronger.client("192.168.1.50")).status_code == 303  # the upgraded hash still verifies


# --- sessions and cookies -------------------------------------------------------------------------------------

def test_session_cookie_flags_and_a_new_id_at_login(site: Site) -> None:
    client = site.client()
    setup_owner(site, client)
    first = client.cookies.get(COOKIE)
    client.cookies.clear()
    r = login(client)
    assert r.status_code == 303
    header = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith(COOKIE + "="))
    parts = {p.strip().split("=")[0].lower() for p in header.split(";")}
    assert {"secure", "httponly", "samesite", "path"} <= parts and "domain" not in parts
    assert "samesite=strict" in header.lower() and "path=/" in header.lower()
    assert client.cookies.get(COOKIE) and client.cookies.get(COOKIE) != first
    assert len(client.cookies.get(COOKIE) or "") >= 43  # 32 random bytes


def test_logout_and_a_password_change_elsewhere_revoke_the_cookie(site: Site) -> None:
    a = site.client()
    setup_owner(site, a)
    old = a.cookies.get(COOKIE)
    a.post("/logout", data={"csrf": csrf_of(a.get("/").text)})
    replay = site.client()
    replay.cookies.set(COOKIE, old or "", domain="doorbell.test")
    assert replay.get("/").headers["location"] == "/login"
    assert "web_logout" in audit_kinds(site)

    phone, laptop = site.client("192.168.1.21"), site.client("192.168.1.22")
    assert login(phone).status_code == 303 and login(laptop).status_code == 303
    laptop_cookie = laptop.cookies.get(COOKIE)
    new = "a brand new pass phrase"
    r = phone.post("/account/password", data={"csrf": csrf_of(phone.get("/account").text), "old": PASSWORD,
                                              "new": new, "new2": new})
    assert r.status_code == 303 and r.headers["location"] == "/login"
    replay = site.client()
    replay.cookies.set(COOKIE, laptop_cookie or "", domain="doorbell.test")
    assert replay.get("/events").headers["location"] == "/login?next=%2Fevents"
    assert site.web.sessions.sessions_of(OWNER) == 0
    assert login(site.client("192.168.1.23"), OWNER, new).status_code == 303
    assert "web_password" in audit_kinds(site)


def test_idle_and_absolute_timeouts(site: Site, clock: FakeClock) -> None:
    client = site.client()
    setup_owner(site, client)
    clock.advance(29 * 60)
    assert client.get("/").status_code == 200
    clock.advance(31 * 60)
    assert client.get("/").headers["location"] == "/login"  # idle 31 min
    login(client)
    for _ in range(40):  # busy every 20 minutes, but 12 h after login it ends anyway
        clock.advance(20 * 60)
        if client.get("/").status_code != 200:
            break
    assert client.get("/").headers["location"] == "/login"
    assert 11.9 * 3600 <= 20 * 60 * (_ + 1) <= 12.4 * 3600


# --- CSRF and GETs --------------------------------------------------------------------------------------------

def test_posts_without_the_token_or_from_another_origin_get_403_and_change_nothing(site: Site) -> None:
    client = site.client()
    setup_owner(site, client)
    token = csrf_of(client.get("/account").text)
    form = {"username": VIEWER, "password": VIEWER_PASSWORD}
    before = audit_kinds(site)
    assert client.post("/account/viewers", data=form).status_code == 403
    assert client.post("/account/viewers", data={**form, "csrf": "x" * 43}).status_code == 403
    assert client.post("/account/viewers", data={**form, "csrf": token},
                       headers={"Origin": "https://127.0.0.1:9999"}).status_code == 403
    assert client.post("/account/viewers", data={**form, "csrf": token},
                       headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post("/logout", data={}).status_code == 403
    assert [u.name for u in site.auth.users()] == [OWNER] and audit_kinds(site) == before
    assert client.post("/account/viewers", data={**form, "csrf": token},
                       headers={"Origin": "https://doorbell.test", "Sec-Fetch-Site": "same-origin"}
                       ).status_code == 303
    assert sorted(u.name for u in site.auth.users()) == [OWNER, VIEWER]
    # the login form has its own token (no session yet): without it, 403
    fresh = site.client("192.168.1.60")
    fresh.get("/login")
    assert fresh.post("/login", data={"username": OWNER, "password": PASSWORD}).status_code == 403


def test_no_get_route_changes_state(site: Site) -> None:
    client = site.client()
    setup_owner(site, client)
    db = site.config.state_dir / "web" / "web.db"
    before = (audit_kinds(site), [(u.name, u.role) for u in site.auth.users()], site.auth.stored_hash(OWNER))
    for path in [*get_routes(site), "/events?day=2026-03-09", "/static/style.css"]:
        assert client.get(path).status_code in (200, 303, 404), path
    after = (audit_kinds(site), [(u.name, u.role) for u in site.auth.users()], site.auth.stored_hash(OWNER))
    assert before == after and db.exists()
    for route in site.app.routes:
        if isinstance(route, Route) and route.methods and "POST" in route.methods:
            assert "GET" not in route.methods, route.path


def test_headers_csp_and_no_third_party_origin(site: Site) -> None:
    client = site.client()
    setup_owner(site, client)
    for path in ("/", "/setup", "/login", "/events", "/audit", "/account"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert not re.search(r'(src|href|action)="(https?:)?//', r.text), path


# --- throttling -----------------------------------------------------------------------------------------------

def test_the_11th_failure_gets_429_also_after_a_restart_and_others_are_not_locked_out(
        tmp_path: Path, clock: FakeClock) -> None:
    site = Site(make_config(tmp_path), clock)
    setup_owner(site, site.client("192.168.1.2"))
    attacker = site.client("192.168.1.66")
    codes = [login(attacker, OWNER, f"wrong password {i}").status_code for i in range(10)]
    assert codes == [401] * 9 + [429]  # the 10th failure starts the lockout
    r = login(attacker, OWNER, "the 11th attempt!!")
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 300
    assert login(attacker).status_code == 429  # the right password is refused during the lockout

    restarted = Site(make_config(tmp_path), clock)
    attacker = restarted.client("192.168.1.66")
    assert login(attacker).status_code == 429
    assert login(restarted.client("192.168.1.3")).status_code == 303  # another client is not locked out
    kinds = audit_kinds(restarted)
    assert kinds.count("web_login_failed") == 10 and kinds.count("web_lockout") == 1
    assert kinds.count("web_login") == 1  # login attempts refused during the lockout are not a login
    clock.advance(301)
    assert login(attacker).status_code == 303
    assert AuditLog(tmp_path, clock).verify().ok


def test_twenty_parallel_logins_run_one_hash_at_a_time(site: Site) -> None:
    setup_owner(site, site.client())
    results: list[int] = []

    def attempt(i: int) -> None:
        results.append(login(site.client(f"10.0.0.{i + 1}"), OWNER, PASSWORD if i % 2 else f"nope nope {i}"
                             ).status_code)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [303] * 10 + [401] * 10
    assert site.auth.most_hashes_at_once == 1


# --- roles ----------------------------------------------------------------------------------------------------

def test_a_viewer_sees_events_and_audit_but_gets_403_on_owner_actions(site: Site) -> None:
    owner = site.client()
    setup_owner(site, owner)
    owner.post("/account/viewers", data={"csrf": csrf_of(owner.get("/account").text), "username": VIEWER,
                                         "password": VIEWER_PASSWORD})
    viewer = site.client("192.168.1.77")
    assert login(viewer, VIEWER, VIEWER_PASSWORD).status_code == 303
    home = viewer.get("/")
    assert home.status_code == 200 and 'href="/faces"' not in home.text and 'href="/events"' in home.text
    assert viewer.get("/events").status_code == 200 and viewer.get("/audit").status_code == 200
    token = csrf_of(home.text)
    assert viewer.get("/faces").status_code == 403
    for path in ("/requests/R-1/decide", "/requests/R-1/deny", "/faces/forget", "/faces/consent", "/account/viewers",
                 "/account/viewers/remove"):
        assert viewer.post(path, data={"csrf": token, "password": VIEWER_PASSWORD, "confirm": "yes",
                                       "name": "x", "username": "x", "action": "approve"}).status_code == 403, path
    assert "Add viewer" not in viewer.get("/account").text


def test_every_login_and_failure_is_in_the_audit_log_which_verifies(site: Site) -> None:
    client = site.client()
    setup_owner(site, client)
    login(site.client("192.168.1.90"), OWNER, "not the password")
    login(site.client("192.168.1.91"))
    records = AuditLog(site.config.state_dir, site.clock).records()
    failed = [r for r in records if r["kind"] == "web_login_failed"]
    ok = [r for r in records if r["kind"] == "web_login"]
    assert failed[0]["data"] == {"user": OWNER, "client": "192.168.1.90", "at": "login"}
    assert ok[0]["data"] == {"user": OWNER, "client": "192.168.1.91"}
    assert AuditLog(site.config.state_dir, site.clock).verify().ok
    page = client.get("/audit").text
    assert f"up to entry {len(records)}" in page and "Verified" in page
    assert any(e.type == "system" for e in site.events)  # the new head went out as a witness event


UPLOAD = 4 * 1024 * 1024  # a 4 MiB "photo", well under the 24 MiB upload limit
CHUNK = 64 * 1024


def read_by_app(site: Site, cookie: str | None) -> tuple[int, int]:
    """Send a multipart upload to /faces/enrol straight to the ASGI app; (status, body bytes it pulled)."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nx\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + b"\xff" * UPLOAD + tail
    chunks = [body[i:i + CHUNK] for i in range(0, len(body), CHUNK)]
    headers = [(b"host", b"doorbell.test"), (b"content-length", str(len(body)).encode()),
               (b"content-type", f"multipart/form-data; boundary={boundary}".encode())]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    scope: dict[str, Any] = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                             "scheme": "https", "path": "/faces/enrol", "raw_path": b"/faces/enrol",
                             "query_string": b"", "root_path": "", "headers": headers,
                             "client": ("192.168.1.66", 40000), "server": ("doorbell.test", 443)}
    pulled = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if not chunks:
            await asyncio.sleep(3600)  # nothing more: the client waits for the answer
        chunk = chunks.pop(0)
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    async def run() -> None:
        await asyncio.wait_for(site.app(scope, receive, send), timeout=60)

    asyncio.run(run())
    return status, pulled


def test_an_upload_without_a_session_or_from_a_viewer_is_refused_before_its_body_is_read(site: Site) -> None:
    """Found by trying the page as an attacker on the LAN (helper webtest): POST /faces/enrol parsed the whole
    multipart body (up to 24 MiB, spooled to temporary files) before it looked at the session, so anyone who
    could reach the port made the daemon read and write 24 MiB per request. The session, the role and the
    Origin are checked from the headers first."""
    owner = site.client()
    setup_owner(site, owner)
    status, pulled = read_by_app(site, cookie=None)
    assert status == 303  # to the login page
    assert pulled < 1024 * 1024, f"the app read {pulled} bytes of an upload from nobody"
    site.auth.add_viewer(VIEWER, VIEWER_PASSWORD)
    viewer = site.client("192.168.1.77")
    assert login(viewer, VIEWER, VIEWER_PASSWORD).status_code == 303
    status, pulled = read_by_app(site, cookie=f"{COOKIE}={viewer.cookies.get(COOKIE)}")
    assert status == 403
    assert pulled < 1024 * 1024, f"the app read {pulled} bytes of an upload from a viewer"
    # The owner's upload is read in full; its CSRF token ("x") is then wrong: 403 after the body.
    status, pulled = read_by_app(site, cookie=f"{COOKIE}={owner.cookies.get(COOKIE)}")
    assert status == 403 and pulled > UPLOAD
