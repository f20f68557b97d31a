"""Golden request documents and approval record (tests/footage/golden): a bound request and one from before the
`device` field keep parsing, verifying and deciding as documented; an approval as stored releases what it lists."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge.clock import FakeClock
from edge.footage.policy import Segment, decide
from edge.footage.request import canonical_unsigned, parse_request
from edge.footage.store import RequestStore

from .factory import DEVICE, ELSEWHERE, NOW, policy

GOLDEN = Path(__file__).parent / "golden"


@dataclass(frozen=True)
class Clip:
    id: str
    camera: str
    start: datetime
    end: datetime
    sha256: str


def test_bound_request_names_the_device_inside_what_is_signed() -> None:
    raw = (GOLDEN / "request_bound.json").read_bytes()
    intake = parse_request(raw)
    assert intake.ok and intake.document is not None and intake.document.device == DEVICE
    assert f'"device":"{DEVICE}"'.encode() in canonical_unsigned(json.loads(raw))
    assert decide(intake, policy(auto_release_verified_warrants=True), [], [], NOW).codes == (
        "VERIFIED_WARRANT", "AUTO_RELEASED")
    assert decide(intake, policy(device=ELSEWHERE), [], [], NOW).codes == ("WRONG_DEVICE",)


def test_request_from_before_the_device_field_still_parses_and_is_unbound() -> None:
    intake = parse_request((GOLDEN / "request_unbound.json").read_bytes())
    assert intake.ok and intake.document is not None and intake.document.device is None
    decision = decide(intake, policy(auto_release_verified_warrants=True), [], [], NOW)
    assert decision.decision == "owner_review" and decision.codes == ("VERIFIED_WARRANT", "UNBOUND_DEVICE")


def test_stored_approval_releases_exactly_what_it_lists(tmp_path: Path) -> None:
    from .test_service import desk_for

    desk = desk_for(tmp_path, FakeClock(NOW))
    request, _ = desk.submit((GOLDEN / "request_bound.json").read_bytes())
    body = json.loads((GOLDEN / "owner_approve.json").read_text())
    RequestStore(tmp_path).add_action(request, "approve", NOW, body)
    (action,) = desk.store.owner_actions(request)
    (part,) = body["shown"]
    expected = Segment(part["camera"], datetime.fromisoformat(part["start"].replace("Z", "+00:00")),
                       datetime.fromisoformat(part["end"].replace("Z", "+00:00")), part["clip"], part["sha256"])
    assert action.shown == (expected,) and action.clips == frozenset(body["clips"])

    intake = desk.load(request)[1]
    clip = Clip(part["clip"], "front_door", expected.start, expected.end, part["sha256"])
    released = decide(intake, policy(), [clip], [action], NOW)
    assert released.decision == "release" and released.segments == (expected,)
    changed = decide(intake, policy(), [Clip(clip.id, clip.camera, clip.start, clip.end, "0" * 64)], [action], NOW)
    assert changed.decision == "owner_review" and "CLIP_CHANGED" in changed.codes
