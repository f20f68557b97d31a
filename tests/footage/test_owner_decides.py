"""Only the owner decides: preservation holds per agency are bounded (the 11th is refused, HOLD_LIMIT), the owner
lifts a hold (audited) and its clips are subject to retention again, also after a SIGKILL mid-release; owner
actions record the real user from the system, whatever $LOGNAME says."""

from __future__ import annotations

import json
import os
import pwd
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.cli import main
from edge.clock import FakeClock
from edge.config import RetentionConfig
from edge.errors import RequestError
from edge.footage.desk import FootageDesk
from edge.recording.recorder import retention_policy
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .crash import killed_at
from .factory import NOW, config, document, install_device_key, rules, signed
from .test_export_e2e import FPS, WIN_START, find_faces, frames

ME = pwd.getpwuid(os.getuid()).pw_name


def desk_for(state: Path, clock: FakeClock, **kw: Any) -> FootageDesk:
    kw.setdefault("emit", lambda event: None)
    return FootageDesk(config(state), clock, find_faces=find_faces, **kw)


def preservation(request_id: str | None = None) -> bytes:
    return signed(document("preservation", request_id=request_id or f"MPD-{uuid.uuid4().hex[:12]}"))


def test_the_11th_active_hold_from_one_agency_is_refused(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    assert desk.config.footage_requests.max_active_holds_per_agency == 10  # the documented default
    held = [desk.submit(preservation())[0] for _ in range(10)]
    assert [desk.current(r)[2].decision for r in held] == ["hold"] * 10

    eleventh = preservation("MPD-ELEVENTH")
    assert desk.evaluate(eleventh).codes == ("HOLD_LIMIT",)  # what it would get, recording nothing
    request, decision = desk.submit(eleventh)
    assert decision.decision == "deny" and decision.codes == ("HOLD_LIMIT",)
    assert "already has 10 preservation hold(s) in force" in decision.reasons[0].detail
    assert "requests release-hold" in decision.reasons[0].detail
    assert desk.store.holds(request) == [] and len([h for h in store.holds() if h.active]) == 10
    assert desk.audit.records()[-1]["data"]["reasons"][0]["code"] == "HOLD_LIMIT"

    # Once the owner lifts one, the same document is judged afresh (its id was not used up) and held.
    desk.release_hold(held[0], "case closed")
    _, decision = desk.submit(eleventh)
    assert decision.decision == "hold", decision.codes
    _, refused = desk.submit(preservation())
    assert refused.codes == ("HOLD_LIMIT",)
    # A hold that ran out frees its place as well (judged at hold time, before any sweep recorded it).
    clock.advance(91 * 86400)
    _, later = desk.submit(signed(document("preservation", request_id="MPD-LATER", **_fresh(clock))))
    assert later.decision == "hold", later.codes
    assert desk.audit.verify().ok


def _fresh(clock: FakeClock) -> dict[str, Any]:
    from .factory import z

    now = clock.now()
    return {"issued_at": z(now - timedelta(days=1)), "expires_at": z(now + timedelta(days=6)),
            "scope": {"cameras": ["front_door"], "data": ["video"],
                      "windows": [{"start": z(now - timedelta(hours=2)), "end": z(now - timedelta(hours=1))}]}}


def test_the_limit_is_configurable(tmp_path: Path) -> None:
    desk = FootageDesk(config(tmp_path, max_active_holds_per_agency=2), FakeClock(NOW), emit=lambda e: None)
    assert [desk.submit(preservation())[1].decision for _ in range(3)] == ["hold", "hold", "deny"]


def _retention_deletes(store: ClipStore) -> tuple[str, ...]:
    report = store.apply_retention(retention_policy(RetentionConfig(motion_days=1, min_free_mb=0)), 10**12)
    return tuple(d.clip_id for d in report.deleted)


def test_owner_lifts_a_hold_and_its_clips_are_subject_to_retention_again(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    clip = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    request, decision = desk.submit(preservation())
    assert decision.decision == "hold"
    clock.advance(5 * 86400)  # past the clip's 1-day retention, well inside the 90-day hold
    assert _retention_deletes(store) == () and Path(clip.path).exists()

    with pytest.raises(RequestError, match="not a preservation hold"):
        desk.release_hold(desk.submit(signed(document("warrant")))[0])
    lifted = desk.release_hold(request, "the agency withdrew it")
    assert lifted == [h["hold_id"] for h in desk.store.holds(request)]
    record = desk.audit.records()[-1]
    assert record["kind"] == "hold_release" and record["data"]["holds"] == lifted
    assert record["data"]["clips"] == [clip.id] and record["data"]["reason"] == "the agency withdrew it"
    assert record["data"]["by"].startswith(f"{ME} (uid {os.getuid()})")
    assert desk.rows()[0]["state"] == "hold_released" and desk.report()["holds_active"] == 0
    with pytest.raises(RequestError, match="no preservation hold in force"):
        desk.release_hold(request)
    with pytest.raises(RequestError, match="lifted this hold"):
        desk.renew_hold(request)

    assert _retention_deletes(store) == (clip.id,)
    assert not Path(clip.path).exists()
    assert desk.audit.verify().ok and desk.verify_audit()[0]


@pytest.mark.parametrize("point", ["release-hold:after-audit", "release-hold:after-clips"])
def test_sigkill_mid_release_then_running_it_again_finishes_it(tmp_path: Path, point: str) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    clip = write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    request, _ = desk_for(tmp_path, clock, clips=store).submit(preservation())
    killed_at(point, lambda: desk_for(tmp_path, clock, clips=ClipStore(tmp_path, clock)).release_hold(request))
    desk = desk_for(tmp_path, clock, clips=ClipStore(tmp_path, clock))
    assert desk.rows()[0]["state"] == "held"  # the store is the owner's view: not lifted until it says so
    desk.release_hold(request)
    assert desk.rows()[0]["state"] == "hold_released"
    assert [r["kind"] for r in desk.audit.records()].count("hold_release") == 2  # the attempt and the finish
    clock.advance(5 * 86400)
    assert _retention_deletes(ClipStore(tmp_path, clock)) == (clip.id,)
    assert desk.audit.verify().ok


def test_owner_actions_record_the_real_user_not_logname(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LOGNAME", "someone")
    monkeypatch.setenv("USER", "someone")
    monkeypatch.setenv("USERNAME", "someone")
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path / "state", clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    install_device_key(tmp_path / "state")  # the requests name the test device (factory.DEVICE)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump({"cameras": {"front_door": {}, "side_gate": {}}, "mqtt": {"enabled": False},
                                   "storage": {"state_dir": str(tmp_path / "state")}, "footage_requests": rules()}))
    real = FootageDesk.__init__

    def pinned(self: FootageDesk, config_: Any, clock_: Any = None, **kw: Any) -> None:
        kw.setdefault("find_faces", find_faces)
        real(self, config_, clock, **kw)

    monkeypatch.setattr(FootageDesk, "__init__", pinned)
    warrant, hold = tmp_path / "warrant.json", tmp_path / "hold.json"
    warrant.write_bytes(signed(document("warrant")))
    hold.write_bytes(preservation())
    assert main(["requests", "submit", str(warrant), "--config", str(cfg), "--json"]) == 0
    request = json.loads(capsys.readouterr().out)["id"]
    assert main(["requests", "approve", request, "--config", str(cfg)]) == 0
    capsys.readouterr()
    assert main(["requests", "submit", str(hold), "--config", str(cfg), "--json"]) == 0
    held = json.loads(capsys.readouterr().out)["id"]
    assert main(["requests", "release-hold", held, "--reason", "done", "--config", str(cfg)]) == 0
    assert "lifted" in capsys.readouterr().out

    desk = FootageDesk(config(tmp_path / "state"), clock, emit=lambda e: None)
    records = {r["kind"]: r["data"] for r in desk.audit.records()}
    for kind in ("owner_approve", "hold_release"):
        by = records[kind]["by"]
        assert by.startswith(f"{ME} (uid {os.getuid()})"), by
        assert "someone" not in by
    approvals = [d for _, k, _, d in desk.store.actions(request) if k == "approve"]
    assert approvals[0]["by"] == records["owner_approve"]["by"]
