"""The systemd unit verifies, carries its required directives, and install.sh --dry-run runs clean."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "doorbell-edge.service"
INSTALL_PATH = "/opt/doorbell-edge/venv/bin/doorbell-edge"


def unit_directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_unit_has_the_service_contract() -> None:
    d = unit_directives()
    assert d["Type"] == ["notify"]
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["78"]
    assert d["User"] == ["doorbell-edge"]
    assert "video" in d["SupplementaryGroups"][0].split()
    assert d["StateDirectory"] == ["doorbell-edge"]
    assert d["ConfigurationDirectory"] == ["doorbell-edge"]
    assert any(v.lstrip("-").startswith("mqtt_password:") for v in d["LoadCredential"])
    assert int(d["WatchdogSec"][0]) > 0
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "RestrictAddressFamilies"):
        assert hardening in d


def test_every_hardening_directive_has_a_comment() -> None:
    lines = UNIT.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "Hardening" in line)
    for i in range(start + 1, len(lines)):
        line = lines[i].strip()
        if line.startswith("["):
            break
        if line and not line.startswith("#"):
            assert lines[i - 1].strip().startswith("#"), f"no comment above: {line}"


def test_systemd_analyze_verify_reports_no_errors(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    # The unit points at the install location, which exists only after install.sh; verify the same unit
    # with that path replaced by a real executable so verify checks everything else.
    unit = tmp_path / "doorbell-edge.service"
    unit.write_text(UNIT.read_text().replace(INSTALL_PATH, sys.executable))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


# Every command install.sh uses to change the system; a dry run must run none of them.
MUTATING_COMMANDS = (
    "apt-get",
    "useradd",
    "usermod",
    "userdel",
    "groupadd",
    "groupdel",
    "install",
    "cp",
    "mkdir",
    "rm",
    "ln",
    "touch",
    "chown",
    "chgrp",
    "chmod",
    "systemctl",
    "python3",
    "runuser",
    "pip",
)


def dry_run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run install.sh --dry-run ARGS with every mutating command shadowed by a shim that records its use."""
    shims = tmp_path / "bin"
    shims.mkdir()
    calls = tmp_path / "calls.log"
    for name in MUTATING_COMMANDS:
        shim = shims / name
        shim.write_text(f'#!/bin/sh\necho {name} "$@" >> {calls}\n')
        shim.chmod(0o755)
    env = dict(os.environ, PATH=f"{shims}:{os.environ['PATH']}")
    proc = subprocess.run(
        [str(REPO / "deploy" / "install.sh"), "--dry-run", *args], capture_output=True, text=True, env=env
    )
    return proc, calls


def test_install_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    proc, calls = dry_run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for step in (
        "Installing apt packages",
        "Creating the service user",
        "Installing the application",
        "Configuration in /etc/doorbell-edge",
        "The doorbell-edge command on PATH",
        "State directory /var/lib/doorbell-edge",
        "Installing the systemd unit",
        "Done",
    ):
        assert f"==> {step}" in out
    assert "python3 -m venv --system-site-packages /opt/doorbell-edge/venv" in out or "venv exists" in out
    assert (
        "$ ln -sfn /opt/doorbell-edge/venv/bin/doorbell-edge /usr/local/bin/doorbell-edge" in out
        or "unchanged: /usr/local/bin/doorbell-edge -> /opt/doorbell-edge/venv/bin/doorbell-edge" in out
    )
    assert "install -d -m 0750 -o doorbell-edge -g doorbell-edge /var/lib/doorbell-edge" in out or (
        "unchanged: /var/lib/doorbell-edge (0750 doorbell-edge:doorbell-edge)" in out
    )
    assert "dry run:" in out and "nothing was changed" in out
    assert not calls.exists(), f"dry run executed: {calls.read_text()}"


def test_uninstall_dry_run_names_every_step_keeps_state_and_changes_nothing(tmp_path: Path) -> None:
    proc, calls = dry_run(tmp_path, "--uninstall")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for step in (
        "Stopping the service",
        "Removing the systemd unit",
        "Removing the command /usr/local/bin/doorbell-edge",
        "Removing the application in /opt/doorbell-edge",
        "Removing the service user doorbell-edge",
        "State and configuration",
    ):
        assert f"==> {step}" in out
    assert "rm -rf /var/lib/doorbell-edge" not in out
    assert "rm -rf /etc/doorbell-edge" not in out
    assert not calls.exists(), f"dry run executed: {calls.read_text()}"


def test_purge_dry_run_removes_state_and_config(tmp_path: Path) -> None:
    proc, calls = dry_run(tmp_path, "--purge")
    assert proc.returncode == 0, proc.stderr
    for path in ("/var/lib/doorbell-edge", "/etc/doorbell-edge"):
        assert f"$ rm -rf {path}" in proc.stdout or f"already gone: {path}" in proc.stdout
    assert not calls.exists(), f"dry run executed: {calls.read_text()}"


def test_install_help_prints_only_the_usage_text() -> None:
    proc = subprocess.run([str(REPO / "deploy" / "install.sh"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Usage: deploy/install.sh")
    for option in ("--dry-run", "--uninstall", "--purge", "--help"):
        assert option in proc.stdout
    # No script lines: no shell statements, comments, or variable names left unexpanded.
    for line in lines:
        assert not line.startswith(("set ", "#", "umask")), line
        assert "$" not in line, line
    assert proc.stderr == ""


def test_install_rejects_unknown_options() -> None:
    proc = subprocess.run([str(REPO / "deploy" / "install.sh"), "--frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown option: --frobnicate" in proc.stderr


def test_pi_starting_config_is_valid() -> None:
    from edge.config_load import load_config

    config = load_config(REPO / "deploy" / "config.pi.yaml", environ={})
    assert config.cameras["front_door"].source == "picamera2"


def test_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert {"Unit", "Service", "Install"} <= set(parser.sections())


def test_install_test_script_parses_and_its_help_is_only_text() -> None:
    # deploy/test-install.sh is the real install test (root, network, minutes): CI's slower job runs it;
    # here only that it parses and documents itself.
    script = REPO / "deploy" / "test-install.sh"
    syntax = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("The real install test:")
    assert "--no-cache" in proc.stdout and "--keep" in proc.stdout
    for line in proc.stdout.splitlines():
        assert not line.startswith(("#", "set ", "shellcheck")), line


@pytest.mark.parametrize("script", ["install.sh", "test-install.sh"])
def test_deploy_scripts_pass_shellcheck(script: str) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed on this machine (apt-get install shellcheck)")
    proc = subprocess.run([shellcheck, str(REPO / "deploy" / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
