"""Draft acceptance items of issue 16 (research notes, section 7) that other tests held thinly, over TestClient:
2 the setup code in no response, log line or record; 10 no GET changes anything (the route table walked with
real ids); 16 exactly one audit entry per action, naming who and what; 22 every form control labelled and
severity in words, not colour alone; 23 no 'unsafe-inline', no inline script or style, on any answer."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from contextlib import closing
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.footage.desk import FootageDesk
from edge.vision.engine import FaceEngine
from edge.vision.gallery import Gallery

from .conftest import NOW
from .helpers import OWNER, PASSWORD, VIEWER, VIEWER_PASSWORD, Site, csrf_of, login, make_config, setup_owner
from .seed import add_clip, seed_request, seed_ring_with_clip, seeded_config
from .test_faces import EXAMPLES, upload
from .test_requests import decide_form

TEMPLATES = Path(__file__).resolve().parents[2] / "edge" / "web" / "templates"


class Seeded:
    """A state dir with three waiting warrant requests over two clips, a ring with its clip and snapshot; the
    page over it; the ids a GET route's path parameters take."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(NOW)
        cfg = seeded_config(tmp_path)
        self.clips = [add_clip(cfg, self.clock, 2), add_clip(cfg, self.clock, 10)]
        self.requests = [seed_request(cfg, self.clock, f"MPD-2026-000{i}") for i in (1, 2, 3)]
        self.event, self.clip = seed_ring_with_clip(cfg, self.clock, NOW - timedelta(minutes=30))
        self.site = Site(cfg, self.clock, frame=b"\xff\xd8\xff\xe0 a frame")
        self.ids = {"request_id": self.requests[0], "clip_id": self.clip, "event_id": self.event}
        self.day = f"/events?day={(NOW - timedelta(minutes=30)).astimezone().date()}"

    def get_paths(self) -> list[str]:
        """Every GET route of the table, its parameters filled with real ids (so each reaches its handler)."""
        paths = []
        for route in self.site.app.routes:
            if isinstance(route, Route) and "GET" in (route.methods or ()):
                path = route.path.format(**self.ids)
                assert "{" not in path, f"no id for {route.path}"
                paths.append(path)
        return [*paths, self.day, "/static/style.css", "/static/now.js"]

    def post_paths(self) -> list[str]:
        """Every action's address that has no GET page of its own."""
        gets = set(self.get_paths())
        posts = [r.path.format(**self.ids) for r in self.site.app.routes
                 if isinstance(r, Route) and "POST" in (r.methods or ())]
        return [p for p in posts if p not in gets]  # /setup and /login have their GET page too


class Tail:
    def __init__(self, site: Site) -> None:
        self.log = AuditLog(site.config.state_dir, site.clock)
        self.seen = len(self.log.records())

    def new(self) -> list[tuple[str, dict[str, Any]]]:
        records = self.log.records()
        fresh, self.seen = records[self.seen:], len(records)
        return [(r["kind"], r["data"]) for r in fresh]


# --- 2: the setup code ----------------------------------------------------------------------------------------

