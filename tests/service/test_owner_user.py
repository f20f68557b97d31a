"""Owner commands as the service user: root-run commands become the state dir's owner and leave no root-owned
file behind; a state dir this user cannot use is one clear "permission denied ...; run as ..." line; the daemon
says loudly when the face gallery or the audit log cannot be read.

These tests need root (they start commands as root and as `nobody`); CI runs as root, so there a non-root run
fails instead of skipping (CI=true).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.camera.demo import visitor_photo_path
from edge.errors import StorageError
from edge.service import owner
from tests.service.asuser import reachable_by_anyone, require_root

NOBODY = pwd.getpwnam("nobody")
ORPHAN_UID = 4321  # a uid with no account: the message must still name a command that works (sudo -u '#4321')


@pytest.fixture(autouse=True)
def _root_only() -> None:
    require_root("needs root: it runs owner commands as root and as nobody (CI runs the suite as root)")


@pytest.fixture(scope="module")
def cli() -> list[str]:
    """`doorbell-edge` as a command any user can run: this checkout's packages on an interpreter outside /root.

    On a Pi the venv's python is /usr/bin/python3; a developer's interpreter may live under /root (pyenv), where
    the service user cannot follow after the switch. -S keeps the system's dist-packages off the path."""
    site = Path(sysconfig.get_paths()["purelib"])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [Path(sys.base_prefix) / "bin" / f"python{version}", Path(f"/usr/bin/python{version}")]
    python = next((p for p in candidates if p.exists() and reachable_by_anyone(p)
                   and reachable_by_anyone(Path(sys.base_prefix) if p == candidates[0] else Path("/usr/lib"))), None)
    if python is None or not reachable_by_anyone(site):
        pytest.fail(f"no python{version} that `nobody` can run (tried {', '.join(map(str, candidates))}; "
                    f"site-packages {site}): install python{version} from apt")
    boot = f"import site, sys; site.addsitedir({str(site)!r}); from edge.cli import main; sys.exit(main())"
    return [str(python), "-S", "-c", boot]


