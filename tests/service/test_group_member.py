"""Only the owner reads: a real second uid in the service group (not the service user) cannot open any clip,
snapshot, clip index, request store, audit file, face gallery file or the device key in a state dir made by the
real code path (owner commands and a short daemon run, after an older version's group-readable modes were left
behind: the daemon's start narrows them), and can still ring the running daemon over the control socket.

Needs root (it creates two throwaway system users with useradd and removes them after); CI runs as root, so
there a non-root run fails instead of skipping (CI=true). Needs setpriv (util-linux) for the member's child.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.camera.demo import visitor_photo_path
from tests.service.asuser import reachable_by_anyone, require_root


@pytest.fixture(autouse=True)
def _root_only() -> None:
    require_root("needs root: it creates throwaway users and runs the daemon and a group member as them")


def _python() -> tuple[str, Path]:
    """An interpreter any user can run and this checkout's site-packages (the dev venv may live under /root)."""
    site = Path(sysconfig.get_paths()["purelib"])
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (Path(sys.base_prefix) / "bin" / f"python{version}", Path(f"/usr/bin/python{version}")):
        if candidate.exists() and reachable_by_anyone(candidate) and reachable_by_anyone(site):
            return str(candidate), site
    pytest.fail(f"no python{version} that another user can run next to {site}: install python{version} from apt")


