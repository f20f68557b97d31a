"""Property tests over random requests, policies, clip sets and owner actions: nothing outside the windows and
cameras, nothing released without an owner approval or an auto-released verified warrant, never face data, never
anything for another device, never an unbound request without the owner, and never a clip part (or a clip's
bytes) the owner was not shown when approving."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge.footage.exporter import covered_range, select_frames
from edge.footage.policy import CODES, OwnerAction, Segment, decide
from edge.footage.request import DATA_KINDS, LEGAL_BASES

from .factory import AGENCY_KEY, DEVICE, ELSEWHERE, NOW, OTHER_KEY, document, intake, policy, z

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CAMERA_NAMES = ["front_door", "side_gate", "garage", "*", "all"]


@dataclass(frozen=True)
class Clip:
    id: str
    camera: str
    start: datetime
    end: datetime

    @property
    def sha256(self) -> str:
        return f"sha256-of-{self.id}"


minutes = st.integers(min_value=-4 * 24 * 60, max_value=120)


@st.composite
def windows(draw: Any) -> list[dict[str, str]]:
    out = []
    wild = draw(st.integers(0, 4)) == 0  # mostly plausible windows, sometimes anything
    for _ in range(draw(st.integers(1, 3))):
        if wild:
            start, length = draw(minutes), draw(st.integers(-10, 24 * 60))
        else:
            start, length = draw(st.integers(-3 * 24 * 60, -60)), draw(st.integers(1, 20))
        out.append({"start": z(NOW + timedelta(minutes=start)), "end": z(NOW + timedelta(minutes=start + length))})
    return out


REAL_CAMERAS = [["front_door"], ["side_gate"], ["front_door", "side_gate"]]
PLAIN_DATA = [["video"], ["event_metadata"], ["video", "snapshots"], ["video", "event_metadata", "snapshots"]]


@st.composite
def requests(draw: Any) -> tuple[dict[str, Any], bool, Any]:
    basis = draw(st.sampled_from(LEGAL_BASES))
    doc = document(basis)
    wild = draw(st.integers(0, 3)) == 0
    doc["scope"] = {
        "cameras": draw(st.lists(st.sampled_from(CAMERA_NAMES), max_size=3, unique=True)) if wild
        else draw(st.sampled_from(REAL_CAMERAS)),
        "windows": draw(windows()),
        "data": draw(st.lists(st.sampled_from(DATA_KINDS), min_size=1, max_size=5, unique=True)) if wild
        else draw(st.sampled_from(PLAIN_DATA)),
    }
    issued = draw(st.integers(-20 * 24 * 60, 10)) if wild else draw(st.integers(-5 * 24 * 60, 0))
    doc["issued_at"] = z(NOW + timedelta(minutes=issued))
    lasts = draw(st.integers(1, 30 * 24 * 60)) if wild else -issued + draw(st.integers(1, 10 * 24 * 60))
    doc["expires_at"] = z(NOW + timedelta(minutes=issued + lasts))
    if basis == "exigent" and wild:
        doc["emergency"] = {"danger": draw(st.sampled_from(["", "fire"])), "callback": "+1 555"}
    device = draw(st.sampled_from([DEVICE, DEVICE, DEVICE.upper(), None, ELSEWHERE]))
    if device is None:
        doc.pop("device", None)
    else:
        doc["device"] = device
    court = draw(st.booleans())
    key = draw(st.sampled_from([AGENCY_KEY] * 5 + [OTHER_KEY]))
    return doc, court, key


@st.composite
def clip_sets(draw: Any) -> list[Clip]:
    clips = []
    for i in range(draw(st.integers(0, 8))):
        start = NOW + timedelta(minutes=draw(st.integers(-3 * 24 * 60, 10)), seconds=draw(st.integers(0, 59)))
        clips.append(Clip(f"c{i}", draw(st.sampled_from(["front_door", "side_gate", "garage"])), start,
                          start + timedelta(seconds=draw(st.integers(1, 3600)))))
    return clips


@st.composite
def shown_parts(draw: Any) -> tuple[Segment, ...] | None:
    """What an approval lists as shown: parts of clips (any times), with the clip's hash or another one."""
    if draw(st.integers(0, 5)) == 0:
        return None  # recorded by an older version
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        clip = draw(st.sampled_from([f"c{i}" for i in range(8)] + ["zz"]))
        start = NOW + timedelta(minutes=draw(st.integers(-3 * 24 * 60, 10)))
        digest = draw(st.sampled_from([f"sha256-of-{clip}"] * 4 + ["0" * 64]))
        parts.append(Segment(draw(st.sampled_from(["front_door", "side_gate", "garage"])), start,
                             start + timedelta(minutes=draw(st.integers(1, 24 * 60))), clip, digest))
    return tuple(parts)


