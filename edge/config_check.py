"""What the config points at: every file it names exists, is a file, and the service user can read it.

`doorbell-edge check-config` runs this after the config itself validated. The service user is whoever the
daemon will run as: the owner of the state directory when it exists (systemd's StateDirectory= makes it the
unit's User=; a developer's own state dir is theirs), else the `doorbell-edge` system user when
deploy/install.sh created it, else the user running the check. Readability for another user is worked out from
the mode bits, owner and groups of the file and of every folder above it (POSIX ACLs are not consulted); for
the user running the check, the kernel is asked (os.access).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from edge.config import Config, video_file
from edge.config_load import PathKey, Positions, parse_yaml, position_of

SERVICE_USER = "doorbell-edge"  # the system user deploy/install.sh creates and the unit names in User=


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gids: frozenset[int]
    why: str  # how it was chosen, for the message

    def __str__(self) -> str:
        return f"{self.name} ({self.why})"


def account(uid: int, why: str) -> ServiceUser:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return ServiceUser(f"uid {uid}", uid, frozenset(), why)
    return ServiceUser(entry.pw_name, uid, frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid)), why)


def service_user(config: Config) -> ServiceUser:
    """The user the daemon runs as, by the rule in the module docstring."""
    state_dir = config.state_dir
    try:
        return account(os.stat(state_dir).st_uid, f"owner of the state dir {state_dir}")
    except OSError:
        pass
    try:
        return account(pwd.getpwnam(SERVICE_USER).pw_uid, "the service's system user")
    except KeyError:
        pass
    uid = os.geteuid()
    return account(uid, f"you: {state_dir} does not exist yet and there is no {SERVICE_USER} user")


@dataclass(frozen=True)
class PointedFile:
    key: PathKey  # where in the config, e.g. ("mqtt", "tls", "ca_file")
    path: Path
    what: str  # "CA file", "video file", ...


def pointed_files(config: Config) -> list[PointedFile]:
    """Every file the config names that the daemon reads, in config order."""
    found = []
    for name, camera in config.cameras.items():
        path = video_file(camera)
        if path is not None and not str(path).startswith("/dev/"):  # a V4L2 device node may come and go
            found.append(PointedFile(("cameras", name, "url"), path, "video file"))
    mqtt = config.mqtt
    if mqtt.enabled and mqtt.password_file is not None:
        found.append(PointedFile(("mqtt", "password_file"), mqtt.password_file, "password file"))
    if mqtt.enabled and mqtt.tls.enabled:
        for key, what in (("ca_file", "CA file"), ("cert_file", "client certificate"), ("key_file", "client key")):
            path = getattr(mqtt.tls, key)
            if path is not None:
                found.append(PointedFile(("mqtt", "tls", key), path, what))
    return found


def _mode(info: os.stat_result) -> str:
    return f"mode {stat.S_IMODE(info.st_mode):04o}, owner {_user_name(info.st_uid)}:{_group_name(info.st_gid)}"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _allowed(info: os.stat_result, user: ServiceUser, want: int) -> bool:
    """POSIX permission check for `want` (4 read, 1 search/execute): owner bits, else group bits, else other."""
    if user.uid == 0:
        return want != 1 or not stat.S_ISREG(info.st_mode) or bool(info.st_mode & 0o111)
    if info.st_uid == user.uid:
        bits = (info.st_mode >> 6) & 7
    elif info.st_gid in user.gids:
        bits = (info.st_mode >> 3) & 7
    else:
        bits = info.st_mode & 7
    return bits & want == want


def file_problem(path: Path, user: ServiceUser, what: str) -> str | None:
    """Why the daemon, running as `user`, could not read `path`; None when it can."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"{what} not found: {path}"
    except PermissionError:
        return f"cannot check {what} {path}: permission denied for you ({_user_name(os.geteuid())}); run the " \
               "check as root or as the service user"
    except OSError as exc:
        return f"cannot check {what} {path}: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return f"{what} {path} is a directory, not a file"
    if user.uid == os.geteuid():
        if not os.access(path, os.R_OK):
            return f"{what} {path} is not readable by the service user {user}: {_mode(info)}{_hint(what)}"
    else:
        for folder in reversed(path.absolute().parents):
            try:
                folder_info = os.stat(folder)
            except OSError:
                continue
            if not _allowed(folder_info, user, 1):
                return (f"{what} {path} is not readable by the service user {user}: it cannot enter "
                        f"{folder} ({_mode(folder_info)})")
        if not _allowed(info, user, 4):
            return f"{what} {path} is not readable by the service user {user}: {_mode(info)}{_hint(what)}"
    if what == "password file" and info.st_size == 0:
        return f"{what} {path} is empty"
    return None


def _hint(what: str) -> str:
    if what == "password file":
        return "; under systemd use mqtt.password_credential (the unit loads the file as root)"
    return ""


def check_files(config: Config, config_path: Path | None, user: ServiceUser | None = None) -> list[str]:
    """Compiler-style lines (`file:line:col: dotted.key: message`), one per problem; empty when all is well.

    `config_path` is the file the config was read from (its key positions are looked up there), or None for
    the built-in defaults.
    """
    files = pointed_files(config)
    if not files:
        return []
    user = user or service_user(config)
    positions: Positions = {}
    filename = "(built-in defaults)"
    if config_path is not None:
        filename = str(config_path)
        try:
            _data, positions, _problems = parse_yaml(config_path.read_text(encoding="utf-8"), filename)
        except (OSError, UnicodeDecodeError):
            positions = {}
    found = []
    for item in files:
        problem = file_problem(item.path, user, item.what)
        if problem is not None:
            dotted = ".".join(str(part) for part in item.key)
            found.append((position_of(item.key, positions), f"{dotted}: {problem}"))
    found.sort(key=lambda pair: pair[0])  # in file order, like the config's own errors
    return [f"{filename}:{line}:{col}: {text}" for (line, col), text in found]


