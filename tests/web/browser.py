"""Playwright with Debian's Chromium (never `playwright install`): the page served by the real uvicorn thread
over HTTPS at https://doorbell.test:<port>, the name mapped to 127.0.0.1 inside Chromium only."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("DOORBELL_CHROMIUM", "/usr/bin/chromium")
VIEWPORTS: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
              "device_scale_factor": 2},
}


def require_chromium() -> str:
    """The browser tests never skip silently: under CI=true a missing Chromium or Playwright is a failure."""
    missing = None
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        import axe_playwright_python  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        missing = f"{exc} (pip install -e '.[dev]')"
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests need Chromium and Playwright: {missing}")
        pytest.skip(f"browser tests need Chromium and Playwright: {missing}")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Browser:
    browser: Any
    extra_hosts: list[str]

    def context(self, kind: str, **extra: Any) -> Any:
        return self.browser.new_context(ignore_https_errors=True, **VIEWPORTS[kind], **extra)


def launch(hosts: list[str]) -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    rules = ", ".join(f"MAP {h} 127.0.0.1" for h in hosts)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=require_chromium(), headless=True,
                                     args=[f"--host-resolver-rules={rules}"])
        try:
            yield Browser(browser, hosts)
        finally:
            browser.close()


def serious(page: Any) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']]}" for v in result.response["violations"]
            if v["impact"] in ("serious", "critical")]
