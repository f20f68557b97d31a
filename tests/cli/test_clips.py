"""`doorbell-edge clips list | show | copy` against a real store in an isolated state directory."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.cli import main
from edge.clock import FakeClock
from edge.footage.audit import AuditLog
from edge.recording.store import ClipStore
from tests.clips import write_test_clip
from tests.recording.helpers import T0


@pytest.fixture
def clips(state_dir: Path):
    store = ClipStore(state_dir, FakeClock(T0))
    frames = [np.full((64, 96, 3), 10 * i, np.uint8) for i in range(10)]
    a = write_test_clip(store, "front", T0, frames, fps=10, events=[("e1", "ring")])
    b = write_test_clip(store, "side", T0 + timedelta(minutes=1), frames, fps=10)
    store.hold(clip_ids=[a.id], until=T0 + timedelta(days=3650), reason="r", reference="W-1")
    return store, a, b


def test_list_json_and_filters(clips, capsys: pytest.CaptureFixture[str]) -> None:
    _, a, b = clips
    assert main(["clips", "list", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == [a.id, b.id]
    assert rows[0]["held"] is True and rows[0]["class"] == "ring" and rows[0]["seconds"] == 1.0
    assert main(["clips", "list", "--camera", "side"]) == 0
    out = capsys.readouterr().out
    assert b.id in out and a.id not in out
    assert main(["clips", "list", "--since", "2026-03-01T12:00:30Z", "--json"]) == 0
    assert [json.loads(x)["id"] for x in capsys.readouterr().out.splitlines()] == [b.id]


def test_show_reports_hash_snapshots_and_holds(clips, capsys: pytest.CaptureFixture[str]) -> None:
    _, a, _ = clips
    assert main(["clips", "show", a.id, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["sha256_ok"] is True and body["sha256"] == a.sha256
    assert [h["reference"] for h in body["holds"]] == ["W-1"]
    assert main(["clips", "show", "nope"]) == 1
    assert "no clip with id 'nope'" in capsys.readouterr().err


def test_copy_is_hash_checked_and_never_overwrites_silently(
    clips, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, a, _ = clips
    dest = tmp_path / "out"
    dest.mkdir()
    assert main(["clips", "copy", a.id, str(dest)]) == 0
    copied = dest / a.path.name
    assert copied.read_bytes() == a.path.read_bytes()
    assert main(["clips", "copy", a.id, str(copied)]) == 1
    assert "exists; use --force" in capsys.readouterr().err
    assert main(["clips", "copy", a.id, str(copied), "--force"]) == 0
    a.path.write_bytes(b"damaged")
    assert main(["clips", "copy", a.id, str(tmp_path / "x.mp4")]) == 1
    assert "does not match its recorded sha256" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()


def test_copy_is_audited_before_the_file_leaves_the_store(
    clips, state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, a, b = clips
    log = AuditLog(state_dir, FakeClock(T0))
    assert main(["clips", "copy", a.id, str(tmp_path / "a.mp4")]) == 0
    assert main(["clips", "copy", a.id, str(tmp_path / "a.mp4")]) == 1  # refused (exists): no record
    records = log.records()
    assert [r["kind"] for r in records] == ["owner_copy"]
    assert records[0]["data"] == {
        "clip": a.id,
        "camera": "front",
        "sha256": a.sha256,
        "dest": str((tmp_path / "a.mp4").resolve()),
    }
    assert log.verify().ok
    # an audit log that cannot be written stops the copy: nothing leaves without its record
    log.path.unlink()
    log.path.mkdir()
    capsys.readouterr()
    assert main(["clips", "copy", b.id, str(tmp_path / "b.mp4")]) == 1
    assert "cannot append to the audit log" in capsys.readouterr().err
    assert not (tmp_path / "b.mp4").exists()


def test_missing_store_is_a_clear_error(tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DOORBELL_EDGE_STATE_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("DOORBELL_EDGE_CONFIG", raising=False)
    assert main(["clips", "list"]) == 1
    assert "no clip store in" in capsys.readouterr().err


def test_show_prints_for_people_and_json_for_scripts(clips, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    _, a, _ = clips
    assert main(["clips", "show", a.id, "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert (body["id"], body["camera"], body["frames"], body["events"]) == (a.id, "front", 10, ["e1"])
    assert body["start"] == "2026-03-01T12:00:00.000Z" and body["sha256_ok"] is True

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert main(["clips", "show", a.id]) == 0
        out = capsys.readouterr().out
    finally:
        monkeypatch.undo()
        time.tzset()
    heads = [line for line in out.splitlines() if not line.startswith(" ")]
    fields = {line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in heads}
    assert len({len(line) - len(line.split(":", 1)[1].lstrip()) for line in heads}) == 1, "values in one column"
    assert fields["clip"] == a.id and fields["camera"] == "front"
    assert fields["start"] == "2026-03-01 13:00:00 CET (12:00:00 UTC)"
    assert fields["length"] == "1.0 s, 10 frames" and fields["events"] == "1"  # counts, not the event ids
    assert fields["held"].startswith("W-1 until ") and fields["sha256"].endswith("matches the file")


def test_copy_is_private_whatever_the_umask(clips, tmp_path: Path) -> None:
    _, a, _ = clips
    old = os.umask(0o022)  # an ordinary login's umask: copyfile made the footage world-readable (0644)
    try:
        assert main(["clips", "copy", a.id, str(tmp_path / "a.mp4")]) == 0
        assert main(["clips", "copy", a.id, str(tmp_path / "a.mp4"), "--force"]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "a.mp4").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "a.mp4").read_bytes() == a.path.read_bytes()


def test_a_copy_that_fails_after_its_record_is_audited_as_failed(
    clips, state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The audit record comes first (nothing leaves without it); when the copy then fails (here: a real tmpfs
    as the destination, full), a second record says so, with the error."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("this test mounts a tmpfs and must run as root in CI")
        pytest.skip("mounting a tmpfs needs root")
    _, a, _ = clips
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(small)], check=True)
    try:
        (small / "filler").write_bytes(b"\0" * 4096)  # the stick is full
        assert main(["clips", "copy", a.id, str(small)]) == 1
        assert "No space left on device" in capsys.readouterr().err
        assert [p.name for p in small.iterdir()] == ["filler"]  # no partial file left behind
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)
    log = AuditLog(state_dir, FakeClock(T0))
    copy, failed = log.records()
    assert copy["kind"] == "owner_copy" and failed["kind"] == "owner_copy_failed"
    assert failed["data"]["clip"] == a.id and failed["data"]["dest"] == copy["data"]["dest"]
    assert "No space left on device" in failed["data"]["error"]
    assert log.verify().ok


def test_list_prints_local_time_with_utc_in_brackets(clips, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """As the README says of every list command; --json keeps RFC 3339 UTC."""
    import time

    _, a, b = clips
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert main(["clips", "list"]) == 0
        out = capsys.readouterr().out
        assert main(["clips", "list", "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    finally:
        monkeypatch.undo()
        time.tzset()
    header, first, second = out.splitlines()
    assert header.split()[2] == "START"
    assert "2026-03-01 13:00:00 CET (12:00:00 UTC)" in first and a.id in first
    assert "2026-03-01 13:01:00 CET (12:01:00 UTC)" in second and b.id in second
    assert first.index("CET") == second.index("CET")  # one column
    assert rows[0]["start"] == "2026-03-01T12:00:00.000Z"
