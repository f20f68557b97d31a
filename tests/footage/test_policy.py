"""decide(): one table row per rule, and the owner's approvals narrowing but never widening."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from edge.footage.policy import CODES, OwnerAction, Segment, decide, in_scope
from edge.footage.request import parse_request, sign_document

from .factory import AGENCY_KEY, DEVICE, ELSEWHERE, NOW, OTHER_KEY, document, intake, policy, signed, z


@dataclass(frozen=True)
class Clip:
    id: str
    camera: str
    start: datetime
    end: datetime

    @property
    def sha256(self) -> str:
        return f"sha256-of-{self.id}"


WIN_START = NOW - timedelta(days=2, minutes=30)
CLIPS = [
    Clip("c-before", "front_door", WIN_START - timedelta(minutes=10), WIN_START - timedelta(minutes=5)),
    Clip("c-inside", "front_door", WIN_START + timedelta(minutes=5), WIN_START + timedelta(minutes=6)),
    Clip("c-straddle", "front_door", WIN_START + timedelta(minutes=29), WIN_START + timedelta(minutes=31)),
    Clip("c-other-cam", "side_gate", WIN_START + timedelta(minutes=5), WIN_START + timedelta(minutes=6)),
]


def scope(**changes: Any) -> dict[str, Any]:
    base = document()["scope"]
    base.update(changes)
    return base


def win(start: datetime, end: datetime) -> dict[str, str]:
    return {"start": z(start), "end": z(end)}


# What the owner is shown for the default document: the in-scope parts of CLIPS, with their sha256.
SHOWN = tuple(in_scope(CLIPS, ["front_door"], [(WIN_START, WIN_START + timedelta(minutes=30))]))


def approval(at: datetime = NOW - timedelta(hours=1), seq: int = 1, shown: tuple[Segment, ...] | None = SHOWN,
             **kw: Any) -> OwnerAction:
    """An approval as `requests approve` records it: the clip ids and the parts shown, with hashes."""
    clips = frozenset(s.clip_id for s in shown) if shown is not None else None
    return OwnerAction("approve", at, seq=seq, clips=clips, shown=shown, **kw)


APPROVE = approval()
CHANGED = tuple(Segment(s.camera, s.start, s.end, s.clip_id, "0" * 64) if s.clip_id == "c-inside" else s
                for s in SHOWN)

# name, basis, document overrides, policy overrides, consents, replay, court-signed, decision, codes expected
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], list[OwnerAction], bool, bool | None, str, set[str]]] = [
    ("verified warrant", "warrant", {}, {}, [], False, None, "owner_review", {"VERIFIED_WARRANT"}),
    ("verified court order", "court_order", {}, {}, [], False, None, "owner_review", {"VERIFIED_WARRANT"}),
    ("auto release", "warrant", {}, {"auto_release_verified_warrants": True}, [], False, None, "release",
     {"VERIFIED_WARRANT", "AUTO_RELEASED"}),
    ("unverified warrant: no court sig", "warrant", {}, {"auto_release_verified_warrants": True}, [], False, False,
     "owner_review", {"UNVERIFIED_WARRANT"}),
    ("unverified warrant: untrusted court", "warrant",
     {"issued_by": {"court_id": "elsewhere", "court": "X", "judge": "Y"}}, {}, [], False, None, "owner_review",
     {"UNVERIFIED_WARRANT"}),
    ("consent request", "consent_request", {}, {}, [], False, None, "owner_review", {"CONSENT_REQUIRED"}),
    ("subpoena metadata", "subpoena", {"scope": scope(data=["event_metadata"])}, {}, [], False, None,
     "owner_review", {"SUBPOENA_METADATA_ONLY"}),
    ("subpoena video", "subpoena", {}, {}, [], False, None, "deny", {"SUBPOENA_NO_CONTENT"}),
    ("subpoena snapshots", "subpoena", {"scope": scope(data=["snapshots", "event_metadata"])}, {}, [], False, None,
     "deny", {"SUBPOENA_NO_CONTENT"}),
    ("preservation", "preservation", {}, {}, [], False, None, "hold", {"PRESERVATION_HOLD"}),
    ("exigent disabled by default", "exigent", {}, {}, [], False, None, "deny", {"EXIGENT_DISABLED"}),
    ("exigent to owner", "exigent", {}, {"exigent": "owner"}, [], False, None, "owner_review", {"EXIGENT_REVIEW"}),
    ("exigent no callback", "exigent", {"emergency": {"danger": "fire"}}, {"exigent": "owner"}, [], False, None,
     "deny", {"EXIGENT_INCOMPLETE"}),
    ("exigent no emergency", "exigent", {"emergency": None}, {"exigent": "owner"}, [], False, None, "deny",
     {"EXIGENT_INCOMPLETE"}),
    ("exigent approved unratified", "exigent", {}, {"exigent": "owner"}, [APPROVE], False, None, "release",
     {"EXIGENT_REVIEW", "OWNER_APPROVED", "UNRATIFIED"}),
    ("exigent ratified", "exigent", {}, {"exigent": "owner"},
     [APPROVE, OwnerAction("ratify", NOW, seq=2, note="warrant W-1")], False, None, "release", {"RATIFIED"}),
    ("unknown agency", "warrant", {"agency": {"id": "nobody", "name": "N", "contact": "n"}}, {}, [], False, None,
     "deny", {"UNKNOWN_AGENCY"}),
    ("replay", "warrant", {}, {}, [], True, None, "deny", {"REPLAY"}),
    ("not yet valid", "warrant", {"issued_at": z(NOW + timedelta(minutes=1))}, {}, [], False, None, "deny",
     {"NOT_YET_VALID"}),
    ("expired", "consent_request", {"issued_at": z(NOW - timedelta(days=30)), "expires_at": z(NOW)}, {}, [], False,
     None, "deny", {"EXPIRED"}),
    ("warrant stale", "warrant", {"issued_at": z(NOW - timedelta(days=15))}, {}, [], False, None, "deny",
     {"WARRANT_STALE"}),
    ("court order stale", "court_order", {"issued_at": z(NOW - timedelta(days=14, seconds=1))}, {}, [], False, None,
     "deny", {"WARRANT_STALE"}),
    ("consent request old is fine", "consent_request", {"issued_at": z(NOW - timedelta(days=20))}, {}, [], False,
     None, "owner_review", {"CONSENT_REQUIRED"}),
    ("prospective", "warrant", {"scope": scope(windows=[win(NOW - timedelta(hours=1), NOW + timedelta(seconds=1))])},
     {}, [], False, None, "deny", {"PROSPECTIVE"}),
    ("window ending now is past", "warrant", {"scope": scope(windows=[win(NOW - timedelta(hours=1), NOW)])}, {}, [],
     False, None, "owner_review", {"VERIFIED_WARRANT"}),
    ("backwards window", "warrant", {"scope": scope(windows=[win(WIN_START, WIN_START)])}, {}, [], False, None,
     "deny", {"SCOPE_TOO_BROAD"}),
    ("too many hours", "warrant",
     {"scope": scope(windows=[win(NOW - timedelta(hours=20), NOW - timedelta(hours=10)),
                              win(NOW - timedelta(hours=9), NOW - timedelta(hours=6))])}, {}, [], False, None,
     "deny", {"SCOPE_TOO_BROAD"}),
    ("consent over an hour", "consent_request",
     {"scope": scope(windows=[win(NOW - timedelta(hours=3), NOW - timedelta(hours=1, minutes=59))])}, {}, [], False,
     None, "deny", {"SCOPE_TOO_BROAD"}),
    ("policy widens limit", "consent_request",
     {"scope": scope(windows=[win(NOW - timedelta(hours=3), NOW - timedelta(hours=1))])},
     {"max_window_hours": {"consent_request": 2}}, [], False, None, "owner_review", {"CONSENT_REQUIRED"}),
    ("no cameras", "warrant", {"scope": scope(cameras=[])}, {}, [], False, None, "deny", {"BAD_CAMERA"}),
    ("wildcard star", "warrant", {"scope": scope(cameras=["*"])}, {}, [], False, None, "deny", {"BAD_CAMERA"}),
    ("wildcard all", "warrant", {"scope": scope(cameras=["All"])}, {}, [], False, None, "deny", {"BAD_CAMERA"}),
    ("unknown camera", "warrant", {"scope": scope(cameras=["front_door", "garage"])}, {}, [], False, None, "deny",
     {"BAD_CAMERA"}),
    ("face data warrant", "warrant", {"scope": scope(data=["video", "face_data"])}, {}, [], False, None, "deny",
     {"BIOMETRICS_NEVER_EXPORTED"}),
    ("face data preservation", "preservation", {"scope": scope(data=["face_data"])}, {}, [], False, None, "deny",
     {"BIOMETRICS_NEVER_EXPORTED"}),
    ("audio warrant ok", "warrant", {"scope": scope(data=["video", "audio"])}, {}, [], False, None, "owner_review",
     {"VERIFIED_WARRANT"}),
    ("audio court order", "court_order", {"scope": scope(data=["audio"])}, {}, [], False, None, "deny",
     {"AUDIO_REQUIRES_WARRANT"}),
    ("audio consent", "consent_request", {"scope": scope(data=["audio"])}, {}, [], False, None, "deny",
     {"AUDIO_REQUIRES_WARRANT"}),
    ("owner approves", "consent_request", {}, {}, [APPROVE], False, None, "release", {"OWNER_APPROVED"}),
    ("owner denies", "warrant", {}, {"auto_release_verified_warrants": True},
     [OwnerAction("deny", NOW, seq=1, note="no")], False, None, "deny", {"OWNER_DENIED"}),
    ("last owner word counts", "consent_request", {}, {},
     [OwnerAction("deny", NOW - timedelta(hours=2), seq=1), approval(NOW - timedelta(hours=1), seq=2)],
     False, None, "release", {"OWNER_APPROVED"}),
    ("approval lapses", "consent_request", {}, {}, [approval(NOW - timedelta(hours=72), seq=1)], False,
     None, "owner_review", {"APPROVAL_LAPSED"}),
    ("approval used", "consent_request", {}, {}, [approval(NOW, seq=1, used=True)], False, None,
     "owner_review", {"APPROVAL_USED"}),
    ("approval cannot rescue expired", "consent_request", {"expires_at": z(NOW - timedelta(seconds=1)),
                                                           "issued_at": z(NOW - timedelta(days=2))},
     {}, [APPROVE], False, None, "deny", {"EXPIRED"}),
    # Device binding: the request names the device (its key fingerprint) inside what the agency signs.
    ("wrong device", "warrant", {"device": ELSEWHERE}, {}, [], False, None, "deny", {"WRONG_DEVICE"}),
    ("wrong device, auto-release on", "warrant", {"device": ELSEWHERE}, {"auto_release_verified_warrants": True},
     [], False, None, "deny", {"WRONG_DEVICE"}),
    ("wrong device, owner approved", "consent_request", {"device": ELSEWHERE}, {}, [APPROVE], False, None, "deny",
     {"WRONG_DEVICE"}),
    ("wrong device preservation", "preservation", {"device": ELSEWHERE}, {}, [], False, None, "deny",
     {"WRONG_DEVICE"}),
    ("device named in upper case", "warrant", {"device": DEVICE.upper()}, {"auto_release_verified_warrants": True},
     [], False, None, "release", {"VERIFIED_WARRANT", "AUTO_RELEASED"}),
    ("device without a key names nothing", "warrant", {}, {"device": None}, [], False, None, "deny",
     {"WRONG_DEVICE"}),
    ("unbound warrant, auto-release on", "warrant", {"device": None}, {"auto_release_verified_warrants": True},
     [], False, None, "owner_review", {"VERIFIED_WARRANT", "UNBOUND_DEVICE"}),
    ("unbound warrant, owner approves", "warrant", {"device": None}, {"auto_release_verified_warrants": True},
     [APPROVE], False, None, "release", {"VERIFIED_WARRANT", "UNBOUND_DEVICE", "OWNER_APPROVED"}),
    ("unbound warrant, approval used", "warrant", {"device": None}, {"auto_release_verified_warrants": True},
     [approval(used=True)], False, None, "owner_review", {"UNBOUND_DEVICE", "APPROVAL_USED"}),
    ("unbound consent request", "consent_request", {"device": None}, {}, [], False, None, "owner_review",
     {"CONSENT_REQUIRED", "UNBOUND_DEVICE"}),
    ("unbound preservation holds", "preservation", {"device": None}, {}, [], False, None, "hold",
     {"PRESERVATION_HOLD", "UNBOUND_DEVICE"}),
    ("unbound, owner denies", "warrant", {"device": None}, {}, [OwnerAction("deny", NOW, seq=1, note="no")], False,
     None, "deny", {"OWNER_DENIED"}),
    # Approvals bound to what the owner saw.
    ("approval without its clip list", "consent_request", {}, {}, [approval(shown=None)], False, None,
     "owner_review", {"CONSENT_REQUIRED", "APPROVAL_UNLISTED"}),
    ("clip changed since approval", "consent_request", {}, {}, [approval(shown=CHANGED)], False, None,
     "owner_review", {"CLIP_CHANGED"}),
    ("clip appeared after approval", "consent_request", {}, {},
     [approval(shown=tuple(s for s in SHOWN if s.clip_id == "c-inside"))], False, None, "release",
     {"OWNER_APPROVED", "CLIPS_NOT_APPROVED"}),
]


@pytest.mark.parametrize(
    ("name", "basis", "overrides", "rules", "consents", "replay", "court", "expected", "codes"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_rule(name: str, basis: str, overrides: dict[str, Any], rules: dict[str, Any], consents: list[OwnerAction],
              replay: bool, court: bool | None, expected: str, codes: set[str]) -> None:
    request = intake(document(basis, **overrides), court=court)
    decision = decide(request, policy(**rules), CLIPS, consents, NOW, replay=replay)
    assert decision.decision == expected, decision.reasons
    assert codes <= set(decision.codes), decision.reasons
    for reason in decision.reasons:
        assert reason.code in CODES and reason.detail
    if expected == "deny":
        assert decision.segments == () and decision.data == ()


def test_every_deny_code_denies() -> None:
    for code, (effect, text) in CODES.items():
        assert effect in {"deny", "owner_review", "release", "hold", "note"}, code
        assert text


def test_segments_are_cut_to_window_and_camera() -> None:
    decision = decide(intake(document("consent_request")), policy(), CLIPS, [APPROVE], NOW)
    got = {(s.clip_id, s.start, s.end) for s in decision.segments}
    end = WIN_START + timedelta(minutes=30)
    assert got == {
        ("c-inside", WIN_START + timedelta(minutes=5), WIN_START + timedelta(minutes=6)),
        ("c-straddle", WIN_START + timedelta(minutes=29), end),
    }


def test_approval_narrows_never_widens() -> None:
    doc = document("warrant", scope=scope(cameras=["front_door"], data=["video", "snapshots"]))
    # Even a doctored approval listing clips and times outside the request releases only what is in scope.
    wide = tuple(Segment(c.camera, c.start - timedelta(hours=1), c.end + timedelta(hours=1), c.id, c.sha256)
                 for c in CLIPS if c.id != "c-straddle")
    approve = OwnerAction("approve", NOW, seq=3, clips=frozenset({"c-inside", "c-other-cam", "c-before"}),
                          cameras=frozenset({"front_door", "side_gate"}), data=frozenset({"video", "audio"}),
                          unblur=frozenset({"c-inside", "c-straddle"}), shown=wide)
    decision = decide(intake(doc), policy(), CLIPS, [approve], NOW)
    assert decision.decision == "release"
    assert [s.clip_id for s in decision.segments] == ["c-inside"]
    assert decision.segments == tuple(s for s in SHOWN if s.clip_id == "c-inside")
    assert decision.data == ("video",)
    assert decision.unblur == {"c-inside"}
    assert decision.approval_seq == 3


def test_approval_releases_what_was_shown_and_nothing_that_came_later() -> None:
    """The owner approved while only c-inside had finished; c-straddle finished afterwards (same window)."""
    before = [c for c in CLIPS if c.id != "c-straddle"]
    shown = decide(intake(document("consent_request")), policy(), before, [], NOW).segments
    assert [s.clip_id for s in shown] == ["c-inside"] and shown[0].sha256 == "sha256-of-c-inside"
    approve = approval(shown=shown)
    decision = decide(intake(document("consent_request")), policy(), CLIPS, [approve], NOW)
    assert decision.decision == "release"
    assert decision.segments == shown
    later = next(r for r in decision.reasons if r.code == "CLIPS_NOT_APPROVED")
    assert "c-straddle" in later.detail


def test_approval_releases_only_the_parts_shown() -> None:
    """An approval recorded for part of a clip (a narrower window then) never grows to the whole clip."""
    part = SHOWN[0]
    half = Segment(part.camera, part.start, part.start + (part.end - part.start) / 2, part.clip_id, part.sha256)
    decision = decide(intake(document("consent_request")), policy(), CLIPS, [approval(shown=(half,))], NOW)
    assert decision.segments == (half,)


def test_changed_clip_stops_the_release_naming_it() -> None:
    decision = decide(intake(document("consent_request")), policy(), CLIPS, [approval(shown=CHANGED)], NOW)
    assert decision.decision == "owner_review" and decision.approval_seq is None
    changed = next(r for r in decision.reasons if r.code == "CLIP_CHANGED")
    assert "c-inside" in changed.detail and "approve again" in changed.detail


def test_wrong_device_names_both_fingerprints() -> None:
    decision = decide(intake(document("warrant", device=ELSEWHERE)), policy(), CLIPS, [], NOW)
    assert decision.codes == ("WRONG_DEVICE",)
    assert ELSEWHERE in decision.reasons[0].detail and DEVICE in decision.reasons[0].detail


def test_device_must_be_a_fingerprint() -> None:
    for bad in ("12 Main St", DEVICE[:-1], DEVICE + "0", "g" * 16, 1234):
        decision = decide(intake(document("warrant", device=bad)), policy(), CLIPS, [], NOW)
        assert decision.codes == ("INCOMPLETE",), bad
        assert "device" in decision.reasons[0].detail


def test_device_is_covered_by_the_signature() -> None:
    body = json.loads(signed(document("warrant")))
    body["device"] = ELSEWHERE  # moved to another doorbell after signing
    decision = decide(parse_request(json.dumps(body).encode()), policy(device=ELSEWHERE), CLIPS, [], NOW)
    assert decision.codes == ("BAD_SIGNATURE",)


def test_in_scope_merges_overlapping_windows() -> None:
    w1 = (WIN_START, WIN_START + timedelta(minutes=20))
    w2 = (WIN_START + timedelta(minutes=10), WIN_START + timedelta(minutes=30))
    segs = in_scope(CLIPS, ["front_door"], [w1, w2])
    assert len(segs) == 2 and len({s.clip_id for s in segs}) == 2


def test_agency_signature_from_other_key_denied() -> None:
    decision = decide(intake(document(), agency_key=OTHER_KEY), policy(), CLIPS, [APPROVE], NOW)
    assert decision.codes == ("BAD_SIGNATURE",)


def test_forged_court_signature_denied() -> None:
    doc = document()
    body = sign_document(doc, AGENCY_KEY, OTHER_KEY)
    decision = decide(parse_request(json.dumps(body).encode()), policy(), CLIPS, [], NOW)
    assert decision.decision == "deny" and decision.codes == ("BAD_SIGNATURE",)


def test_every_single_byte_change_after_signing_is_denied() -> None:
    raw = signed(document("consent_request"))
    body = json.loads(raw)
    unsigned_text = json.dumps({k: v for k, v in body.items() if k != "signatures"})
    sig_text = json.dumps(body["signatures"])
    tried = 0
    for i in range(1, len(unsigned_text) - 1):
        mutated = bytearray(unsigned_text.encode())
        mutated[i] ^= 0x01
        text = mutated.decode("utf-8", "replace")
        candidate = text[:-1] + ', "signatures": ' + sig_text + "}"
        decision = decide(parse_request(candidate.encode()), policy(), CLIPS, [APPROVE], NOW)
        assert decision.decision == "deny", (i, candidate)
        assert set(decision.codes) <= {"INCOMPLETE", "BAD_SIGNATURE", "UNKNOWN_AGENCY"}, (i, decision.codes)
        tried += 1
    assert tried > 300


def test_missing_field_is_incomplete() -> None:
    for field in ("request_id", "agency", "officer", "legal_basis", "case_number", "incident", "issued_at",
                  "expires_at", "scope"):
        doc = copy.deepcopy(document())
        del doc[field]
        decision = decide(intake(doc), policy(), CLIPS, [APPROVE], NOW)
        assert decision.codes == ("INCOMPLETE",), field
        assert field in decision.reasons[0].detail


def test_warrant_without_issuer_is_incomplete() -> None:
    decision = decide(intake(document("warrant", issued_by=None)), policy(), CLIPS, [], NOW)
    assert decision.codes == ("INCOMPLETE",) and "issued_by" in decision.reasons[0].detail


def test_unsigned_is_incomplete() -> None:
    decision = decide(parse_request(json.dumps(document()).encode()), policy(), CLIPS, [], NOW)
    assert decision.codes == ("INCOMPLETE",)
    assert "signatures" in decision.reasons[0].detail


def test_policy_hash_changes_with_rules() -> None:
    assert policy().hash != policy(exigent="owner").hash
    assert policy().hash == policy().hash
