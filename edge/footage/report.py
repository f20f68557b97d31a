"""Where requests stand, read-only: the rows of `requests list`, one request's summary, the transparency report."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

from edge.clock import rfc3339
from edge.footage.policy import Decision
from edge.footage.store import StoredRequest

if TYPE_CHECKING:
    from edge.footage.desk import FootageDesk


def summary(desk: FootageDesk, request: str) -> dict[str, Any]:
    """`requests show`: the document, both decisions (at intake and now), owner actions, exports and holds."""
    stored, intake, decision = desk.current(request)
    doc = intake.document
    return {
        "id": stored.id,
        "received_at": rfc3339(stored.received_at),
        "agency": stored.agency_id,
        "verified": stored.verified,  # its signature checked against the configured agency's key at intake
        "request_id": stored.request_id,
        "legal_basis": stored.basis,
        "case_number": doc.case_number if doc else None,
        "document": doc.model_dump(mode="json", exclude={"signatures"}) if doc else None,
        "document_problems": list(intake.problems),
        "document_sha256": stored.sha256,
        "decision_at_intake": {"decision": stored.decision, "reasons": stored.reasons},
        "now": decision.to_dict(),
        "owner_actions": [
            {"seq": s, "kind": k, "at": rfc3339(a), **d} for s, k, a, d in desk.store.actions(request)
        ],
        "exports": desk.store.exports(request),
        "holds": desk.store.holds(request),
    }


def rows(desk: FootageDesk) -> list[dict[str, Any]]:
    """`requests list`: each request with its current decision and its state (see state())."""
    out = []
    exported = {e["request"] for e in desk.store.exports() if e["completed_at"]}
    for item in desk.store.all():
        _, _, decision = desk.current(item.id)
        out.append({"id": item.id, "received_at": rfc3339(item.received_at), "agency": item.agency_id,
                    "verified": item.verified, "request_id": item.request_id, "basis": item.basis,
                    "state": state(desk, item, exported, decision),
                    "decision": decision.decision, "codes": list(decision.codes)})
    return out


def owner_denied(desk: FootageDesk, request: str) -> bool:
    """The owner's last word, in the order the actions were written (never by wall time), is a denial."""
    owner = [a for a in desk.store.owner_actions(request) if a.kind in ("approve", "deny")]
    return bool(owner) and max(owner, key=lambda a: a.seq).kind == "deny"


def state(desk: FootageDesk, item: StoredRequest, exported: set[str], decision: Decision) -> str:
    """Where a request stands, one word: waiting (for the owner's decision: the only state counted as pending),
    approved (released, not yet exported), exported, held, hold_expired, denied (at intake or by the owner),
    expired (the document's validity ran out before anything was released); hold_released: the owner lifted the
    hold."""
    if item.decision == "deny":
        return "denied"
    if item.id in exported:
        return "exported"
    holds = desk.store.holds(item.id)
    if holds or item.decision == "hold":
        if holds and all(h["expired_at"] for h in holds):
            lifted = any(kind == "release_hold" for _, kind, _, _ in desk.store.actions(item.id))
            return "hold_released" if lifted else "hold_expired"
        return "held"
    if owner_denied(desk, item.id):
        return "denied"
    if decision.decision == "deny":
        return "expired" if "EXPIRED" in decision.codes else "denied"
    if decision.decision == "release":
        return "approved"
    return "waiting"


def outcome(desk: FootageDesk, item: StoredRequest, exported: set[str]) -> str:
    """How a request ended up, for the report: deny, release (something left), hold, or where it stands."""
    if item.decision == "deny":
        return "deny"
    if item.id in exported:
        return "release"
    if desk.store.holds(item.id):
        return "hold"
    if owner_denied(desk, item.id):
        return "deny"
    return desk.current(item.id)[2].decision


def report(desk: FootageDesk, since: datetime | None = None) -> dict[str, Any]:
    """The transparency report: counts by basis and outcome, exigent releases, holds, UNRATIFIED.
    `by_decision` counts outcomes: deny (at intake or by the owner), release (an export completed), hold,
    and owner_review / release for requests still waiting on the owner or on an export."""
    store = desk.store
    items = store.all(since) if store.exists() else []
    by_basis: Counter[str] = Counter()
    by_decision: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    exported_requests = {e["request"] for e in store.exports() if e["completed_at"]}
    exigent_released = unratified = 0
    for item in items:
        ended = outcome(desk, item, exported_requests)
        basis = item.basis or "unreadable"
        by_basis[basis] += 1
        by_decision[ended] += 1
        pairs[f"{basis}/{ended}"] += 1
        if basis == "exigent" and item.id in exported_requests:
            exigent_released += 1
            ratified = any(k == "ratify" for _, k, _, _ in store.actions(item.id))
            unratified += 0 if ratified else 1
    ids = {i.id for i in items}
    holds = [h for h in store.holds() if h["request"] in ids]
    return {
        "since": rfc3339(since) if since else None,
        "generated_at": rfc3339(desk.clock.now()),
        "requests": len(items),
        "by_basis": dict(sorted(by_basis.items())),
        "by_decision": dict(sorted(by_decision.items())),
        "by_basis_and_decision": dict(sorted(pairs.items())),
        "exports": sum(1 for e in store.exports() if e["completed_at"] and e["request"] in ids),
        "exigent_releases": exigent_released,
        "unratified": unratified,
        "holds": len(holds),
        "holds_active": sum(1 for h in holds if h["expired_at"] is None),
    }
