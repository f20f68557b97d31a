"""Owner actions on footage requests: submit, list, show, approve/narrow, deny, ratify, export, holds, the report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.errors import RequestError
from edge.footage.approval import Narrowing
from edge.footage.desk import FootageDesk
from edge.footage.export_run import ExportResult
from edge.footage.policy import Decision
from edge.footage.redact import Box


@dataclass(frozen=True)
class Submitted:
    """A recorded request, its decision at intake, and its export when a verified warrant was auto-released."""

    request: str
    decision: Decision
    export: ExportResult | None = None


@dataclass(frozen=True)
class RequestRow:
    """One line of the request list: where the request stands (see edge.footage.report.state) and why."""

    id: str
    received_at: str
    agency: str | None
    request_id: str | None
    basis: str | None
    state: str
    decision: str
    codes: tuple[str, ...]
    verified: bool = False  # its signature checked against the configured agency's key at intake

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "received_at": self.received_at, "agency": self.agency,
                "request_id": self.request_id, "basis": self.basis, "state": self.state,
                "decision": self.decision, "codes": list(self.codes), "verified": self.verified}


@dataclass(frozen=True)
class AgencyName:
    """Who sent a request, as the owner should read it. `name` is the one the owner configured for the agency id
    (footage_requests.agencies.<id>.name: the owner typed it and holds that agency's key), else the bare id.
    `says` is the document's own name for itself when it differs from `name`: self-declared, anyone can write
    anything there, so it is only ever shown as what the document says."""

    id: str | None
    name: str
    configured: bool  # the id is one of the configured agencies
    verified: bool  # the signature checked against that agency's key at intake
    says: str | None = None

    @property
    def text(self) -> str:
        """One line: "Metro Police", "Metro Police (says it is: Metro Police Fraud Unit)", "unknown agency x-pd",
        "Metro Police (signature not verified)"."""
        notes = [] if self.verified or not self.configured else ["signature not verified"]
        if self.says:
            notes.append(f"says it is: {self.says}")
        return self.name + (f" ({'; '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class RequestDetails:
    """One request as the owner is shown it; `document_sha256` is what approve/narrow take back as seen_sha256."""

    id: str
    state: str | None
    document_sha256: str
    summary: dict[str, Any]  # edge.footage.report.summary, plus "state"


def evaluate(desk: FootageDesk, raw: bytes, now: datetime | None = None) -> Decision:
    """The decision a document would get; records nothing."""
    return desk.evaluate(raw, now)


def submit(desk: FootageDesk, raw: bytes) -> Submitted:
    """Record a request (audited) and judge it; a verified warrant the owner's config releases at intake is
    exported at once (the owner chose this in the config)."""
    request, decision = desk.submit(raw)
    if decision.decision == "release":
        return Submitted(request, decision, desk.export(request))
    return Submitted(request, decision)


def list_requests(desk: FootageDesk) -> list[RequestRow]:
    """Every request with its state and current decision, after the sweep (lapses and hold expiries)."""
    desk.sweep()
    if not desk.store.exists():
        return []
    return [RequestRow(r["id"], r["received_at"], r["agency"], r["request_id"], r["basis"], r["state"],
                       r["decision"], tuple(r["codes"]), bool(r["verified"])) for r in desk.rows()]


def agency_name(desk: FootageDesk, agency_id: str | None, verified: bool, says: str | None = None) -> AgencyName:
    """The name to show for a request's agency (`requests show`, the page's list and card): the configured name
    of `agency_id`, never the document's; the document's own name `says` kept only when it differs."""
    agency = desk.config.footage_requests.agencies.get(agency_id or "")
    if agency is not None:
        name = agency.name
    elif agency_id:
        name = f"unknown agency {agency_id}"
    else:
        name = "an unknown sender"
    claimed = (says or "").strip()
    return AgencyName(agency_id, name, agency is not None, verified,
                      claimed if claimed and claimed.casefold() != name.casefold() else None)


def request_agency(desk: FootageDesk, details: RequestDetails) -> AgencyName:
    """agency_name() of a shown request: its agency id, whether it verified, and the document's own name."""
    summary = details.summary
    doc_agency = (summary.get("document") or {}).get("agency") or {}
    return agency_name(desk, summary.get("agency"), bool(summary.get("verified")), doc_agency.get("name"))


def show(desk: FootageDesk, request: str) -> RequestDetails:
    """One request: the document, both decisions, owner actions, exports, holds and its state."""
    desk.sweep()
    summary = desk.summary(request)
    state = next((row.get("state") for row in desk.rows() if row["id"] == request), None)
    if state is not None and "state" not in summary:
        summary["state"] = state  # where it stands, as the list says it
    return RequestDetails(request, state, str(summary["document_sha256"]), summary)


def approve(
    desk: FootageDesk,
    request: str,
    *,
    narrowing: Narrowing | None = None,
    unblur: Sequence[str] = (),
    attest_original: bool = False,
    seen_sha256: str | None = None,
) -> Decision:
    """The owner releases the request (or the narrower part `narrowing` names; never wider). `seen_sha256`: the
    document hash the owner was shown (RequestDetails.document_sha256); RequestChanged when it differs."""
    scope = narrowing or Narrowing()
    return desk.approve(request, clips=scope.clips, cameras=scope.cameras, data=scope.data, unblur=unblur,
                        attest_original=attest_original, seen_sha256=seen_sha256)


def narrow(
    desk: FootageDesk,
    request: str,
    narrowing: Narrowing,
    *,
    unblur: Sequence[str] = (),
    attest_original: bool = False,
    seen_sha256: str | None = None,
) -> Decision:
    """Approve only part of a request: some clips, cameras or data kinds (at least one of them given)."""
    if narrowing.clips is None and narrowing.cameras is None and narrowing.data is None:
        raise RequestError(f"narrowing request {request} needs clips, cameras or data kinds to keep")
    return approve(desk, request, narrowing=narrowing, unblur=unblur, attest_original=attest_original,
                   seen_sha256=seen_sha256)


def deny(desk: FootageDesk, request: str, reason: str) -> Decision:
    return desk.deny(request, reason)


def ratify(desk: FootageDesk, request: str, reference: str) -> Decision:
    """Record the warrant or case confirmation of an emergency release."""
    return desk.ratify(request, reference)


def export(desk: FootageDesk, request: str, out_dir: Path | None = None, *, include_untrusted: bool = False,
           keep: Box | None = None) -> ExportResult:
    """Write the signed, encrypted bundle of a released request (audit first; edge.footage.export_run)."""
    return desk.export(request, out_dir, include_untrusted=include_untrusted, keep=keep)


def renew_hold(desk: FootageDesk, request: str) -> str | None:
    """Renew a preservation hold once more; the clip store's hold id (None: no clips in scope)."""
    return desk.renew_hold(request)


def release_hold(desk: FootageDesk, request: str, reason: str = "") -> list[str]:
    """Lift a preservation hold (audited): its clips are subject to retention again. The hold ids lifted."""
    return desk.release_hold(request, reason)


def report(desk: FootageDesk, since: datetime | None = None) -> dict[str, Any]:
    """The transparency report (edge.footage.report.report), after the sweep."""
    desk.sweep()
    return desk.report(since)
