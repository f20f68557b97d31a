"""The audit chain: any edit, deletion, reordering or truncation is caught and the first bad record named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.errors import StorageError
from edge.footage.audit import AuditLog, verify_log

from .factory import NOW


def _log(tmp_path: Path, n: int = 5) -> AuditLog:
    audit = AuditLog(tmp_path, FakeClock(NOW))
    for i in range(n):
        audit.append("intake", request=f"fr-{i}", sha256="ab" * 32, note="naïve ✓")
    return audit


def test_intact_chain_verifies(tmp_path: Path) -> None:
    audit = _log(tmp_path)
    result = audit.verify()
    assert result.ok and result.records == 5
    assert (tmp_path / "audit" / "footage.jsonl").stat().st_mode & 0o777 == 0o600
    assert [r["seq"] for r in audit.records()] == [1, 2, 3, 4, 5]


def test_every_flipped_byte_names_its_record(tmp_path: Path) -> None:
    audit = _log(tmp_path, 3)
    original = audit.path.read_bytes()
    starts = [0, *[i + 1 for i, b in enumerate(original) if b == 0x0A][:-1]]
    for pos in range(len(original)):
        data = bytearray(original)
        data[pos] ^= 0x01
        audit.path.write_bytes(bytes(data))
        result = audit.verify()
        expected = max(i for i, s in enumerate(starts, start=1) if s <= pos)
        assert not result.ok, pos
        assert result.bad_record == expected, (pos, result)
    audit.path.write_bytes(original)
    assert audit.verify().ok


def test_deleted_record(tmp_path: Path) -> None:
    audit = _log(tmp_path)
    lines = audit.path.read_bytes().splitlines(keepends=True)
    audit.path.write_bytes(b"".join(lines[:2] + lines[3:]))
    result = audit.verify()
    assert (result.ok, result.bad_record) == (False, 3)


def test_reordered_records(tmp_path: Path) -> None:
    audit = _log(tmp_path)
    lines = audit.path.read_bytes().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    audit.path.write_bytes(b"".join(lines))
    assert audit.verify().bad_record == 2


def test_truncated_whole_records(tmp_path: Path) -> None:
    audit = _log(tmp_path)
    lines = audit.path.read_bytes().splitlines(keepends=True)
    audit.path.write_bytes(b"".join(lines[:3]))
    result = audit.verify()
    assert not result.ok and result.bad_record == 4 and "truncated" in result.problem


def test_truncated_mid_line(tmp_path: Path) -> None:
    audit = _log(tmp_path)
    data = audit.path.read_bytes()
    audit.path.write_bytes(data[:-10])
    result = audit.verify()
    assert not result.ok and result.bad_record == 5
    with pytest.raises(StorageError, match="incomplete"):
        audit.append("intake", request="x")


def test_rewritten_last_record_caught_by_head(tmp_path: Path) -> None:
    audit = _log(tmp_path)
    lines = audit.path.read_bytes().splitlines(keepends=True)
    forged = json.loads(lines[-1])
    forged["data"]["request"] = "forged"
    from edge.footage.audit import _canonical, record_hash

    forged["hash"] = record_hash(forged)
    audit.path.write_bytes(b"".join(lines[:-1]) + _canonical(forged) + b"\n")
    result = audit.verify()
    assert not result.ok and result.bad_record == 5


def test_empty_and_missing(tmp_path: Path) -> None:
    assert verify_log(tmp_path / "none.jsonl").ok
    audit = _log(tmp_path, 2)
    audit.path.unlink()
    assert not audit.verify().ok


def test_unknown_kind_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        AuditLog(tmp_path, FakeClock(NOW)).append("rewrite_history")


def test_record_format_is_golden(tmp_path: Path) -> None:
    """The on-disk format is a contract with anyone verifying a log later: pinned byte for byte."""
    from datetime import UTC, datetime

    audit = AuditLog(tmp_path, FakeClock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC)))
    audit.append("intake", request="fr-00000001", sha256="ab" * 32, bytes=1234, agency="metro-pd",
                 request_id="MPD-2026-0001", basis="warrant")
    audit.append("owner_approve", request="fr-00000001", clips=None, cameras=None, data=["video"], unblur=[],
                 attest_original=False, by="owner")
    golden = Path(__file__).parent / "golden" / "audit_records.jsonl"
    assert audit.path.read_bytes() == golden.read_bytes()
    assert verify_log(golden).ok