def test_the_setup_code_is_in_no_response_no_log_line_and_no_record(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seeded = Seeded(tmp_path)
    site = seeded.site
    code = site.auth.new_setup_code()
    forms = {code, code.replace("-", ""), code.lower(), code.replace("-", "").lower()}
    client = site.client()
    answers = []
    page = client.get("/setup")
    base = {"csrf": csrf_of(page.text), "code": code, "username": OWNER}
    answers.append(page)
    # The right code with a mistake elsewhere: the form comes back (without the code), the code still works.
    answers.append(client.post("/setup", data={**base, "password": PASSWORD, "password2": PASSWORD + "x"}))
    answers.append(client.post("/setup", data={**base, "password": "short", "password2": "short"}))
    assert [a.status_code for a in answers[1:]] == [400, 400]
    done = client.post("/setup", data={**base, "password": PASSWORD, "password2": PASSWORD})
    assert done.status_code == 303
    answers.append(done)
    answers += [client.get(p) for p in seeded.get_paths()]
    answers.append(client.post("/setup", data={**base, "password": PASSWORD, "password2": PASSWORD}))  # spent
    texts = [a.text + str(a.headers) if "text" in a.headers.get("content-type", "") else str(a.headers)
             for a in answers]
    assert len(answers) > 15 and not [t for t in texts if any(f in t for f in forms)]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert lines and not [m for m in lines if any(f in m for f in forms)]
    audit = AuditLog(site.config.state_dir, site.clock)
    assert "web_setup" in [r["kind"] for r in audit.records()]
    stored = b"".join(p.read_bytes() for p in site.config.state_dir.rglob("*") if p.is_file())
    assert not any(f.encode() in stored for f in forms), "the setup code is on disk in clear"


# --- 10: no GET changes anything --------------------------------------------------------------------------------

def content_of(path: Path) -> bytes:
    """A file's bytes; an SQLite database's rows (with what its WAL holds), dumped."""
    if path.read_bytes()[:16] != b"SQLite format 3\0":
        return path.read_bytes()
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return "\n".join(db.iterdump()).encode()


def state_of(seeded: Seeded) -> dict[str, Any]:
    """Everything a GET could change: every file (but the page's own session table and the audit log, compared
    by their meaning), the users, the sessions, each request's actions, exports and holds, the gallery."""
    state = seeded.site.config.state_dir
    skip = ("web/web.db", "audit/footage.")  # the log and its head: compared by their records
    files = {}
    for path in sorted(state.rglob("*")):
        name = str(path.relative_to(state))
        if not path.is_file() or name.startswith(skip) or name.endswith((".lock", "-wal", "-shm")):
            continue  # empty lock files and SQLite's sidecars: the databases are compared by their content
        files[name] = hashlib.sha256(content_of(path)).hexdigest()
    desk = FootageDesk(seeded.site.config, seeded.clock, emit=lambda e: None)
    auth = seeded.site.auth
    return {
        "files": files,
        "users": [(u.name, u.role) for u in auth.users()],
        "sessions": (seeded.site.web.sessions.sessions_of(OWNER), seeded.site.web.sessions.sessions_of(VIEWER)),
        "hash": auth.stored_hash(OWNER),
        "requests": [(desk.store.actions(r), desk.store.exports(r), desk.store.holds(r)) for r in seeded.requests],
        "people": Gallery(seeded.site.config.state_dir).people(),
    }


def test_no_get_changes_anything_walked_with_real_ids(tmp_path: Path) -> None:
    seeded = Seeded(tmp_path)
    site = seeded.site
    owner = site.client()
    setup_owner(site, owner)
    site.auth.add_viewer(VIEWER, VIEWER_PASSWORD)
    viewer = site.client("192.168.1.70")
    assert login(viewer, VIEWER, VIEWER_PASSWORD).status_code == 303
    before, tail = state_of(seeded), Tail(site)
    statuses = {}
    for client, who in ((owner, "owner"), (viewer, "viewer")):
        for path in seeded.get_paths():
            statuses[(who, path)] = client.get(path).status_code
        for path in seeded.post_paths():  # an action's address with GET (a link, a prefetch): 405, nothing done
            statuses[(who, "GET " + path)] = client.get(path).status_code
    after = state_of(seeded)
    changed = {k for k in {*before["files"], *after["files"]} if before["files"].get(k) != after["files"].get(k)}
    assert changed == set() and after == before
    assert tail.new() == [("web_clip_viewed", {"user": u, "role": u_role, "clip": seeded.clip})
                          for u, u_role in ((OWNER, "owner"), (VIEWER, "viewer"))]  # the one thing a GET adds
    expected = {("viewer", "/faces"): 403,
                **{(who, p): 303 for who in ("owner", "viewer") for p in ("/setup", "/login")}}
    reached = {k: v for k, v in statuses.items() if not k[1].startswith("GET ")}
    assert {k: v for k, v in reached.items() if v != expected.get(k, 200)} == {}
    assert {v for k, v in statuses.items() if k[1].startswith("GET ")} == {405}


# --- 16: exactly one audit entry per action ------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return FaceEngine.load(model="int8", threads=2)


def test_each_action_appends_exactly_one_entry_naming_who_and_what(tmp_path: Path, engine: FaceEngine) -> None:
    photo = EXAMPLES / "obama.jpg"
    if not photo.is_file():  # fail loudly: CI lays shared/data beside the checkout
        raise AssertionError(f"test data missing: {photo}")
    seeded = Seeded(tmp_path)
    site = seeded.site
    site.backend.engine = engine
    first, second, third = seeded.requests
    by = f"web:{OWNER}"
    tail = Tail(site)
    client = site.client()
    setup_owner(site, client)
    assert tail.new() == [("web_setup", {"user": OWNER, "client": "192.168.1.20"})]
    stranger = site.client("192.168.1.66")
    assert login(stranger, OWNER, "not the password at all").status_code == 401
    assert tail.new() == [("web_login_failed", {"user": OWNER, "client": "192.168.1.66", "at": "login"})]
    assert login(site.client("192.168.1.21")).status_code == 303
    assert tail.new() == [("web_login", {"user": OWNER, "client": "192.168.1.21"})]

    page = client.get(f"/requests/{first}").text
    r = client.post(f"/requests/{first}/decide", data=decide_form(page, action="approve", password=PASSWORD,
                                                                   confirm="yes"))
    assert r.status_code == 303
    [(kind, data)] = tail.new()
    assert (kind, data["request"], data["by"], sorted(data["clips"])) == ("owner_approve", first, by,
                                                                          sorted(seeded.clips))
    page = client.get(f"/requests/{second}").text
    r = client.post(f"/requests/{second}/decide", data=decide_form(page, action="narrow", password=PASSWORD,
                                                                    confirm="yes", clip=[seeded.clips[0]]))
    assert r.status_code == 303
    [(kind, data)] = tail.new()
    assert (kind, data["request"], data["by"], data["clips"]) == ("owner_approve", second, by, [seeded.clips[0]])
    page = client.get(f"/requests/{third}").text  # the approvals re-authenticated: a new session, a new token
    r = client.post(f"/requests/{third}/deny", data={"csrf": csrf_of(page), "reason": "Ask me first"})
    assert r.status_code == 303
    [(kind, data)] = tail.new()
    assert (kind, data["request"], data["by"], data["reason"]) == ("owner_deny", third, by, "Ask me first")

    r = upload(client, client.get("/faces").text, [photo])
    assert r.status_code == 303  # type: ignore[attr-defined]
    [(kind, data)] = tail.new()
    enrolled = Gallery(site.config.state_dir).enrolled("Barack Obama")
    assert enrolled is not None
    assert (kind, data["person_id"], data["by"], data["photos"]) == ("face_enrol", enrolled.person_id, by, 1)
    assert "Barack Obama" not in str(data)  # audited by the random id, never the name
    r = client.post("/faces/forget", data={"csrf": csrf_of(client.get("/faces").text), "name": "Barack Obama",
                                           "confirm": "yes"})
    assert r.status_code == 303
    [(kind, data)] = tail.new()
    assert (kind, data["person_id"], data["by"]) == ("face_forget", enrolled.person_id, by)
    assert "Barack Obama" not in str(data)

    token = csrf_of(client.get("/account").text)
    client.post("/account/viewers", data={"csrf": token, "username": VIEWER, "password": VIEWER_PASSWORD})
    assert tail.new() == [("web_user", {"user": VIEWER, "role": "viewer", "change": "added", "by": OWNER})]
    client.post("/account/viewers/remove", data={"csrf": token, "username": VIEWER})
    assert tail.new() == [("web_user", {"user": VIEWER, "role": "viewer", "change": "removed", "by": OWNER})]
    new = "another long pass phrase"
    r = client.post("/account/password", data={"csrf": token, "old": PASSWORD, "new": new, "new2": new})
    assert r.status_code == 303
    assert tail.new() == [("web_password", {"user": OWNER, "client": "192.168.1.20"})]
    assert login(client, OWNER, new).status_code == 303
    tail.new()
    client.post("/logout", data={"csrf": csrf_of(client.get("/").text)})
    assert tail.new() == [("web_logout", {"user": OWNER, "client": "192.168.1.20"})]

    assert AuditLog(site.config.state_dir, site.clock).verify().ok
    assert login(client, OWNER, new).status_code == 303
    audit = client.get("/audit").text
    assert "<strong>Verified</strong> up to entry" in audit


# --- 22 and 23: labels, severity in words, no inline script or style ---------------------------------------------

class Controls(HTMLParser):
    """Form controls and what labels them: a <label for=id>, an enclosing <label>, or aria-label(ledby)."""

    def __init__(self) -> None:
        super().__init__()
        self.inside_label = 0
        self.label_for: set[str] = set()
        self.controls: list[tuple[str, dict[str, str | None], bool]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.inline += [f"<{tag} {k}>" for k in a if k.startswith("on") or k == "style"]
        if tag == "script" and not a.get("src"):
            self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        if tag == "label":
            self.inside_label += 1
            if a.get("for"):
                self.label_for.add(str(a["for"]))
        if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            self.controls.append((tag, a, self.inside_label > 0))

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self.inside_label -= 1

    def unlabelled(self) -> list[str]:
        return [f"<{t} name={a.get('name')}>" for t, a, inside in self.controls
                if not (inside or a.get("id") in self.label_for or a.get("aria-label") or a.get("aria-labelledby"))]


def pages_as_everyone(seeded: Seeded) -> dict[str, Any]:
    """Every page in the states that show every form: setup, login, a 400 and a 403, each GET as the owner (a
    viewer on the Account page) and as a viewer, the request card waiting, decided and refused."""
    site = seeded.site
    fresh = site.client("192.168.1.90")
    answers = {"setup": fresh.get("/setup")}
    owner = site.client()
    setup_owner(site, owner)
    site.auth.add_viewer(VIEWER, VIEWER_PASSWORD)
    answers["login"] = fresh.get("/login")
    answers["login 401"] = login(fresh, OWNER, "not the password")
    answers["day 400"] = owner.get("/events?day=yesterday")
    page = owner.get(f"/requests/{seeded.requests[2]}").text
    answers["refused 403"] = owner.post(f"/requests/{seeded.requests[2]}/decide",
                                        data=decide_form(page, action="approve", password="wrong one!", confirm="yes"))
    owner.post(f"/requests/{seeded.requests[1]}/deny", data={"csrf": csrf_of(page), "reason": "no"})
    viewer = site.client("192.168.1.91")
    login(viewer, VIEWER, VIEWER_PASSWORD)
    for who, client in (("owner", owner), ("viewer", viewer)):
        for path in seeded.get_paths():
            if not path.startswith(("/static/", "/clips/", "/snapshots/", "/now.jpg", "/ca.crt", "/healthz")):
                answers[f"{who} {path}"] = client.get(path)
        for request in seeded.requests:
            answers[f"{who} card {request}"] = client.get(f"/requests/{request}")
    return answers


def test_every_form_control_has_a_label_and_severity_is_said_in_words(tmp_path: Path) -> None:
    seeded = Seeded(tmp_path)
    answers = pages_as_everyone(seeded)
    checked = 0
    for name, answer in answers.items():
        parser = Controls()
        parser.feed(answer.text)
        assert parser.unlabelled() == [], name
        checked += len(parser.controls)
        # every rule result says Blocking or Advisory; every coloured box starts with words saying what it is
        for item in re.findall(r"<li><code>[A-Z_]+</code>(.*?)</li>", answer.text, re.S):
            assert re.match(r"\s*<strong>(Blocking|Advisory):</strong>", item), (name, item)
        boxes = re.findall(r'class="(?:error|warning|ok)"[^>]*>\s*(?:<p>)?\s*(<strong>[^<]+</strong>)?', answer.text)
        assert all(boxes), (name, boxes)
    assert checked > 40
    card = answers[f"owner card {seeded.requests[0]}"].text
    assert "Blocking:" in card or "Advisory:" in card
    assert '<p class="error" role="alert"><strong>Problem:</strong>' in answers["refused 403"].text
    # The templates themselves: each coloured box (error, warning, ok) opens with its words in <strong>.
    for template in TEMPLATES.glob("*.html"):
        text = template.read_text()
        for box in re.finditer(r'class="(error|warning|ok)"[^>]*>', text):
            after = text[box.end():box.end() + 40].lstrip()
            assert after.startswith(("<strong>", "<p><strong>")), (template.name, box.group(0), after)


def every_answer(seeded: Seeded, client: TestClient) -> list[Any]:
    """GETs of every route and the error answers: 303, 400, 403, 404, 405, 411, 413, 421, 429 too."""
    site = seeded.site
    answers = [client.get(p) for p in seeded.get_paths()]
    answers += [client.get("/events?day=yesterday"), client.get("/requests/no-such"), client.get("/clips/nope"),
                client.get("/faces/forget"),
                client.post("/logout", data={"csrf": "forged"}),
                client.post("/logout", content=b"csrf=x", headers={"content-type": "application/x-www-form-urlencoded",
                                                                    "content-length": ""}),
                client.post("/logout", content=b"x", headers={"content-length": str(10 ** 9)}),
                client.get("/", headers={"host": "evil.example"}),
                site.client("192.168.1.99").get("/")]
    if site.auth.has_owner():
        attacker = site.client("192.168.1.66")
        answers += [login(attacker, OWNER, f"wrong password {i}") for i in range(11)][-1:]
    return answers


def test_no_answer_allows_inline_script_or_style_and_no_page_has_any(tmp_path: Path) -> None:
    seeded = Seeded(tmp_path)
    client = seeded.site.client()
    answers = every_answer(seeded, client)  # before setup: the redirects to /setup
    setup_owner(seeded.site, client)
    answers += every_answer(seeded, client)
    statuses = {a.status_code for a in answers}
    assert {200, 206, 303, 400, 403, 404, 405, 411, 413, 421, 429} - statuses <= {206}, statuses
    for answer in answers:
        csp = answer.headers.get("content-security-policy", "")
        directives = dict([*d.split(" ", 1), ""][:2] for d in (x.strip() for x in csp.split(";")) if d)
        assert directives.get("default-src") == "'self'" and directives.get("frame-ancestors") == "'none'", (
            answer.request.url, answer.status_code, csp)
        assert "unsafe-" not in csp and directives.get("script-src") == "'self'", csp
        assert directives.get("style-src") == "'self'", csp
        if answer.headers.get("content-type", "").startswith("text/html"):
            parser = Controls()
            parser.feed(answer.text)
            assert parser.inline == [], (answer.request.url, parser.inline)
    for template in TEMPLATES.glob("*.html"):
        parser = Controls()
        parser.feed(template.read_text())
        assert parser.inline == [], template.name


# --- 3: the password policy at a password change ---------------------------------------------------------------

def test_a_password_change_refuses_11_characters_and_takes_a_64_character_unicode_pass_phrase(tmp_path: Path
                                                                                             ) -> None:
    site = Site(make_config(tmp_path), FakeClock(NOW))
    client = site.client()
    setup_owner(site, client)
    token = csrf_of(client.get("/account").text)
    short = "elevenchars"
    r = client.post("/account/password", data={"csrf": token, "old": PASSWORD, "new": short, "new2": short})
    assert r.status_code == 400 and "at least 12" in r.text
    assert login(site.client("192.168.1.31")).status_code == 303  # nothing changed
    phrase = "Grüße aus Köln, 東京 und Zürich — ein langer Satz mit Leerzeichen!!"[:64]
    assert len(phrase) == 64
    r = client.post("/account/password", data={"csrf": token, "old": PASSWORD, "new": phrase, "new2": phrase})
    assert r.status_code == 303
    assert login(site.client("192.168.1.32"), OWNER, phrase).status_code == 303
    assert login(site.client("192.168.1.33")).status_code == 401
