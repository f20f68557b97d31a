"""Root's part in an owner command is recorded: a root-run command that became the state dir's owner says
"<owner> (uid N), run by root (uid 0)" (issue 12), from the process itself, not from the environment."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

NOBODY = pwd.getpwnam("nobody")

# Everything imported before the switch: after it, this process may not read the checkout any more.
PROGRAM = """
import sys
from pathlib import Path
from edge import permissions
from edge.service import owner
print("before:", permissions.real_user())
owner.become_owner(Path(sys.argv[1]), "doorbell-edge requests approve X")
print("after:", permissions.real_user())
"""


def _run(state: Path, **env: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(state)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_root_run_command_that_became_the_owner_records_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root (CI runs the suite as root)")
        pytest.skip("needs root: it switches to nobody")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, NOBODY.pw_uid, NOBODY.pw_gid)
    before, after = _run(state, LOGNAME="someone", USER="someone")
    assert before == "before: root (uid 0)" or before.startswith("before: root (uid 0), logged in as ")
    expected = f"after: nobody (uid {NOBODY.pw_uid}), run by root (uid 0)"
    assert after == expected or after.startswith(expected + ", logged in as "), after
    assert "someone" not in after


def test_root_keeping_its_own_state_dir_records_no_switch(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    state = tmp_path / "state"
    state.mkdir()  # root's own: nothing to switch to
    before, after = _run(state)
    assert after.replace("after:", "before:") == before
    assert "run by" not in after


def test_an_environment_variable_cannot_claim_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge import permissions

    monkeypatch.setenv("DOORBELL_EDGE_RUN_BY", "0")
    monkeypatch.setattr(permissions, "_run_by", None)
    assert "run by" not in permissions.real_user()
