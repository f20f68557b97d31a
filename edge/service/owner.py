"""Owner commands act on the state directory as the user who owns it (the service user), never as root.

The rule (README, "Commands"): a command that reads or writes the state directory (`run`, `ring`, `faces`,
`clips`, `requests`, `audit`, `mqtt outbox`), started by root, first becomes the owner of the state directory
(its uid, primary gid and supplementary groups) when that owner is not root, so every file it creates belongs
to the service user. If the switch is impossible (no CAP_SETUID), or the state directory does not exist yet
while the service user does, it refuses with the command to use instead. Any user that cannot read and write
an existing state directory gets "permission denied: <dir> ...; run as <owner>: sudo -u <owner> ...".
"""

from __future__ import annotations

import argparse
import grp
import logging
import os
import pwd
import shlex
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from edge import permissions
from edge.errors import StorageError

log = logging.getLogger(__name__)

SERVICE_USER = "doorbell-edge"  # the system user deploy/install.sh creates; the unit's User=

# command -> the subcommands (dest attribute, names) that touch the state; None: the command itself does.
STATE_COMMANDS: dict[str, tuple[str, frozenset[str]] | None] = {
    "run": None,
    "ring": None,
    "faces": None,
    "clips": None,
    "requests": None,
    # checkpoint/checkpoint-key run as whoever starts them: root signs with a key the service user cannot read
    "audit": ("audit_command", frozenset({"verify", "repair", "show"})),
    "keys": None,  # reads (and the first time creates) the device key under the state dir
    "mqtt": ("mqtt_command", frozenset({"outbox"})),
    "events": None,  # reads the event journal (and migrates an old outbox file once)
}


def uses_state(args: argparse.Namespace) -> bool:
    """Whether the parsed command reads or writes the state directory."""
    command = getattr(args, "command", None)
    if command not in STATE_COMMANDS:
        return False
    sub = STATE_COMMANDS[command]
    return sub is None or getattr(args, sub[0], None) in sub[1]


def act_as_state_owner(
    args: argparse.Namespace, state_dir_of: Callable[[], Path], argv: Sequence[str] | None = None
) -> None:
    """main() calls this before dispatching: switch to the state directory's owner when run by root, then
    make sure this process can use the state directory. Raises StorageError (exit 1) with the command to use.
    `state_dir_of` loads the command's config (only for commands that use the state directory)."""
    if not uses_state(args):
        return
    state_dir = Path(state_dir_of())
    command = invoked_as() + " " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    if os.geteuid() == 0:
        become_owner(state_dir, command)
    if getattr(args, "command", None) == "ring":
        return  # it only reaches the control socket, as the service group may (README, "Who can do what")
    check_access(state_dir, command)


def become_owner(state_dir: Path, command: str) -> None:
    """As root: drop to the owner of `state_dir` for good (no way back), or refuse with the command to use."""
    try:
        info = os.stat(state_dir)
    except FileNotFoundError:
        _refuse_missing(state_dir, command)
        return
    if info.st_uid == 0:
        return  # root's own state (a container, a developer working as root): nothing to switch to
    try:
        account: pwd.struct_passwd | None = pwd.getpwuid(info.st_uid)
    except KeyError:
        account = None
    gid = account.pw_gid if account else info.st_gid
    groups = os.getgrouplist(account.pw_name, gid) if account else [gid]
    permissions.note_switch_from(os.getuid())  # root's part, recorded by owner actions (permissions.real_user)
    try:
        os.setgroups(groups)
        os.setresgid(gid, gid, gid)
        os.setresuid(info.st_uid, info.st_uid, info.st_uid)
    except PermissionError as exc:
        permissions.note_switch_from(None)
        raise StorageError(
            f"{state_dir} belongs to {user_name(info.st_uid)} and this root process cannot become that user "
            f"({exc.strerror}); run as {user_name(info.st_uid)}: {sudo_command(info.st_uid, command)}"
        ) from exc
    if account:  # as `sudo -u` does: the user's own HOME, so nothing is written under /root
        os.environ.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    log.info("running as %s, the owner of %s", user_name(info.st_uid), state_dir)


