"""`audit verify`'s second half: the audit log and the request store cross-checked both ways."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from edge.clock import rfc3339
from edge.footage.audit import KINDS, AuditLog
from edge.footage.store import RequestStore, StoredRequest

# The request store's owner actions and the audit record kind each must have.
ACTION_RECORDS = {"approve": "owner_approve", "deny": "owner_deny", "ratify": "ratify", "expiry": "expiry",
                  "export_complete": "export_complete"}
# Audit kinds the store has a row for: one of these without its row is reported (a note, not a failure).
STORED_KINDS = frozenset({"owner_approve", "owner_deny", "ratify", "expiry", "unblur", "attestation",
                          "export_start", "export_complete", "hold", "hold_renew", "hold_expired",
                          "hold_release"})


@dataclass
class CrossCheck:
    """What `audit verify` found comparing the log with the request store: `problems` are steps the store
    shows that the log does not (each a failure); `notes` are audited steps the store does not show (what a
    crash or a failed write between the two leaves, or a row deleted from the store)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _action_kinds(kind: str) -> tuple[str, ...]:
    """The audit kinds a store action may be recorded under (a new action kind needs no table entry when its
    record has the same name, `owner_` in front, or `hold_release` / `release_hold` spelt either way)."""
    if kind in ACTION_RECORDS:
        return (ACTION_RECORDS[kind],)
    base = kind.replace("-", "_")
    out = [base, f"owner_{base}"]
    if base in ("release_hold", "hold_release"):
        out += ["release_hold", "hold_release"]
    return tuple(dict.fromkeys(k for k in out if k in KINDS))


