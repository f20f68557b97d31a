"""Issue 14's review: two sweeps at once audit one hold's expiry (or approval lapse) once, and a sweep with an
unreadable hold file audits nothing until it is readable.

The race: FootageDesk.sweep() checked "expired in the hold store and not yet audited" and then appended
hold_expired with no lock between the check and the record (now one sweep at a time: footage/sweep.lock). The
daemon runs it from two threads of one process: housekeeping (every 60 s) and the owner's page (every list, card
and decision calls edge.actions.footage, which sweeps first), besides any CLI command."""

from __future__ import annotations

import contextlib
import shutil
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.recording.holds import HOLDS_NAME
from edge.recording.store import ClipStore
from tests.clips import write_test_clip
from tests.footage.factory import NOW, document, signed
from tests.footage.test_export_e2e import FPS, WIN_START, frames
from tests.footage.test_service import desk_for


def test_two_sweeps_at_once_audit_a_hold_expiry_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    desk.submit(signed(document("preservation")))
    clock.advance(timedelta(days=91).total_seconds())
    assert len(store.expire_holds()) == 1  # the recorder's sweeper ran first

    # Both sweeps reach the record before either writes it (a fix that serialises the sweeps makes the first
    # wait out the barrier's timeout alone, and the second then finds the expiry audited).
    barrier = threading.Barrier(2, timeout=5)
    real_append = AuditLog.append

    def append(self: AuditLog, kind: str, **data: Any) -> dict[str, Any]:
        if kind == "hold_expired":
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
        return real_append(self, kind, **data)

    monkeypatch.setattr(AuditLog, "append", append)
    page, housekeeping = desk_for(tmp_path, clock, clips=store), desk_for(tmp_path, clock, clips=store)
    errors: list[BaseException] = []

    def sweep(d: Any) -> None:
        try:
            d.sweep()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(d,)) for d in (page, housekeeping)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    kinds = [r["kind"] for r in desk.audit.records()]
    assert kinds.count("hold_expired") == 1, kinds


def test_two_sweeps_at_once_audit_an_approval_lapse_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock(NOW)
    desk = desk_for(tmp_path, clock)
    approved, decision = desk.submit(signed(document("consent_request")))
    assert decision.decision == "owner_review"
    desk.approve(approved)
    clock.advance((desk.policy.rules.approval_valid_hours + 1) * 3600)

    barrier = threading.Barrier(2, timeout=5)
    real_append = AuditLog.append

    def append(self: AuditLog, kind: str, **data: Any) -> dict[str, Any]:
        if kind == "expiry":  # both sweeps would reach the record here before either wrote it
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait()
        return real_append(self, kind, **data)

    monkeypatch.setattr(AuditLog, "append", append)
    errors: list[BaseException] = []

    def sweep(d: Any) -> None:
        try:
            d.sweep()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sweep, args=(desk_for(tmp_path, clock),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    kinds = [r["kind"] for r in desk.audit.records()]
    assert kinds.count("expiry") == 1, kinds


def test_a_sweep_with_an_unreadable_hold_file_audits_the_expiry_once_it_is_restored(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    store = ClipStore(tmp_path, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(tmp_path, clock, clips=store)
    desk.submit(signed(document("preservation")))
    backup = tmp_path / "holds.backup"
    shutil.copy2(tmp_path / HOLDS_NAME, backup)
    (tmp_path / HOLDS_NAME).write_bytes(b"\xff" * 4096)
    clock.advance(timedelta(days=91).total_seconds())

    assert desk.sweep() == []  # no error, nothing audited, nothing expired
    assert "hold_expired" not in [r["kind"] for r in desk.audit.records()]
    shutil.copy2(backup, tmp_path / HOLDS_NAME)
    assert any("expired" in line for line in desk.sweep())
    desk.sweep()
    assert [r["kind"] for r in desk.audit.records()].count("hold_expired") == 1
