"""The state dir's modes (edge/permissions.py): made private at creation whatever the umask, narrowed at start
(never widened; the control socket stays 0660, symlinks are not followed), and the acting user from passwd."""

from __future__ import annotations

import os
import pwd
import socket
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.clock import FakeClock
from edge.footage.store import RequestStore
from edge.permissions import make_state_private, private_dir, private_file, real_user
from edge.recording.store import ClipStore
from tests.clips import write_test_clip


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the worst case: nothing narrowed by the umask
    try:
        yield
    finally:
        os.umask(old)


def test_created_private_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    assert mode(private_dir(tmp_path / "a" / "b")) == 0o700 and mode(tmp_path / "a") == 0o700
    assert mode(private_file(tmp_path / "a" / "f")) == 0o600
    (tmp_path / "a" / "f").chmod(0o644)
    private_file(tmp_path / "a" / "f")  # an existing file is narrowed, its content kept
    assert mode(tmp_path / "a" / "f") == 0o600


def test_clip_store_and_request_store_files_are_private_at_creation(tmp_path: Path, open_umask: None) -> None:
    import numpy as np

    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    store = ClipStore(state, FakeClock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC)))
    frames = [np.full((48, 64, 3), i * 20, np.uint8) for i in range(4)]
    clip = write_test_clip(store, "front_door", datetime(2026, 3, 10, 11, 0, tzinfo=UTC), frames, 10.0)
    RequestStore(state)
    for path in (Path(clip.path), state / "clips.sqlite3", state / "footage" / "requests.sqlite3"):
        assert mode(path) == 0o600, path
    for sidecar in [*state.glob("clips.sqlite3-*"), *state.glob("footage/requests.sqlite3-*")]:
        assert mode(sidecar) == 0o600, sidecar
    for folder in (state / "clips", Path(clip.path).parent, Path(clip.path).parent.parent, state / "footage"):
        assert mode(folder) == 0o700, folder


def test_a_clip_being_recorded_is_private_at_creation(tmp_path: Path, open_umask: None) -> None:
    """The raw stream and frame-time sidecar of a clip still recording (what a SIGKILL leaves for recovery) are
    0600 from the start, not left to the umask (they were 0666 & ~umask: 0644 under a login shell's 022)."""
    from edge.recording.codec import choose_codec

    state = tmp_path / "state"
    state.mkdir(mode=0o750)
    store = ClipStore(state, FakeClock(datetime(2026, 3, 10, 12, 0, tzinfo=UTC)))
    writer = store.begin("front_door", datetime(2026, 3, 10, 11, 0, tzinfo=UTC), choose_codec("auto"), 64, 48)
    try:
        parts = sorted(state.glob("clips/front_door/*/*.part"))
        assert len(parts) == 2 and {p.suffixes[-2] for p in parts} == {".frames", ".raw"}, parts
        for part in parts:
            assert mode(part) == 0o600, part
    finally:
        writer.abandon()


def test_start_narrows_what_was_left_readable_and_only_narrows(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "clips" / "front_door").mkdir(parents=True)
    state.chmod(0o755)
    (state / "clips").chmod(0o755)
    (state / "clips" / "front_door").chmod(0o750)
    clip = state / "clips" / "front_door" / "a.mp4"
    clip.write_bytes(b"x")
    clip.chmod(0o644)
    locked = state / "faces.tmp"
    locked.write_bytes(b"x")
    locked.chmod(0o400)  # narrower than the rule: left as it is
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    (state / "link").symlink_to(outside)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(state / "control.sock"))
        (state / "control.sock").chmod(0o666)
        changed = make_state_private(state)
        assert mode(state / "control.sock") == 0o660  # the group may still ring; others may not
    assert mode(state) == 0o750
    assert mode(state / "clips") == 0o700 and mode(state / "clips" / "front_door") == 0o700
    assert mode(clip) == 0o600 and mode(locked) == 0o400
    assert mode(outside) == 0o644  # a symlink is never followed out of the state dir
    assert set(changed) == {state, state / "clips", state / "clips" / "front_door", clip, state / "control.sock"}
    assert make_state_private(state) == []


def test_the_acting_user_comes_from_the_system_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LOGNAME", "USER", "USERNAME", "LNAME"):
        monkeypatch.setenv(name, "someone")
    who = real_user()
    assert who.startswith(f"{pwd.getpwuid(os.getuid()).pw_name} (uid {os.getuid()})")
    assert "someone" not in who
