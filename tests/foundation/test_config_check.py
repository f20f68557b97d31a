"""check-config checks what the config points at (video, password and TLS files, as the service user), and
relative paths in a config file resolve against that file's folder."""

from __future__ import annotations

import io
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import pytest
import yaml

from edge.cli import main
from edge.config import Config
from edge.config_check import ServiceUser, check_files, service_user
from edge.config_load import load_config

REPO = Path(__file__).resolve().parents[2]

# Keys at fixed positions: the expected lines name them as file:line:col.
CONFIG = """\
cameras:
  porch:
    source: opencv
    url: clips/porch.mp4
mqtt:
  username: bell
  password_file: secrets/mqtt_password
  tls:
    enabled: true
    ca_file: tls/ca.pem
    cert_file: tls/client.pem
    key_file: /abs/tls/client.key
storage:
  state_dir: state
"""


def _write_config(folder: Path, text: str = CONFIG) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(text)
    return path


def _check_config(path: Path) -> subprocess.CompletedProcess[str]:
    """`doorbell-edge check-config --config PATH` in this process (the built-in demo test below runs the real
    entry point in a child)."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ), redirect_stdout(out), redirect_stderr(err):
        os.environ.pop("DOORBELL_EDGE_CONFIG", None)
        os.environ.pop("DOORBELL_EDGE_STATE_DIR", None)
        code = main(["check-config", "--config", str(path)])
    return subprocess.CompletedProcess([], code, out.getvalue(), err.getvalue())


def _fill(conf: Path, video: Path) -> None:
    """Create every file CONFIG names (key_file moved to a relative path), readable by everyone."""
    (conf / "clips").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(video, conf / "clips" / "porch.mp4")
    (conf / "secrets").mkdir(exist_ok=True)
    (conf / "secrets" / "mqtt_password").write_text("s3cret\n")
    (conf / "tls").mkdir(exist_ok=True)
    for name in ("ca.pem", "client.pem", "client.key"):
        (conf / "tls" / name).write_text("-----BEGIN CERTIFICATE-----\n")
    (conf / "state").mkdir(exist_ok=True)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp folder every user can enter (pytest's own sit under a 0700 folder), so another user's view of the
    files inside depends only on what the test sets."""
    path = Path(tempfile.mkdtemp(prefix="doorbell-check-"))
    try:
        path.chmod(0o755)
        for parent in path.parents:
            if parent.stat().st_mode & 0o001 == 0:
                pytest.fail(f"{parent} is closed to other users; the test needs a temp dir others can enter")
        yield path
    finally:
        for folder, dirs, _files in os.walk(path):
            for name in dirs:
                (Path(folder) / name).chmod(0o755)
        shutil.rmtree(path)


@pytest.fixture
def video(shared_data: Path) -> Path:
    return shared_data / "video" / "face_recognition_short_hamilton_clip.mp4"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "etc"
    path = _write_config(conf)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter (systemd runs us in /)
    config = load_config(Path("..") / "etc" / "config.yaml", environ={})
    base = elsewhere / ".." / "etc"
    assert config.cameras["porch"].url == str(base / "clips" / "porch.mp4")
    assert config.mqtt.password_file == base / "secrets" / "mqtt_password"
    assert config.mqtt.tls.ca_file == base / "tls" / "ca.pem"
    assert config.mqtt.tls.cert_file == base / "tls" / "client.pem"
    assert config.mqtt.tls.key_file == Path("/abs/tls/client.key")  # absolute stays as written
    assert config.state_dir == base / "state"
    # A state dir from the environment is not the file's, so it is left as given.
    config = load_config(path, environ={"DOORBELL_EDGE_STATE_DIR": "rel/state"})
    assert config.state_dir == Path("rel/state")
    # Device indices and stream URLs are not paths.
    path.write_text("cameras:\n  a: {source: opencv, url: 0}\n  b: {source: opencv, url: 'rtsp://cam/1'}\n"
                    "  c: {source: opencv, url: '2'}\n")
    cameras = load_config(path, environ={}).cameras
    assert (cameras["a"].url, cameras["b"].url, cameras["c"].url) == (0, "rtsp://cam/1", "2")


def test_every_missing_file_kind_is_one_positioned_line_and_exit_78(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    path = _write_config(conf)
    (conf / "state").mkdir()
    proc = _check_config(path)
    assert proc.returncode == 78, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"{path}:4:5: cameras.porch.url: video file not found: {conf}/clips/porch.mp4",
        f"{path}:7:3: mqtt.password_file: password file not found: {conf}/secrets/mqtt_password",
        f"{path}:10:5: mqtt.tls.ca_file: CA file not found: {conf}/tls/ca.pem",
        f"{path}:11:5: mqtt.tls.cert_file: client certificate not found: {conf}/tls/client.pem",
        f"{path}:12:5: mqtt.tls.key_file: client key not found: /abs/tls/client.key",
    ]

    # Lines come in file order, like the config's own errors, whatever order the sections are in.
    path.write_text("mqtt:\n  tls:\n    enabled: true\n    ca_file: ca.pem\n  username: bell\n"
                    "  password_file: pw\ncameras:\n  porch: {source: opencv, url: porch.mp4}\n")
    proc = _check_config(path)
    assert proc.returncode == 78
    assert [line.split(": ")[0] for line in proc.stderr.strip().splitlines()] == [
        f"{path}:4:5", f"{path}:6:3", f"{path}:8:27"]


