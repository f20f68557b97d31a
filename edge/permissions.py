"""Who may read what in the state directory, and who is acting: the service user alone reads footage, faces,
requests, the audit log and the device key; its group only reaches the control socket (`ring`).

The rule (README, "Who can do what"): every file under the state directory is mode 0600 and every folder 0700,
owned by the service user; the exceptions are the state directory itself (0750, so members of the service group
can reach the control socket inside it) and the control socket (0660). Files are created with their mode
(os.open(..., 0o600) and folders with mkdir(0o700) then chmod, never trusting the umask), and the daemon's start
narrows anything older or made by another tool (make_state_private(), a migration: it only ever removes bits).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
from pathlib import Path

from edge import layout
from edge.layout import StateLayout

log = logging.getLogger(__name__)

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
STATE_DIR = 0o750  # the group may enter to reach the control socket, and read nothing inside
GROUP_SOCKET = 0o660  # `doorbell-edge ring` from a member of the service group
CONTROL_SOCKET = layout.CONTROL_SOCKET


def private_dir(path: Path) -> Path:
    """Create `path` and every missing folder above it as 0700 folders (so create the state directory first:
    it is 0750); an existing `path` that this process owns is narrowed to 0700."""
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile: narrowed like any other
            os.mkdir(folder, PRIVATE_DIR)
        _narrow(folder, PRIVATE_DIR)
    if not missing:
        _narrow(path, PRIVATE_DIR)
    return path


def private_file(path: Path) -> Path:
    """Create `path` empty with mode 0600 if it does not exist (e.g. before SQLite opens it: SQLite gives its
    -wal and -shm files the database file's mode); an existing file this process owns is narrowed to 0600."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    except FileExistsError:
        _narrow(path, PRIVATE_FILE, only_narrow=True)
        return path
    try:
        os.fchmod(fd, PRIVATE_FILE)  # exactly 0600, whatever the umask
    finally:
        os.close(fd)
    return path


def _narrow(path: Path, mode: int, only_narrow: bool = False) -> None:
    """Give `path` exactly `mode` (or, `only_narrow`, remove the bits `mode` lacks) when this process owns it;
    symlinks and other users' files are left alone."""
    info = os.lstat(path)
    current = stat.S_IMODE(info.st_mode)
    target = current & mode if only_narrow else mode
    if info.st_uid == os.geteuid() and not stat.S_ISLNK(info.st_mode) and current != target:
        os.chmod(path, target)


def wanted_mode(state_dir: Path, path: Path, info: os.stat_result) -> int | None:
    """The mode `path` (inside `state_dir`) should have under the rule above; None for what is left alone
    (symlinks, which chmod would follow)."""
    if stat.S_ISLNK(info.st_mode):
        return None
    if path == state_dir:
        return STATE_DIR
    if stat.S_ISSOCK(info.st_mode) and path == StateLayout.of(state_dir).control_socket:
        return GROUP_SOCKET
    if stat.S_ISDIR(info.st_mode):
        return PRIVATE_DIR
    return PRIVATE_FILE


def make_state_private(state_dir: Path) -> list[Path]:
    """The migration run at the daemon's start: narrow every file and folder under `state_dir` that this process
    owns to the rule's mode (bits are only ever removed). Returns what was changed; a path that cannot be changed
    is logged, never fatal."""
    state_dir = Path(state_dir)
    changed: list[Path] = []
    me = os.geteuid()

    def fix(path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return  # removed meanwhile (a clip deleted by retention)
        mode = wanted_mode(state_dir, path, info)
        if mode is None or info.st_uid != me:
            return
        current = stat.S_IMODE(info.st_mode)
        target = current & mode  # only ever narrowed: a state dir made 0700 on purpose stays 0700 (no `ring`)
        if target != current:
            try:
                os.chmod(path, target)
            except OSError as exc:
                log.warning("cannot make %s private (mode %04o): %s", path, current, exc)
                return
            changed.append(path)

    try:
        fix(state_dir)
        for root, dirs, files in os.walk(state_dir, onerror=lambda exc: log.warning("permissions: %s", exc)):
            base = Path(root)
            for name in dirs + files:
                fix(base / name)
    except OSError as exc:  # a read-only file system: nothing can be written anyway, so nothing can leak more
        log.warning("cannot check the modes under %s: %s", state_dir, exc)
    if changed:
        log.warning("made %d file(s) and folder(s) under %s private to the service user (readable by its group "
                    "or others before), e.g. %s", len(changed), state_dir, changed[0])
    return changed


# The real uid this process had before edge.service.owner made it the state dir's owner (root, normally): kept in
# the process, not in an environment variable, which anyone could set to claim that root ran a command.
_run_by: int | None = None


def note_switch_from(uid: int | None) -> None:
    """Called by edge.service.owner just before it drops to the state owner (None if the switch failed)."""
    global _run_by
    _run_by = uid


def real_user() -> str:
    """Who is acting, from the system, never from $LOGNAME/$USER (anyone can set those): the real uid and its
    account name; the uid that ran the command before it switched to the service user (root's part, e.g.
    "doorbell-edge (uid 999), run by root (uid 0)"); plus the login uid the kernel keeps across sudo and su
    (/proc/self/loginuid) when it names someone else, so a root-run command still says who logged in."""
    uid = os.getuid()
    text = f"{_name(uid)} (uid {uid})"
    if _run_by is not None and _run_by != uid:
        text += f", run by {_name(_run_by)} (uid {_run_by})"
    login = _login_uid()
    if login is not None and login not in (uid, _run_by):
        text += f", logged in as {_name(login)} (uid {login})"
    return text


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"  # no account: the uid is the whole truth


def _login_uid() -> int | None:
    try:
        value = int(Path("/proc/self/loginuid").read_text().strip())
    except (OSError, ValueError):
        return None
    return None if value == 0xFFFFFFFF else value  # (uid_t)-1: no login session (a service, a container)
