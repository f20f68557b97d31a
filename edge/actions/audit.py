"""Owner actions on the footage audit log: verify it ("verified up to entry N") and the transparency report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge.actions import footage
from edge.footage.audit import check_against
from edge.footage.desk import FootageDesk


@dataclass(frozen=True)
class WitnessedHead:
    """A head seen earlier (a signed checkpoint, the retained MQTT head, SEQ:HASH): `what` names it for people."""

    seq: int
    digest: str
    what: str


@dataclass(frozen=True)
class WitnessCheck:
    head: WitnessedHead
    ok: bool
    message: str


@dataclass(frozen=True)
class AuditVerification:
    """ok: the chain, the head file, every witnessed head and the cross-check with the request store all hold.
    `verified_up_to`: the last entry (1-based) up to which the chain itself is intact; `torn`: the last record
    is torn (a power cut mid-append: `audit repair` moves it aside)."""

    ok: bool
    message: str
    verified_up_to: int
    records: int
    torn: bool
    witnessed: tuple[WitnessCheck, ...] = ()

    @property
    def summary(self) -> str:
        return f"verified up to entry {self.verified_up_to}" if self.ok else \
            f"NOT verified: the chain holds up to entry {self.verified_up_to}"


def verify(desk: FootageDesk, witnessed: Sequence[WitnessedHead] = ()) -> AuditVerification:
    """Check the log against each witnessed head, then its hash chain and head file, then both ways against the
    request store (edge.footage.crosscheck). Reads only."""
    checks = []
    for head in witnessed:
        result = check_against(desk.audit.path, head.seq, head.digest)
        text = (f"{desk.audit.path}: holds record {head.seq} with the hash {head.what} gives it" if result.ok
                else f"{result.message(desk.audit.path)} (against {head.what})")
        checks.append(WitnessCheck(head, result.ok, text))
    chain = desk.audit.verify()
    ok, message = desk.verify_audit()
    ok = ok and all(c.ok for c in checks)
    intact = chain.records if chain.ok else max((chain.bad_record or 1) - 1, 0)
    return AuditVerification(ok, message, intact, chain.records, (not ok) and desk.audit.torn(), tuple(checks))


def transparency_report(desk: FootageDesk, since: datetime | None = None) -> dict[str, Any]:
    """Counts by legal basis and outcome, exports, exigent releases (UNRATIFIED), holds: the report the owner
    may publish. The same as edge.actions.footage.report."""
    return footage.report(desk, since)