def _refuse_missing(state_dir: Path, command: str) -> None:
    """Root must not create the state directory once the service user exists: it would belong to root."""
    try:
        service = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return  # no service installed: a developer or a container running as root owns its own state
    group = grp.getgrgid(service.pw_gid).gr_name
    raise StorageError(
        f"state directory {state_dir} does not exist yet, and root must not create it for the service user "
        f"{SERVICE_USER}: start the service once (`systemctl start doorbell-edge`, its StateDirectory= creates it) "
        f"or create it with `install -d -m 0750 -o {SERVICE_USER} -g {group} {shlex.quote(str(state_dir))}`, "
        f"then run: {sudo_command(service.pw_uid, command)}"
    )


def check_access(state_dir: Path, command: str) -> None:
    """An existing state directory this process cannot read and write is a clear error naming who can."""
    try:
        info = os.stat(state_dir)
    except FileNotFoundError:
        return  # created on first use by whoever runs the command (see _refuse_missing for root)
    except PermissionError as exc:
        blocker = _first_blocked_parent(state_dir)
        raise StorageError(
            f"permission denied: {state_dir} (cannot reach it: {blocker} is {describe(blocker)}); "
            f"run as {user_name(_stat_uid(blocker))}: {sudo_command(_stat_uid(blocker), command)}"
        ) from exc
    if not stat.S_ISDIR(info.st_mode):
        raise StorageError(f"state directory {state_dir} is not a directory (set storage.state_dir)")
    if os.statvfs(state_dir).f_flag & os.ST_RDONLY and os.access(state_dir, os.R_OK | os.X_OK):
        # A read-only mount is not a permission problem: reading commands (clips list, requests list, audit
        # verify) still work, and a write fails naming the read-only file system.
        log.warning("state directory %s is on a read-only file system: only reading commands work", state_dir)
        return
    if not os.access(state_dir, os.R_OK | os.W_OK | os.X_OK):
        raise StorageError(
            f"permission denied: {state_dir} is {describe(state_dir)} and {user_name(os.geteuid())} cannot "
            f"read and write it; run as {user_name(info.st_uid)}: {sudo_command(info.st_uid, command)}"
        )


def _first_blocked_parent(path: Path) -> Path:
    """The nearest ancestor of `path` this process cannot enter (what makes `path` unreachable)."""
    for parent in reversed(path.absolute().parents):
        if not os.access(parent, os.X_OK):
            return parent
    return path.absolute().parent


def _stat_uid(path: Path) -> int:
    try:
        return os.stat(path).st_uid
    except OSError:
        return 0


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def invoked_as(argv0: str | None = None) -> str:
    """How to name this program in a command line to copy: `doorbell-edge` when that is what PATH finds, else the
    full path it was started by (a dev checkout's .venv/bin/doorbell-edge is not on PATH, nor on sudo's)."""
    import shutil

    argv0 = sys.argv[0] if argv0 is None else argv0
    found = shutil.which("doorbell-edge")
    if os.path.basename(argv0) == "doorbell-edge" and os.path.isfile(argv0):
        mine = os.path.realpath(argv0)
        return "doorbell-edge" if found and os.path.realpath(found) == mine else shlex.quote(os.path.abspath(argv0))
    if argv0.endswith("__main__.py") and not found:  # python -m edge
        return f"{shlex.quote(sys.executable)} -m edge"
    return "doorbell-edge"


def sudo_command(uid: int, command: str) -> str:
    """The exact command line to run `command` as `uid` (sudo takes `#uid` for a uid without an account)."""
    if uid == 0:
        return f"sudo {command}"
    try:
        who = pwd.getpwuid(uid).pw_name
    except KeyError:
        who = shlex.quote(f"#{uid}")
    return f"sudo -u {who} {command}"


def describe(path: Path) -> str:
    """'owned by doorbell-edge, mode 0750' for error messages; what is known when stat fails."""
    try:
        info = os.stat(path)
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return f"owned by {user_name(info.st_uid)}, mode {stat.S_IMODE(info.st_mode):04o}"
