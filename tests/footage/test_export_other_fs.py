"""Exports to a folder on another file system (`requests export --out /media/stick`), on a real tmpfs mount: the
bundle is sealed beside its destination and renamed there, so it works across devices; a full stick fails before
the commit (approval unused, nothing left on it); a SIGKILL at each export step leaves exactly one bundle or none;
a bundle that recovery cannot move is one clear StorageError naming the path, never a raw OSError.

Needs root (mount); it skips without root, except under CI=true where it fails instead."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.errors import RequestError, StorageError
from edge.footage.desk import FootageDesk
from edge.footage.export_run import bundle_part
from edge.footage.exporter import verify_bundle
from edge.footage.keys import device_key, public_key_b64
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .crash import killed_at
from .factory import AGENCY_BOX, NOW, document, signed
from .test_crash_points import EXPORT_POINTS
from .test_export_e2e import FPS, WIN_START, frames
from .test_service import desk_for


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def stick(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MB tmpfs standing in for a USB stick: another file system than the state dir."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("these tests mount file systems and must run as root in CI")
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "stick"
    mount.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "tmpfs", str(mount))
    try:
        yield mount
    finally:
        _run("umount", "-l", str(mount))


def _released(state: Path, clock: FakeClock) -> tuple[FootageDesk, str]:
    store = ClipStore(state, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(state, clock, clips=store)
    request, _ = desk.submit(signed(document("warrant")))
    desk.approve(request)
    return desk, request


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size) == size:
                    pass
    finally:
        os.close(fd)


def _check_one_bundle(desk: FootageDesk, state: Path, stick: Path, request: str) -> None:
    assert os.stat(state).st_dev != os.stat(stick).st_dev
    (bundle,) = [p for p in stick.iterdir() if p.name != "filler"]  # no hidden .part beside it
    assert bundle.name.endswith(".bundle") and bundle.stat().st_mode & 0o777 == 0o600
    assert verify_bundle(bundle.read_bytes(), AGENCY_BOX, public_key_b64(device_key(state))).ok
    assert [e["path"] for e in desk.store.exports(request) if e["completed_at"]] == [str(bundle)]
    assert not list((state / "footage" / "exports" / ".partial").iterdir())
    assert desk.rows()[0]["state"] == "exported"
    ok, message = desk.verify_audit()
    assert ok, message


def test_export_to_another_file_system(tmp_path: Path, stick: Path) -> None:
    clock = FakeClock(NOW)
    desk, request = _released(tmp_path / "state", clock)
    result = desk.export(request, out_dir=stick)
    assert result.path.parent == stick
    _check_one_bundle(desk, tmp_path / "state", stick, request)


def test_a_full_stick_fails_before_the_commit_and_the_approval_stays_unused(tmp_path: Path, stick: Path) -> None:
    state, clock = tmp_path / "state", FakeClock(NOW)
    desk, request = _released(state, clock)
    _fill(stick)
    with pytest.raises(StorageError, match=r"nothing was released; the approval is unused.*No space left"):
        desk.export(request, out_dir=stick)
    assert [p.name for p in stick.iterdir()] == ["filler"]  # no sealed remains on the stick
    assert desk.rows()[0]["state"] != "exported"
    assert not [r for r in desk.audit.records() if r["kind"] == "export_complete"]
    (stick / "filler").unlink()
    desk_for(state, clock, clips=ClipStore(state, clock)).export(request, out_dir=stick)  # room again: it works
    _check_one_bundle(desk, state, stick, request)


@pytest.mark.parametrize(("point", "committed"), EXPORT_POINTS)
def test_kill_during_an_export_to_another_file_system(tmp_path: Path, stick: Path, point: str,
                                                      committed: bool) -> None:
    state, clock = tmp_path / "state", FakeClock(NOW)
    _, request = _released(state, clock)
    killed_at(point, lambda: desk_for(state, clock, clips=ClipStore(state, clock)).export(request, out_dir=stick))
    retry = desk_for(state, clock, clips=ClipStore(state, clock))
    if committed:
        with pytest.raises(RequestError, match="APPROVAL_USED"):
            retry.export(request, out_dir=stick)  # recovery moves the sealed bundle into place first
    else:
        retry.export(request, out_dir=stick)  # the first attempt's hidden part on the stick is removed
    _check_one_bundle(retry, state, stick, request)


def test_recovery_that_cannot_move_the_bundle_names_the_path(tmp_path: Path, stick: Path) -> None:
    state, clock = tmp_path / "state", FakeClock(NOW)
    _, request = _released(state, clock)
    killed_at("export:after-store-complete",
              lambda: desk_for(state, clock, clips=ClipStore(state, clock)).export(request, out_dir=stick))
    (part,) = stick.iterdir()
    assert part.name.startswith(".") and part.name.endswith(".bundle.part")
    _run("mount", "-o", "remount,ro", str(stick))  # the stick became read-only
    retry = desk_for(state, clock, clips=ClipStore(state, clock))
    with pytest.raises(StorageError) as caught:
        retry.export(request, out_dir=stick)
    message = str(caught.value)
    assert f"cannot be moved into place at {stick}/" in message and f"kept at {part}" in message
    assert "Read-only file system" in message
    assert retry.sweep() == []  # housekeeping and the list commands still work (the error is logged)
    assert retry.rows()[0]["state"] == "exported"
    _run("mount", "-o", "remount,rw", str(stick))
    with pytest.raises(RequestError, match="APPROVAL_USED"):
        retry.export(request, out_dir=stick)
    _check_one_bundle(retry, state, stick, request)


def test_a_part_an_older_version_left_in_the_state_dir_is_copied_across(tmp_path: Path, stick: Path) -> None:
    """Older versions sealed the bundle in footage/exports/.partial/<export>/ and renamed it across (EXDEV)."""
    state, clock = tmp_path / "state", FakeClock(NOW)
    desk, request = _released(state, clock)
    killed_at("export:after-store-complete",
              lambda: desk_for(state, clock, clips=ClipStore(state, clock)).export(request, out_dir=stick))
    (export,) = desk.store.exports(request)
    final = Path(export["path"])
    legacy = state / "footage" / "exports" / ".partial" / export["id"] / (final.name + ".part")
    shutil.move(bundle_part(final), legacy)
    retry = desk_for(state, clock, clips=ClipStore(state, clock))
    with pytest.raises(RequestError, match="APPROVAL_USED"):
        retry.export(request, out_dir=stick)
    _check_one_bundle(retry, state, stick, request)