@pytest.fixture
def place() -> Iterator[Path]:
    """A folder `nobody` can reach (pytest's tmp_path sits under a root-only /tmp/pytest-of-root)."""
    path = Path(tempfile.mkdtemp(prefix="doorbell-owner-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(state: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOORBELL_EDGE_") and k != "CI"}
    env.update(DOORBELL_EDGE_STATE_DIR=str(state), HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def _run(cli: list[str], *args: str, env: dict[str, str], as_nobody: bool = False,
         prefix: list[str] | None = None, cwd: Path) -> subprocess.CompletedProcess[str]:
    drop = {"user": NOBODY.pw_uid, "group": NOBODY.pw_gid, "extra_groups": []} if as_nobody else {}
    return subprocess.run([*(prefix or []), *cli, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120, **drop)  # type: ignore[call-overload]


def _owners(root: Path) -> dict[str, int]:
    found = {".": root.lstat().st_uid}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            found[str(path.relative_to(root))] = path.lstat().st_uid
    return found


def test_root_run_owner_commands_act_as_the_state_owner_and_leave_no_root_owned_file(
    cli: list[str], place: Path
) -> None:
    state = place / "state"
    state.mkdir(mode=0o750)
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    photo = place / "grace.jpg"
    shutil.copyfile(visitor_photo_path(), photo)
    request = place / "request.json"
    request.write_text('{"agency": "nobody-knows"}')  # a junk request is still recorded: intake, decision (deny)
    env = _env(state, place)

    steps = [
        ("faces", "enroll", "Grace", str(photo), "--consent-by", "Grace", "--consent-date", "2024-01-02",
         "--consent-until", "2099-12-31"),
        ("faces", "list", "--json"),
        ("requests", "submit", str(request), "--json"),
        ("requests", "list"),
        ("audit", "verify"),
        ("mqtt", "outbox", "--json"),
    ]
    results = {step[:2]: _run(cli, *step, env=env, cwd=place) for step in steps}
    for step, result in results.items():
        assert result.returncode == 0, f"{' '.join(step)} failed: {result.stderr}"
        assert "Traceback" not in result.stderr

    assert [p["name"] for p in json.loads(results[("faces", "list")].stdout)] == ["Grace"]
    assert json.loads(results[("requests", "submit")].stdout)["decision"] == "deny"
    assert "chain intact" in results[("audit", "verify")].stdout
    assert json.loads(results[("mqtt", "outbox")].stdout)["path"] == str(state / "events.sqlite3")

    owners = _owners(state)
    # What the commands wrote is there (so the walk below checks real files) ...
    for written in ("faces/grace/person.json", "faces/grace/templates.npy", "audit/footage.jsonl",
                    "footage/requests.sqlite3", "events.sqlite3"):
        assert written in owners, f"{written} was not written: {sorted(owners)}"
    # ... and every file and folder belongs to the state dir's owner, none to root.
    foreign = {path: uid for path, uid in owners.items() if uid != NOBODY.pw_uid}
    assert foreign == {}, f"files not owned by nobody after root-run owner commands: {foreign}"
    # The service user can use everything afterwards (what broke on a Pi: root-owned gallery, "0 enrolled").
    listed = _run(cli, "faces", "list", "--json", env=env, as_nobody=True, cwd=place)
    assert listed.returncode == 0, listed.stderr
    assert [p["name"] for p in json.loads(listed.stdout)] == ["Grace"]


def test_root_keeps_its_own_state_dir_and_commands_outside_the_state_never_switch(cli: list[str], place: Path) -> None:
    state = place / "state"
    state.mkdir(mode=0o700)  # owned by root: a container or a developer working as root
    env = _env(state, place)
    result = _run(cli, "mqtt", "outbox", env=env, cwd=place)
    assert result.returncode == 0, result.stderr
    assert {uid for uid in _owners(state).values()} == {0}
    # `exports keygen` writes where it is told as whoever runs it, even beside a nobody-owned state dir.
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    key = place / "agency.key"
    result = _run(cli, "exports", "keygen", str(key), env=env, cwd=place)
    assert result.returncode == 0, result.stderr
    assert key.stat().st_uid == 0


def test_root_that_cannot_switch_refuses_with_the_command_to_use(cli: list[str], place: Path) -> None:
    """Root without CAP_SETUID/CAP_SETGID (a restricted container) must not carry on as root."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to start a root process without CAP_SETUID"
    state = place / "state"
    state.mkdir(mode=0o750)
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    result = _run(cli, "faces", "list", env=_env(state, place), cwd=place,
                  prefix=[setpriv, "--bounding-set", "-setuid,-setgid,-setpcap", "--"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert line.startswith(f"doorbell-edge: {state} belongs to nobody and this root process cannot become that user")
    assert line.endswith("run as nobody: sudo -u nobody doorbell-edge faces list"), line
    assert os.listdir(state) == []


def test_unusable_state_dir_is_permission_denied_naming_the_user_to_run_as(cli: list[str], place: Path) -> None:
    state = place / "state"
    state.mkdir(mode=0o700)
    os.chown(state, ORPHAN_UID, ORPHAN_UID)
    home = place / "home"
    home.mkdir()
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    env = _env(state, home)
    for args in (("faces", "list"), ("requests", "list"), ("run", "--for", "1")):
        result = _run(cli, *args, env=env, as_nobody=True, cwd=place)
        assert result.returncode == 1, f"{args}: {result.stdout} {result.stderr}"
        assert "Traceback" not in result.stderr
        command = "doorbell-edge " + " ".join(args)
        assert result.stderr.strip().endswith(
            f"doorbell-edge: permission denied: {state} is owned by uid {ORPHAN_UID}, mode 0700 and nobody cannot "
            f"read and write it; run as uid {ORPHAN_UID}: sudo -u '#{ORPHAN_UID}' {command}"
        ), result.stderr
    # Never a silent second state in the user's home.
    assert not (home / ".local").exists()

    # A state dir behind a folder the user cannot enter names that folder.
    hidden = place / "hidden"
    hidden.mkdir(mode=0o700)
    result = _run(cli, "faces", "list", env=_env(hidden / "state", home), as_nobody=True, cwd=place)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"doorbell-edge: permission denied: {hidden / 'state'} (cannot reach it: {hidden} is owned by root, "
        "mode 0700); run as root: sudo doorbell-edge faces list"
    )


def test_demo_falls_back_to_home_only_when_the_default_cannot_be_created(cli: list[str], place: Path) -> None:
    """The ~/.local/state fall-back is the demo's alone: no config file, and the default dir does not exist and
    cannot be created. An existing default, a config file, or DOORBELL_EDGE_STATE_DIR never fall back."""
    locked = place / "locked"
    locked.mkdir(mode=0o755)  # root's: nobody cannot create anything in it
    (locked / "exists").mkdir(mode=0o700)
    home = place / "home"
    home.mkdir()
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from edge.config import Config\n"
        "from edge.config_load import _demo_state_dir\n"
        "out = {}\n"
        "for name, env in (('missing', {}), ('exists', {}), ('missing_env', {'DOORBELL_EDGE_STATE_DIR': 'x'})):\n"
        "    d = Path(sys.argv[1]) / name.replace('_env', '')\n"
        "    cfg = Config.model_validate({'storage': {'state_dir': str(d)}})\n"
        "    out[name] = str(_demo_state_dir(cfg, {'HOME': sys.argv[2], **env}).state_dir)\n"
        "print(json.dumps(out))\n"
    )
    python, *_ = cli
    site = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [python, "-S", "-c", f"import site; site.addsitedir({site!r}); exec({probe!r})", str(locked), str(home)],
        capture_output=True, text=True, user=NOBODY.pw_uid, group=NOBODY.pw_gid, extra_groups=[], cwd=place,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    chosen = json.loads(result.stdout)
    assert chosen == {
        "missing": str(home / ".local" / "state" / "doorbell-edge"),
        "exists": str(locked / "exists"),
        "missing_env": str(locked / "missing"),
    }
    assert "the demo keeps its state in" in result.stderr


def test_root_does_not_create_the_state_dir_once_the_service_user_exists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(owner, "SERVICE_USER", "nobody")  # stands in for the doorbell-edge user install.sh makes
    missing = tmp_path / "state"
    with pytest.raises(StorageError) as caught:
        owner.become_owner(missing, "doorbell-edge faces list")
    message = str(caught.value)
    assert f"state directory {missing} does not exist yet" in message
    assert f"install -d -m 0750 -o nobody -g nogroup {missing}" in message
    assert message.endswith("then run: sudo -u nobody doorbell-edge faces list")
    assert not missing.exists()
    monkeypatch.setattr(owner, "SERVICE_USER", "no-such-user-doorbell")
    owner.become_owner(missing, "doorbell-edge faces list")  # no service installed: root's own state, no switch
    assert os.geteuid() == 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_daemon_warns_when_gallery_or_audit_log_cannot_be_read(cli: list[str], place: Path) -> None:
    """What root-run commands used to leave behind: a root-only person folder and audit folder. The daemon (as the
    service user) says so in the log and as `system` events instead of quietly recognising nobody."""
    state = place / "state"
    state.mkdir(mode=0o750)
    for folder in (state / "faces" / "grace", state / "audit"):
        folder.mkdir(parents=True)
        folder.chmod(0o700)  # root's, as a root-run `faces enroll` / `requests submit` left them
    (state / "faces" / "grace" / "person.json").write_text("{}")
    (state / "audit" / "footage.jsonl").write_text("")
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chown(state / "faces", NOBODY.pw_uid, NOBODY.pw_gid)
    config = place / "daemon.yaml"
    config.write_text(
        f"mqtt:\n  host: 127.0.0.1\n  port: {_free_port()}\nrecording:\n  enabled: false\n"
        "faces:\n  enabled: true\n"
    )
    result = _run(cli, "run", "--config", str(config), "--for", "3", env=_env(state, place), as_nobody=True,
                  cwd=place)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    unreadable = {e["what"]: e["error"] for e in events if e["type"] == "system" and e["status"] == "state_unreadable"}
    assert set(unreadable) == {"face_gallery", "audit_log"}, events
    assert "Permission denied (owned by root, mode 0700)" in unreadable["face_gallery"]
    assert str(state / "faces" / "grace") in unreadable["face_gallery"]
    assert f"{state / 'audit'} is owned by root, mode 0700" in unreadable["audit_log"]
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert any("face_gallery: cannot read the face gallery" in line for line in warnings), result.stderr
    assert any("audit_log: cannot read and append to the audit log" in line for line in warnings), result.stderr
    assert "0 enrolled" not in result.stderr


def test_the_command_to_copy_names_the_program_as_it_can_be_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a dev checkout `doorbell-edge` is not on PATH: `sudo doorbell-edge ...` would not run. The message
    names the program by its full path then, and by its name only where PATH finds that same program."""
    venv_bin = tmp_path / "checkout" / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    program = venv_bin / "doorbell-edge"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert owner.invoked_as(str(program)) == str(program)
    monkeypatch.chdir(venv_bin)
    assert owner.invoked_as("./doorbell-edge") == str(program)  # relative: made absolute
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin:/bin")
    assert owner.invoked_as(str(program)) == "doorbell-edge"  # PATH finds this very program
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert owner.invoked_as("/usr/lib/python3/dist-packages/edge/__main__.py") == f"{sys.executable} -m edge"
    assert owner.invoked_as("-c") == "doorbell-edge"
    assert owner.sudo_command(0, owner.invoked_as(str(program)) + " run --for 40") == f"sudo {program} run --for 40"
