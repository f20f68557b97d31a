"""The owner's approval: what it may release (narrow, never widen), the body it is recorded with, and its proof."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from edge.clock import rfc3339
from edge.errors import RequestChanged, RequestError
from edge.footage.audit import AuditLog
from edge.footage.policy import Decision
from edge.footage.request import FootageRequest
from edge.footage.store import RequestStore, StoredRequest

if TYPE_CHECKING:
    from edge.footage.desk import FootageDesk

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Narrowing:
    """The owner's narrowing of a request's scope: None releases all the request asks of that kind."""

    clips: Sequence[str] | None = None
    cameras: Sequence[str] | None = None
    data: Sequence[str] | None = None


def check_seen(stored: StoredRequest, seen_sha256: str | None) -> None:
    """The request the owner decides on must be the one they were shown: `seen_sha256` is the sha256 of the
    stored document as shown (`document_sha256` of `requests show`); None when the owner decides at the
    command line, where the id names the stored request itself."""
    if seen_sha256 is None:
        return
    seen = seen_sha256.strip().lower()
    if not SHA256_HEX.fullmatch(seen):
        raise RequestError(f"the request hash the owner saw ({seen_sha256!r}) is not a sha256 in hex (64 digits)")
    actual = hashlib.sha256(stored.raw).hexdigest()
    if seen != actual or stored.sha256 != actual:
        raise RequestChanged(
            f"request {stored.id} is not the one you were shown (shown sha256 {seen[:16]}..., stored document "
            f"sha256 {actual[:16]}..., recorded as {stored.sha256[:16]}...): nothing was approved; look at it again"
        )


def approval_body(
    request: str,
    doc: FootageRequest,
    decision: Decision,
    full: Decision,
    narrowing: Narrowing,
    unblur: Sequence[str],
    attest_original: bool,
    actor: str,
) -> dict[str, Any]:
    """What an approval releases, resolved now and recorded: exactly these parts of exactly these clips (with
    the sha256 the owner was shown); a clip that finishes or is recovered later needs a new approval. `full` is
    the request's whole scope judged without owner actions; RequestError for any widening."""
    clips, cameras, data = narrowing.clips, narrowing.cameras, narrowing.data
    in_scope = {s.clip_id for s in full.segments}
    for clip in clips or ():
        if clip not in in_scope:
            raise RequestError(f"clip {clip!r} is not in request {request}'s scope: an approval may narrow it, "
                               "never widen it")
    for camera in cameras or ():
        if camera not in doc.scope.cameras:
            raise RequestError(f"camera {camera!r} is not in request {request}'s scope")
    for kind in data or ():
        if kind not in full.data:
            raise RequestError(f"data kind {kind!r} is not released by request {request} (allowed: "
                               f"{', '.join(full.data) or 'none'})")
    shown = [s for s in full.segments if (clips is None or s.clip_id in clips)
             and (cameras is None or s.camera in cameras)]
    unhashed = sorted({s.clip_id for s in shown if not s.sha256})
    if unhashed:
        raise RequestError(f"clip {unhashed[0]} has no recorded sha256, so an approval cannot be bound to it "
                           f"(check it with `doorbell-edge clips show {unhashed[0]}`); narrow with --clips")
    approved = {s.clip_id for s in shown}
    for clip in unblur:
        if clip not in approved:
            raise RequestError(f"--unblur {clip!r}: that clip is not part of this approval")
    if attest_original and "UNVERIFIED_WARRANT" not in decision.codes:
        raise RequestError("--attest-original is only for a warrant or court order without a trusted court "
                           "signature")
    return {
        "clips": sorted(approved),
        "shown": [s.to_dict() for s in shown],
        "cameras": sorted(cameras) if cameras is not None else None,
        "data": sorted(data) if data is not None else None,
        "unblur": sorted(unblur),
        "attest_original": attest_original,
        "by": actor,
    }


def approval_audited(store: RequestStore, audit: AuditLog, request: str, decision: Decision) -> bool:
    """Whether the approval an export rests on is the owner's: its `owner_approve` audit record, with the same
    clips and hashes, is in the log (issue 12: a row inserted straight into requests.sqlite3 was exported).
    Each store approval needs its own record: the n-th of identical approvals needs n matching records. An
    auto-released verified warrant has no approval: its decision record is its authority."""
    if decision.approval_seq is None:
        return True
    actions = [(seq, data) for seq, kind, _, data in store.actions(request) if kind == "approve"]
    body = next((data for seq, data in actions if seq == decision.approval_seq), None)
    if body is None:
        return False
    twins = sum(1 for seq, data in actions if data == body and seq <= decision.approval_seq)
    audited = sum(1 for r in audit.records()
                  if r.get("kind") == "owner_approve" and isinstance(r.get("data"), dict)
                  and r["data"].get("request") == request
                  and all(r["data"].get(k) == v for k, v in body.items()))
    return audited >= twins


def approval_summary(store: RequestStore, request: str, decision: Decision) -> dict[str, Any] | None:
    """The approval an export rests on, as its manifest names it (None for an auto-released warrant)."""
    if decision.approval_seq is None:
        return None
    for seq, kind, at, data in store.actions(request):
        if seq == decision.approval_seq and kind == "approve":
            return {"seq": seq, "at": rfc3339(at), "attest_original": bool(data.get("attest_original")),
                    "unblurred": sorted(decision.unblur)}
    return None


def lapse_approvals(desk: FootageDesk, now: datetime) -> list[str]:
    """Audit each approval that lapsed unused (once): the sweep's first step."""
    done: list[str] = []
    valid = timedelta(hours=desk.policy.rules.approval_valid_hours)
    for item in desk.store.all():
        noted = {d.get("approval") for _, k, _, d in desk.store.actions(item.id) if k == "expiry"}
        for action in desk.store.owner_actions(item.id):
            if action.kind != "approve" or action.used or action.seq in noted or now < action.at + valid:
                continue
            desk.audit.append("expiry", request=item.id, approval=action.seq, lapsed_at=rfc3339(action.at + valid))
            desk.store.add_action(item.id, "expiry", now, {"approval": action.seq})
            desk._publish(item.id, "approval_lapsed")
            done.append(f"{item.id}: approval {action.seq} lapsed")
    return done