@pytest.fixture(scope="module")
def users() -> Iterator[tuple[pwd.struct_passwd, pwd.struct_passwd]]:
    """A service user (with its own group) and a member of that group who is not the service user."""
    if shutil.which("useradd") is None or shutil.which("setpriv") is None:
        pytest.fail("useradd (passwd) and setpriv (util-linux) are needed")
    tag = secrets.token_hex(3)
    service, member = f"dbe-svc-{tag}", f"dbe-mem-{tag}"
    created: list[str] = []
    try:
        for name in (service, member):
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group",
                            name], check=True, capture_output=True, text=True)
            created.append(name)
        # A supplementary membership, as people are told to add themselves (usermod -aG doorbell-edge USER).
        subprocess.run(["usermod", "-aG", service, member], check=True, capture_output=True, text=True)
        yield pwd.getpwnam(service), pwd.getpwnam(member)
    finally:
        for name in reversed(created):
            subprocess.run(["userdel", name], capture_output=True, text=True)
        for name in (member, service):  # userdel removes each user's own group; this catches a half-made one
            subprocess.run(["groupdel", name], capture_output=True, text=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_service_group_member_reads_nothing_private_and_can_still_ring(
    users: tuple[pwd.struct_passwd, pwd.struct_passwd],
) -> None:
    service, member = users
    python, site = _python()
    import edge

    repo = str(Path(edge.__file__).resolve().parents[1])  # the code under test, wherever it is checked out
    cli = [python, "-S", "-c", f"import site, sys; site.addsitedir({str(site)!r}); sys.path.insert(0, {repo!r}); "
           "from edge.cli import main; sys.exit(main())"]
    place = Path(tempfile.mkdtemp(prefix="doorbell-group-"))
    daemon: subprocess.Popen[str] | None = None
    try:
        place.chmod(0o755)
        state = place / "state"
        state.mkdir(mode=0o750)
        os.chown(state, service.pw_uid, service.pw_gid)
        photo = place / "grace.jpg"
        shutil.copyfile(visitor_photo_path(), photo)
        photo.chmod(0o644)
        request = place / "request.json"
        request.write_text('{"agency": "nobody-knows"}')  # junk, still recorded: intake, decision (deny)
        request.chmod(0o644)
        config = place / "daemon.yaml"
        config.write_text(f"mqtt:\n  host: 127.0.0.1\n  port: {_free_port()}\nfaces:\n  enabled: true\n")
        config.chmod(0o644)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(place), "DOORBELL_EDGE_STATE_DIR": str(state),
               "PYTHONUNBUFFERED": "1", "LANG": "C.UTF-8"}
        as_service = {"user": service.pw_uid, "group": service.pw_gid, "extra_groups": [service.pw_gid]}

        def owner_command(*args: str) -> subprocess.CompletedProcess[str]:
            done = subprocess.run([*cli, *args, "--config", str(config)], env=env, cwd=place, capture_output=True,
                                  text=True, timeout=180, **as_service)  # type: ignore[call-overload]
            assert done.returncode == 0, f"{args}: {done.stderr}"
            return done

        owner_command("faces", "enroll", "Grace", str(photo), "--consent-by", "Grace", "--consent-date", "2024-01-02",
                      "--consent-until", "2099-12-31")
        owner_command("requests", "submit", str(request))
        fingerprint = json.loads(owner_command("keys", "show", "--json").stdout)["fingerprint"]
        assert len(fingerprint) == 16

        # What an older version (UMask=0027) left: every file 0640, every folder 0750. The daemon's start fixes it.
        for root, dirs, files in os.walk(state):
            for name in dirs:
                os.chmod(Path(root) / name, 0o750)
            for name in files:
                os.chmod(Path(root) / name, 0o640)

        log = place / "daemon.log"
        with open(log, "w") as log_file:  # a file, not a pipe: a full pipe would stall the daemon's logging
            daemon = subprocess.Popen([*cli, "run", "--config", str(config), "--for", "600"], env=env, cwd=place,
                                      stdout=subprocess.PIPE, stderr=log_file, text=True,
                                      **as_service)  # type: ignore[call-overload]
        sock = state / "control.sock"
        # Wait (no time is asserted) for the control socket and a finished snapshot of the demo visitor.
        for line in daemon.stdout or ():
            event = json.loads(line)
            if sock.exists() and any(state.glob("clips/*/*/*.jpg")):
                break
            assert event.get("type") != "system" or event.get("status") != "state_unreadable", event
        assert sock.exists(), "the daemon never opened its control socket"

        member_env = {**env, "HOME": str(place)}
        drop = ["setpriv", f"--reuid={member.pw_uid}", f"--regid={member.pw_gid}", "--init-groups", "--"]
        groups = subprocess.run([*drop, "id", "-G"], capture_output=True, text=True, check=True).stdout.split()
        assert str(service.pw_gid) in groups and member.pw_uid != service.pw_uid
        rung = subprocess.run([*drop, *cli, "ring", "--config", str(config)], env=member_env, cwd=place,
                              capture_output=True, text=True, timeout=60)
        assert rung.returncode == 0, rung.stderr
        assert json.loads(rung.stdout)["ok"] is True

        daemon.terminate()
        daemon.communicate(timeout=60)
        err = log.read_text()
        assert daemon.returncode == 0, err
        assert "private to the service user" in err  # the migration said what it did

        private = {}
        for root, dirs, files in os.walk(state):
            for name in dirs + files:
                path = Path(root) / name
                private[str(path)] = "dir" if path.is_dir() else "file"
        rel = {str(Path(p).relative_to(state)) for p in private}
        wanted = {
            "clip": [r for r in rel if r.startswith("clips/") and r.endswith((".mp4", ".webm", ".mkv"))],
            "snapshot": [r for r in rel if r.startswith("clips/") and r.endswith(".jpg")],
            "clip index": [r for r in rel if r == "clips.sqlite3"],
            "request store": [r for r in rel if r == "footage/requests.sqlite3"],
            "audit file": [r for r in rel if r.startswith("audit/")],
            "gallery file": [r for r in rel if r.startswith("faces/") and not Path(state, r).is_dir()],
            "device key": [r for r in rel if r == "keys/device_ed25519.pem"],
        }
        missing = [what for what, found in wanted.items() if not found]
        assert missing == [], f"the state dir has no {missing}: {sorted(rel)}"

        for path, kind in private.items():  # every file 0600, every folder 0700, as the rule says
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            assert mode == (0o700 if kind == "dir" else 0o600), f"{path}: mode {mode:04o}"
        assert stat.S_IMODE(state.stat().st_mode) == 0o750

        probe = (
            "import errno, json, os, sys\n"
            "out = {}\n"
            "for path, kind in json.loads(sys.stdin.read()).items():\n"
            "    try:\n"
            "        os.listdir(path) if kind == 'dir' else open(path, 'rb').close()\n"
            "        out[path] = 'OPENED'\n"
            "    except OSError as exc:\n"
            "        out[path] = errno.errorcode.get(exc.errno, str(exc.errno))\n"
            "print(json.dumps(out))\n"
        )
        result = subprocess.run([*drop, python, "-S", "-c", probe], input=json.dumps(private), env=member_env,
                                cwd=place, capture_output=True, text=True, timeout=60, check=True)
        outcome = json.loads(result.stdout)
        assert len(outcome) == len(private)
        opened = {p: e for p, e in outcome.items() if e != errno.errorcode[errno.EACCES]}
        assert opened == {}, f"a service group member could open (or got another error on): {opened}"
        for what, found in wanted.items():
            assert all(outcome[str(state / r)] == "EACCES" for r in found), what
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(place, ignore_errors=True)