def test_all_files_present_passes_and_says_as_whom(tmp_path: Path, video: Path) -> None:
    conf = tmp_path / "etc"
    path = _write_config(conf, CONFIG.replace("/abs/tls/client.key", "tls/client.key"))
    _fill(conf, video)
    proc = _check_config(path)
    assert proc.returncode == 0, proc.stderr
    me = pwd.getpwuid(os.geteuid()).pw_name
    assert proc.stdout.startswith(f"# files checked as the service user {me} (owner of the state dir {conf}/state)")
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["mqtt"]["password_file"] == f"{conf}/secrets/mqtt_password"
    assert resolved["mqtt"]["retain"] is True and resolved["mqtt"]["discovery"] is True


def test_a_directory_or_an_empty_password_file_is_named(tmp_path: Path, video: Path) -> None:
    conf = tmp_path / "etc"
    path = _write_config(conf, CONFIG.replace("/abs/tls/client.key", "tls/client.key"))
    _fill(conf, video)
    (conf / "secrets" / "mqtt_password").write_text("")
    (conf / "tls" / "ca.pem").unlink()
    (conf / "tls" / "ca.pem").mkdir()
    proc = _check_config(path)
    assert proc.returncode == 78
    assert proc.stderr.strip().splitlines() == [
        f"{path}:7:3: mqtt.password_file: password file {conf}/secrets/mqtt_password is empty",
        f"{path}:10:5: mqtt.tls.ca_file: CA file {conf}/tls/ca.pem is a directory, not a file",
    ]


def test_files_the_service_user_cannot_read(open_tmp: Path, video: Path) -> None:
    """The password file is the owner's (mode 0600) and the TLS folder is closed: the service user, who owns the
    state dir, cannot read them. As root the state dir goes to `nobody`; as anyone else the files are closed to
    their own owner (chmod 000), which is the same question asked of the same user."""
    conf = open_tmp / "etc"
    path = _write_config(conf, CONFIG.replace("/abs/tls/client.key", "tls/client.key"))
    _fill(conf, video)
    secret = conf / "secrets" / "mqtt_password"
    tls = conf / "tls"
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(conf / "state", nobody.pw_uid, nobody.pw_gid)
        secret.chmod(0o600)
        tls.chmod(0o700)
        user, mode, folder_mode = "nobody", "mode 0600, owner root:root", "mode 0700, owner root:root"
    else:
        secret.chmod(0o000)
        tls.chmod(0o000)
        me = pwd.getpwuid(os.geteuid()).pw_name
        user, mode, folder_mode = me, f"mode 0000, owner {me}:", f"mode 0000, owner {me}:"
    try:
        proc = _check_config(path)
    finally:
        tls.chmod(0o755)
    assert proc.returncode == 78, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 4, lines
    why = f"{user} (owner of the state dir {conf}/state)"
    assert lines[0].startswith(f"{path}:7:3: mqtt.password_file: password file {secret} is not readable by the "
                               f"service user {why}: {mode}"), lines[0]
    assert lines[0].endswith("; under systemd use mqtt.password_credential (the unit loads the file as root)")
    for line, (row, key, name) in zip(lines[1:], [(10, "ca_file", "ca.pem"), (11, "cert_file", "client.pem"),
                                                  (12, "key_file", "client.key")], strict=True):
        assert line.startswith(f"{path}:{row}:5: mqtt.tls.{key}: "), line
        if os.geteuid() == 0:
            assert f"{tls / name} is not readable by the service user {why}: it cannot enter {tls} " \
                   f"({folder_mode})" in line, line
    # Opened up, the same config passes.
    secret.chmod(0o644)
    tls.chmod(0o755)
    assert _check_config(path).returncode == 0


def test_service_user_rule(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = Config.model_validate({"storage": {"state_dir": str(state)}})
    me = service_user(config)
    try:
        pwd.getpwnam("doorbell-edge")
        system_user = True
    except KeyError:
        system_user = False
    if system_user:
        assert me.name == "doorbell-edge" and me.why == "the service's system user"
    else:
        assert me.uid == os.geteuid() and me.why.startswith("you: ")
    state.mkdir()
    owner = service_user(config)
    assert owner.uid == os.geteuid() and owner.why == f"owner of the state dir {state}"


def test_checks_as_another_user_follow_owner_group_other_bits(open_tmp: Path) -> None:
    secret = open_tmp / "pw"
    secret.write_text("x\n")
    mine = os.stat(secret)
    config = Config.model_validate({"mqtt": {"username": "u", "password_file": str(secret)},
                                    "storage": {"state_dir": str(open_tmp)}})
    stranger = ServiceUser("stranger", 54321, frozenset({54321}), "test")
    in_group = ServiceUser("member", 54322, frozenset({mine.st_gid}), "test")
    secret.chmod(0o640)
    assert len(check_files(config, None, stranger)) == 1
    assert check_files(config, None, in_group) == []
    secret.chmod(0o604)  # other may read, the group may not: the group's bits decide for a member
    assert check_files(config, None, stranger) == []
    assert len(check_files(config, None, in_group)) == 1
    assert "(built-in defaults):1:1: mqtt.password_file: " in check_files(config, None, in_group)[0]


def test_built_in_demo_has_nothing_to_check_and_retains_nothing(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if k != "DOORBELL_EDGE_CONFIG"}
    environ["DOORBELL_EDGE_STATE_DIR"] = str(tmp_path)
    if Path("/etc/doorbell-edge/config.yaml").exists():
        pytest.fail("/etc/doorbell-edge/config.yaml exists here: the built-in defaults cannot be tested")
    proc = subprocess.run([sys.executable, "-m", "edge", "check-config"], capture_output=True, text=True,
                          cwd=REPO, env=environ)
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["mqtt"]["discovery"] is False and resolved["mqtt"]["retain"] is False
