"""Found by trying the page as a homeowner (helper webtest): what an export from the card really sent.

On a device whose clock was not trusted when a clip was recorded (a Pi without RTC before NTP, docs/time.md),
the export leaves that clip out (the manifest's note says so; `requests export --include-untrusted-time` puts it
in). The page showed "Approve sends these clips", then "written to ... sha256 ..." with no word that the bundle
holds no clip; the approval was used up. And after the export the card offered Approve, Narrow and Deny again
under "Decision now: owner review", as if nothing had been done."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.recording.store import ClipStore

from .conftest import NOW
from .helpers import PASSWORD, Site, csrf_of, setup_owner
from .seed import add_clip, seed_request, seeded_config
from .test_features import shipped_finders
from .test_requests import decide_form


def exported(tmp_path: Path, *, untrusted: bool) -> tuple[Site, object, str, str]:
    clock = FakeClock(NOW)
    cfg = seeded_config(tmp_path)
    clip = add_clip(cfg, clock, 2)
    if untrusted:
        ClipStore(cfg.state_dir, clock).mark_untrusted(clip)  # recorded before the clock was trusted
    request = seed_request(cfg, clock)
    site = Site(cfg, clock)
    site.backend.find_faces = shipped_finders()
    client = site.client()
    setup_owner(site, client)
    page = client.get(f"/requests/{request}").text
    r = client.post(f"/requests/{request}/decide", data=decide_form(page, action="approve", password=PASSWORD,
                                                                     confirm="yes"))
    assert r.status_code == 303, r.text
    page = client.get(f"/requests/{request}").text
    r = client.post(f"/requests/{request}/export", data={"csrf": csrf_of(page)})
    assert r.status_code == 303, r.text
    return site, client, request, clip


@pytest.mark.xfail(strict=True, reason="found: the card does not say the export left out the untrusted-time clip")
def test_an_export_that_left_a_clip_out_says_so_on_the_card(tmp_path: Path) -> None:
    site, client, request, clip = exported(tmp_path, untrusted=True)
    [done] = [r for r in AuditLog(site.config.state_dir, site.clock).records() if r["kind"] == "export_complete"]
    assert done["data"]["files"] == []  # the desk left the clip out, as docs/time.md says
    page = client.get(f"/requests/{request}").text  # type: ignore[attr-defined]
    assert "excluded" in page.lower() and "not trusted" in page, f"the card does not say {clip} was left out"


@pytest.mark.xfail(strict=True, reason="found: after an export the card offers Approve/Narrow/Deny again")
def test_after_the_export_the_card_does_not_ask_to_decide_again(tmp_path: Path) -> None:
    _site, client, request, _clip = exported(tmp_path, untrusted=False)
    page = client.get(f"/requests/{request}").text  # type: ignore[attr-defined]
    assert "sha256" in page  # the export is shown
    assert 'value="approve"' not in page and f'action="/requests/{request}/deny"' not in page