class _Ledger:
    """The log's records per (request, kind), in log order, each usable once."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.records = [r for r in records if isinstance(r.get("data"), dict)]
        self.used: set[int] = set()

    def take(self, kinds: tuple[str, ...], request: str, match: Callable[[dict[str, Any]], bool],
             after: int = 0, *, shared: bool = False) -> dict[str, Any] | None:
        """The first unused matching record, now used; `shared`: also one already used (a record two store rows
        both point at, such as export_complete: the export's row and the approval's use)."""
        for record in self.records:
            seq = int(record.get("seq", 0))
            if (seq > after and (shared or seq not in self.used) and record.get("kind") in kinds
                    and record["data"].get("request") == request and match(record["data"])):
                self.used.add(seq)
                return record
        return None

    def unused(self, kinds: tuple[str, ...], request: str) -> list[int]:
        return [int(r["seq"]) for r in self.records if r.get("kind") in kinds
                and r["data"].get("request") == request and int(r["seq"]) not in self.used]


def _same(stored: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """An audit record matches a store row when every field both carry is equal (either side may carry more:
    the record its request id, the row a field a later version added)."""
    return lambda audited: all(audited[k] == v for k, v in stored.items() if k in audited)


def _codes(reasons: Iterable[Any]) -> list[str]:
    return [str(r.get("code")) for r in reasons if isinstance(r, dict)]


class _Check:
    """One cross-check: the ledger of records, and the problems found, each with the store time it is at."""

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self.ledger = _Ledger(records)
        self.found: list[tuple[str, str]] = []  # (store time, problem)

    def missing(self, at: str, text: str, kinds: tuple[str, ...], request: str) -> None:
        stray = self.ledger.unused(kinds, request)
        hint = f" (record {stray[0]} is a {kinds[0]} of this request that does not match it)" if stray else ""
        self.found.append((at, f"request {request}: {text}{hint}"))

    def request(self, item: StoredRequest) -> None:
        """Its intake record (binding the document) and its decision record (the outcome and its reasons)."""
        at = rfc3339(item.received_at)
        intake = self.ledger.take(("intake",), item.id, lambda d: True)
        actual = hashlib.sha256(item.raw).hexdigest()
        if intake is None:
            self.missing(at, "is in the request store but its intake is not in the log (inserted, or the log was "
                             "truncated or replaced)", ("intake",), item.id)
        elif not item.sha256 == str(intake["data"].get("sha256")) == actual:
            # The intake record binds the document: another one swapped into the store (or either hash edited)
            # would change what an approval and an export are judged on.
            received = str(intake["data"].get("sha256"))
            self.found.append((at, f"request {item.id}: the document in the request store (sha256 {actual[:16]}..., "
                                   f"recorded as {item.sha256[:16]}...) is not the one its intake record "
                                   f"{intake['seq']} received (sha256 {received[:16]}...)"))
        codes = [str(r.get("code")) for r in item.reasons]
        decided = self.ledger.take(("decision",), item.id, lambda d: True)
        if decided is None:
            self.missing(at, "is in the request store but its decision is not in the log", ("decision",), item.id)
        elif decided["data"].get("decision") != item.decision or _codes(decided["data"].get("reasons") or ()) != codes:
            # The decision record is what the owner and the agency are told was decided: one re-chained to another
            # outcome (or its reasons edited) must not pass because a record of that kind exists.
            audited = decided["data"]
            said = ",".join(_codes(audited.get("reasons") or ()))
            self.found.append((at, f"request {item.id}: its decision record {decided['seq']} says "
                                   f"{audited.get('decision')} ({said or 'no reasons'}), but the request store says "
                                   f"{item.decision} ({','.join(codes) or 'no reasons'})"))

    def action(self, request: str, seq: int, kind: str, at: str, data: dict[str, Any]) -> None:
        """An owner action's record; an approval's unblur and attestation records after it."""
        kinds = _action_kinds(kind)
        of = f" of export {data['export']}" if data.get("export") else ""
        what = f"owner action {seq} ({kind}{of}, {at})"
        if not kinds:
            self.found.append((at, f"request {request}: {what} is a kind the audit log has no record for"))
            return
        record = self.ledger.take(kinds, request, _same(data))
        if record is None:
            self.missing(at, f"{what} is in the request store but not in the log (inserted into the store, or its "
                             "record removed from the log)", kinds, request)
            return
        if kind != "approve":
            return
        for clip in data.get("unblur") or ():
            if self.ledger.take(("unblur",), request, _same({"clip": clip}), after=int(record["seq"])) is None:
                self.missing(at, f"{what} unblurs clip {clip} but the log has no unblur record for it (removed)",
                             ("unblur",), request)
        if data.get("attest_original") and self.ledger.take(("attestation",), request, lambda d: True,
                                                            after=int(record["seq"])) is None:
            self.missing(at, f"{what} attests the paper original but the log has no attestation record (removed)",
                         ("attestation",), request)

    def export(self, row: dict[str, Any]) -> None:
        at, request = str(row["started_at"]), str(row["request"])
        if self.ledger.take(("export_start",), request, _same({"export": row["id"]})) is None:
            self.missing(at, f"export {row['id']} (started {at}) is in the request store but its export_start record "
                             "is not in the log (removed)", ("export_start",), request)
        if row.get("completed_at") and self.ledger.take(
                ("export_complete",), request, _same({"export": row["id"], "sha256": row["sha256"]}),
                shared=True) is None:
            self.missing(str(row["completed_at"]), f"export {row['id']} (completed {row['completed_at']}, sha256 "
                         f"{str(row['sha256'])[:16]}...) is in the request store but its export_complete record is "
                         "not in the log (removed)", ("export_complete",), request)

    def hold(self, hold: dict[str, Any]) -> None:
        request = str(hold["request"])
        clips = json.loads(hold["clips"]) if isinstance(hold["clips"], str) else hold["clips"]
        kind = "hold_renew" if hold["renewal"] else "hold"
        if self.ledger.take((kind,), request, _same({"clips": clips, "until": hold["until"],
                                                      "renewal": hold["renewal"]})) is None:
            self.missing(str(hold["until"]), f"hold {hold['hold_id']} (renewal {hold['renewal']}, until "
                         f"{hold['until']}) is in the request store but its {kind} record is not in the log "
                         "(removed)", (kind,), request)
        ended = self.ledger.take(("hold_expired",), request, _same({"hold": hold["hold_id"]})) is not None or any(
            r.get("kind") == "hold_release" and r["data"].get("request") == request
            and hold["hold_id"] in (r["data"].get("holds") or ()) for r in self.ledger.records)  # lifted by the owner
        if hold.get("expired_at") and not ended:
            self.missing(str(hold["expired_at"]), f"hold {hold['hold_id']} expired at {hold['expired_at']} in the "
                         "request store but neither a hold_expired nor a hold_release record for it is in the log "
                         "(removed)", ("hold_expired", "hold_release"), request)

    def result(self) -> CrossCheck:
        result = CrossCheck(problems=[text for _, text in sorted(self.found, key=lambda p: p[0])])
        for record in self.ledger.records:
            seq = int(record.get("seq", 0))
            if record.get("kind") in STORED_KINDS and seq not in self.ledger.used:
                result.notes.append(f"record {seq} ({record['kind']}, request {record['data'].get('request')}): "
                                    "audited, but the request store has no such step (interrupted after its audit "
                                    "record, so it never took effect; or its row was deleted from the store)")
        return result


def cross_check(records: Iterable[dict[str, Any]], store: RequestStore) -> CrossCheck:
    """Every step the request store shows - each request, owner approval (with its unblurs and attestation),
    denial, ratification, lapse, export start and completion, hold, renewal, expiry and release - has its
    audit record, matched in log order, each record used once. The first problem is the earliest in the
    store's own time order; a row inserted straight into the store, or a record removed from the log and the
    chain re-hashed, shows here."""
    check = _Check(records)
    for item in store.all():
        check.request(item)
        for seq, kind, when, data in store.actions(item.id):
            check.action(item.id, seq, kind, rfc3339(when), data)
    for row in store.exports():
        check.export(row)
    for hold in store.holds():
        check.hold(hold)
    return check.result()


def verify_with_store(audit: AuditLog, store: RequestStore | None) -> tuple[bool, str]:
    """`audit verify`: the chain and head file, then the cross-check with the request store (when there is
    one). (ok, message): the message names the first bad record, or the first step the store shows that the log
    does not; audited steps the store lacks are listed as notes under an intact result."""
    result = audit.verify()
    if not result.ok:
        return False, result.message(audit.path)
    message = result.message(audit.path)
    if store is None or not store.exists():
        return True, message
    check = cross_check(audit.records(), store)
    if check.problems:
        more = f" ({len(check.problems) - 1} more disagreement(s) after it)" if len(check.problems) > 1 else ""
        if result.records == 0:
            return False, (f"{audit.path}: record 1: missing: the log is empty or gone, but the request store "
                           f"remembers steps (deleted or replaced): {check.problems[0]}{more}")
        return False, f"{audit.path}: the request store and the log disagree: {check.problems[0]}{more}"
    message += f"; agrees with the request store {store.path}"
    for note in check.notes:
        message += f"\nnote: {note}"
    return True, message
