"""Shared set-up for the owner's page tests: a config in a temporary state dir, the app, a logged-in client."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from edge.clock import FakeClock
from edge.config import Config
from edge.web.app import WebApp
from edge.web.auth import AuthStore
from edge.web.backend import Backend
from edge.web.tls import ensure_tls, fingerprint

BASE = "https://doorbell.test"
OWNER = "alice"
PASSWORD = "correct horse battery staple"
VIEWER = "bob"
VIEWER_PASSWORD = "viewer pass phrase 1"
# The cheapest argon2id OWASP accepts, so the tests stay quick; the daemon's default is 64 MiB, t=3.
FAST_ARGON = {"argon2_memory_kib": 19456, "argon2_time_cost": 2}


def make_config(state: Path, **web: Any) -> Config:
    data: dict[str, Any] = {
        "storage": {"state_dir": str(state)},
        "mqtt": {"enabled": False},
        "web": {"enabled": True, "hostname": "doorbell.test", **FAST_ARGON, **web},
    }
    return Config.model_validate(data)


class Site:
    """One page server over a state dir (build another over the same dir to 'restart' it)."""

    def __init__(self, config: Config, clock: FakeClock, frame: bytes | None = None) -> None:
        self.config = config
        self.clock = clock
        self.events: list[Any] = []
        self.tls = ensure_tls(config)
        self.auth = AuthStore(config.state_dir, config.web, lambda: clock.now().timestamp())
        self.backend = Backend(config, clock, (lambda: frame), self.events.append)
        assert self.tls.ca is not None
        self.web = WebApp(self.backend, self.auth, self.tls.ca, fingerprint(self.tls.ca.read_bytes()))
        self.app = self.web.starlette()

    def client(self, ip: str = "192.168.1.20") -> TestClient:
        return TestClient(self.app, base_url=BASE, client=(ip, 40000), follow_redirects=False)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def setup_owner(site: Site, client: TestClient) -> None:
    code = site.auth.new_setup_code()
    page = client.get("/setup")
    r = client.post("/setup", data={"csrf": csrf_of(page.text), "code": code, "username": OWNER,
                                    "password": PASSWORD, "password2": PASSWORD})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text


def login(client: TestClient, user: str = OWNER, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"csrf": csrf_of(page.text), "username": user, "password": password})