@st.composite
def consents(draw: Any) -> list[OwnerAction]:
    out = []
    for seq in range(1, draw(st.integers(0, 3)) + 1):
        kind = draw(st.sampled_from(["approve", "approve", "deny", "ratify"]))
        at = NOW - timedelta(hours=draw(st.sampled_from([0, 0, 1, 5, 80])))
        clips = draw(st.none() | st.frozensets(st.sampled_from([f"c{i}" for i in range(8)] + ["zz"])))
        out.append(OwnerAction(kind, at, seq=seq, clips=clips,
                               cameras=draw(st.none() | st.frozensets(st.sampled_from(CAMERA_NAMES))),
                               data=draw(st.none() | st.frozensets(st.sampled_from(DATA_KINDS))),
                               unblur=draw(st.frozensets(st.sampled_from(["c0", "c1", "zz"]))),
                               used=draw(st.sampled_from([False, False, True])),
                               shown=draw(shown_parts()) if kind == "approve" else None))
    return out


rules_strategy = st.fixed_dictionaries({
    "auto_release_verified_warrants": st.booleans(),
    "exigent": st.sampled_from(["deny", "owner", "owner"]),
    "approval_valid_hours": st.sampled_from([1, 72]),
    "max_window_hours": st.fixed_dictionaries({"warrant": st.sampled_from([1, 12, 48]),
                                               "consent_request": st.sampled_from([1, 2])}),
})


def _inside(segment: Segment, wins: list[tuple[datetime, datetime]]) -> bool:
    return any(start <= segment.start and segment.end <= end for start, end in wins)


@SETTINGS
@given(requests(), rules_strategy, clip_sets(), consents())
def test_decision_invariants(req: Any, rules: dict[str, Any], clips: list[Clip], actions: list[OwnerAction]) -> None:
    doc, court, key = req
    pol = policy(**rules)
    decision = decide(intake(doc, court=court, agency_key=key), pol, clips, actions, NOW)
    event(decision.decision)
    assert decision.reasons and all(r.code in CODES for r in decision.reasons)

    # Face data never appears in what a decision would release, hold or show.
    assert "face_data" not in decision.data
    if "face_data" in doc["scope"]["data"]:
        assert decision.decision == "deny"

    # Nothing outside the windows and the cameras: every segment lies inside one window, on a named camera,
    # inside its clip.
    wins = [(datetime.fromisoformat(w["start"].replace("Z", "+00:00")),
             datetime.fromisoformat(w["end"].replace("Z", "+00:00"))) for w in doc["scope"]["windows"]]
    by_id = {c.id: c for c in clips}
    for segment in decision.segments:
        assert segment.start < segment.end
        assert _inside(segment, wins)
        assert segment.camera in doc["scope"]["cameras"] and segment.camera == by_id[segment.clip_id].camera
        assert by_id[segment.clip_id].start <= segment.start and segment.end <= by_id[segment.clip_id].end
        assert segment.end <= NOW  # never anything after now
    assert decision.unblur <= {s.clip_id for s in decision.segments}

    if decision.decision == "deny":
        assert not decision.segments and not decision.data
    # Nothing released without an owner approval in force or an auto-released verified warrant.
    if decision.decision == "release":
        owner = [a for a in actions if a.kind in ("approve", "deny")]
        latest = max(owner, key=lambda a: a.seq) if owner else None  # the order of writing, never wall time
        approved = (
            latest is not None and latest.kind == "approve" and not latest.used and not latest.lapsed
            and latest.at + timedelta(hours=rules["approval_valid_hours"]) > NOW
        )
        auto = (rules["auto_release_verified_warrants"] and court and key is AGENCY_KEY
                and doc["legal_basis"] in ("warrant", "court_order") and "VERIFIED_WARRANT" in decision.codes
                and doc.get("device") is not None)
        assert approved or auto, decision
        assert not (latest is not None and latest.kind == "deny")
        if "AUTO_RELEASED" in decision.codes:
            assert doc.get("device", "").lower() == DEVICE  # never an unbound request without the owner
        if "OWNER_APPROVED" in decision.codes and latest is not None:
            assert approved and decision.approval_seq == latest.seq
            assert {s.clip_id for s in decision.segments} <= (latest.clips or {s.clip_id for s in decision.segments})
            assert set(decision.data) <= (latest.data if latest.data is not None else set(DATA_KINDS))
            # Only parts the owner was shown, of clips whose bytes are the ones shown.
            assert latest.shown is not None
            for segment in decision.segments:
                assert any(p.clip_id == segment.clip_id and p.sha256 == segment.sha256 == by_id[p.clip_id].sha256
                           and p.start <= segment.start and segment.end <= p.end for p in latest.shown), segment
        assert set(decision.data) <= set(doc["scope"]["data"])
    if decision.decision != "deny":
        # Only a request for this device, or one naming none (and then the owner is told, every time).
        assert doc.get("device") is None or doc["device"].lower() == DEVICE
        assert ("UNBOUND_DEVICE" in decision.codes) == (doc.get("device") is None)
    if doc.get("device") == ELSEWHERE:
        assert decision.decision == "deny"
    if decision.decision == "hold":
        assert doc["legal_basis"] == "preservation" and decision.data == ()
    if key is not AGENCY_KEY:
        assert decision.codes == ("BAD_SIGNATURE",)


