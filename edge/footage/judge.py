"""A request judged now, read-only: decide() over its stored document, the clips in scope and the owner's actions."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from edge.clock import Clock
from edge.footage.policy import ClipLike, Decision, Policy, Reason, decide
from edge.footage.request import Intake, parse_request
from edge.footage.store import RequestStore, StoredRequest
from edge.layout import StateLayout
from edge.service.timesync import hold_time


class Judge:
    """What the desk, its exports and its reports judge with; creates nothing but the stores it is asked for."""

    def __init__(self, policy: Policy, state_dir: Path, clock: Clock, clips: Any = None) -> None:
        self.policy = policy
        self.state_dir = state_dir
        self.clock = clock
        self._clips = clips
        self._store: RequestStore | None = None

    @property
    def store(self) -> RequestStore:
        if self._store is None:
            self._store = RequestStore(self.state_dir)
        return self._store

    def clip_source(self, *, create: bool = True) -> Any:
        if self._clips is None:
            from edge.recording.store import ClipStore

            if not create and not StateLayout.of(self.state_dir).clip_index.exists():
                return None
            self._clips = ClipStore(self.state_dir, self.clock)
        return self._clips

    def clips_for(self, intake: Intake, *, create: bool = True) -> list[ClipLike]:
        """The clips of the configured cameras the request names that overlap its time windows."""
        doc = intake.document
        if doc is None:
            return []
        windows = [(w.start, w.end) for w in doc.scope.windows if w.start < w.end]
        if not windows:
            return []
        source = self.clip_source(create=create)
        if source is None:
            return []
        start, end = min(w[0] for w in windows), max(w[1] for w in windows)
        found: list[ClipLike] = []
        for camera in sorted(set(doc.scope.cameras) & self.policy.cameras):
            found.extend(source.list(camera=camera, start=start, end=end))
        return found

    def evaluate(self, raw: bytes, now: datetime | None = None) -> Decision:
        """The decision a submission would get, with no side effects (nothing created or written)."""
        intake = parse_request(raw)
        store = RequestStore(self.state_dir, create=False)
        replay = False
        if intake.agency_id and intake.request_id and store.exists():
            replay = store.was_seen(intake.agency_id, intake.request_id) is not None
        active = store.active_holds(intake.agency_id, hold_time(self.state_dir, self.clock)) \
            if intake.agency_id and store.exists() else 0
        return decide(intake, self.policy, self.clips_for(intake, create=False), [], now or self.clock.now(),
                      replay=replay, active_holds=active)

    def load(self, request: str) -> tuple[StoredRequest, Intake]:
        stored = self.store.get(request)
        return stored, parse_request(stored.raw)

    def current(self, request: str, now: datetime | None = None) -> tuple[StoredRequest, Intake, Decision]:
        stored, intake = self.load(request)
        if stored.decision == "deny":
            # A denial at intake is final: a later clock or policy never revives it (the agency sends a new one).
            reasons = tuple(Reason(r["code"], r["detail"]) for r in stored.reasons)
            return stored, intake, Decision(stored.request_id, "deny", reasons, policy_hash=self.policy.hash)
        decision = decide(
            intake, self.policy, self.clips_for(intake), self.store.owner_actions(request), now or self.clock.now()
        )
        return stored, intake, decision