@dataclass(frozen=True)
class HashedClip:
    id: str
    camera: str
    start: datetime
    end: datetime
    sha256: str


@SETTINGS
@given(st.data())
def test_an_approval_releases_exactly_what_was_shown(data: Any) -> None:
    """The owner approves what `requests show` listed at that moment; afterwards clips finish or are recovered
    (new ids), some approved clips are deleted, some change their bytes. The release is then exactly the parts
    shown of the approved clips still there, or nothing at all (CLIP_CHANGED) if an approved clip changed."""
    doc = document("warrant", scope={"cameras": ["front_door", "side_gate"], "data": ["video"],
                                     "windows": [{"start": z(NOW - timedelta(hours=13)),
                                                  "end": z(NOW - timedelta(hours=1))}]})
    request, pol = intake(doc), policy(auto_release_verified_warrants=True)
    clips = []
    for i in range(data.draw(st.integers(0, 8))):
        start = NOW - timedelta(hours=14) + timedelta(minutes=data.draw(st.integers(0, 14 * 60)))
        end = start + timedelta(seconds=data.draw(st.integers(1, 3600)))
        clips.append(HashedClip(f"c{i}", data.draw(st.sampled_from(["front_door", "side_gate"])), start, end,
                                f"h{i}"))
    finished = [c for c in clips if data.draw(st.booleans())]  # the others finish after the approval
    shown = decide(request, pol, finished, [], NOW).segments
    assert all(s.sha256 == f"h{s.clip_id[1:]}" for s in shown)
    approve = OwnerAction("approve", NOW - timedelta(minutes=5), seq=1, clips=frozenset(s.clip_id for s in shown),
                          shown=shown)
    gone = {c.id for c in finished if data.draw(st.integers(0, 4)) == 0}
    changed = {c.id for c in finished if data.draw(st.integers(0, 6)) == 0}
    later = [HashedClip(c.id, c.camera, c.start, c.end, c.sha256 + ("x" if c.id in changed else ""))
             for c in clips if c.id not in gone]
    decision = decide(request, pol, later, [approve], NOW)
    approved_ids = {s.clip_id for s in shown}
    if approved_ids & changed - gone:
        assert decision.decision == "owner_review" and "CLIP_CHANGED" in decision.codes
        assert decision.approval_seq is None
        return
    assert decision.decision == "release" and decision.approval_seq == 1
    assert decision.segments == tuple(s for s in shown if s.clip_id not in gone)
    newcomers = {c.id for c in later if c.id not in approved_ids} & {s.clip_id for s in
                                                                   decide(request, pol, later, [], NOW).segments}
    assert ("CLIPS_NOT_APPROVED" in decision.codes) == bool(newcomers)


@SETTINGS
@given(
    st.lists(st.integers(0, 10_000_000), min_size=1, max_size=60, unique=True),
    st.integers(-1_000_000, 11_000_000),
    st.integers(0, 5_000_000),
)
def test_frame_cutting_stays_inside_the_segment(offsets: list[int], start_us: int, length_us: int) -> None:
    base = NOW - timedelta(days=1)
    times = [base + timedelta(microseconds=o) for o in sorted(offsets)]
    start = base + timedelta(microseconds=start_us)
    end = start + timedelta(microseconds=length_us)
    picked = select_frames(times, start, end)
    assert picked == [i for i, t in enumerate(times) if start <= t < end]
    if picked:
        segment = Segment("front_door", start, end, "c0")
        lo, hi = covered_range(times, picked, segment)
        assert start <= lo <= hi <= end
