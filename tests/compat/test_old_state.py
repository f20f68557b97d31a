"""A state dir written by the code of 68299a3 (before the issue 14 restructuring) is read by this code: every owner
command shows what the old code showed about it (tests/compat/expected/, recorded by make_state.py with the old
CLI), the audit chain still verifies, the export still verifies, and a daemon run on it keeps the held clip, lets
retention delete the one whose hold lapsed, and keeps the old events in the journal.

Only the command line is used (subprocesses, as an owner would), so the test does not depend on internals."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.compat.make_state import ARCHIVE, EVENTS_SINCE, EVENTS_UNTIL, EXPECTED, cli_env, run_cli, steps

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def expected(name: str) -> dict[str, Any]:
    return dict(json.loads((EXPECTED / f"{name}.json").read_text()))


def lines_of_json(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def agrees(old: Any, new: Any, where: str = "") -> list[str]:
    """Where `new` differs from `old` on what old showed (new may add keys to an object: a newer version may say
    more, but not less or otherwise)."""
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{where or '.'}: {new!r} is not an object like {old!r}"]
        out = []
        for key, value in old.items():
            if key not in new:
                out.append(f"{where}.{key}: missing (old: {value!r})")
            else:
                out.extend(agrees(value, new[key], f"{where}.{key}"))
        return out
    if isinstance(old, list):
        if not isinstance(new, list) or len(new) != len(old):
            return [f"{where or '.'}: {new!r} differs from {old!r}"]
        return [p for i, (a, b) in enumerate(zip(old, new, strict=True)) for p in agrees(a, b, f"{where}[{i}]")]
    return [] if old == new else [f"{where or '.'}: {new!r} != old {old!r}"]


class Fixture:
    """The unpacked fixture and the outputs of the new CLI, run once in make_state.py's order (some of the old
    commands write: `requests list` sweeps lapsed holds, so the order is the one the expected outputs saw)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cfg = str(root / "config.yaml")
        self.out: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(self, name: str, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        result = run_cli(self.root, *argv, timeout=timeout)
        self.out[name] = result
        return result

    def stdout(self, name: str) -> str:
        return self.out[name].stdout.replace(str(self.root), "<ROOT>")

    def stderr(self, name: str) -> str:
        return self.out[name].stderr.replace(str(self.root), "<ROOT>")


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    tmp = tmp_path_factory.mktemp("compat")
    # The commands must run this checkout's code (not an old tree left on PYTHONPATH by make_state.py's recipe).
    where = subprocess.run([sys.executable, "-c", "import edge; print(edge.__file__)"], cwd=tmp, env=cli_env(),
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).resolve().is_relative_to(REPO), f"the CLI would run {where}, not this checkout"
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(tmp, filter="data")
    made = Fixture(tmp / "fixture")
    keys = made.run("keys-show", "keys", "show", "--json", "--config", made.cfg)
    fingerprint = json.loads(keys.stdout)["fingerprint"] if keys.returncode == 0 else "unreadable-key"
    bundle = (EXPECTED / "bundle.txt").read_text().strip()
    for name, argv in steps(made.root, bundle, fingerprint):
        made.run(name, *argv)
    ids = [r["id"] for r in json.loads(expected("requests-list")["stdout"])]
    for i, request in enumerate(ids):
        made.run(f"requests-show-{i + 1}", "requests", "show", request, "--json", "--config", made.cfg)
    made.run("daemon-run", "run", "--config", made.cfg, "--for", "8")
    made.run("after-clips-list", "clips", "list", "--json", "--config", made.cfg)
    made.run("after-events-list", "events", "list", "--json", "--since", EVENTS_SINCE, "--until", EVENTS_UNTIL,
             "--config", made.cfg)
    made.run("after-audit-verify", "audit", "verify", "--config", made.cfg)
    held = lines_of_json(expected("clips-list")["stdout"])[0]["id"]
    made.run("after-clips-show", "clips", "show", held, "--json", "--config", made.cfg)
    return made


def ok(fixture: Fixture, name: str) -> None:
    result = fixture.out[name]
    assert result.returncode == 0, f"{name}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_the_device_key_is_the_old_one(fixture: Fixture) -> None:
    ok(fixture, "keys-show")
    old, new = json.loads(expected("keys-show")["stdout"]), json.loads(fixture.stdout("keys-show"))
    assert (new["fingerprint"], new["public_key"]) == (old["fingerprint"], old["public_key"])


def test_the_old_config_is_valid_and_resolves_the_same(fixture: Fixture) -> None:
    ok(fixture, "check-config")
    old = yaml.safe_load(expected("check-config")["stdout"])
    new = yaml.safe_load(fixture.stdout("check-config"))
    given = yaml.safe_load((fixture.root / "config.yaml").read_text())
    # What the owner wrote resolves as before (state_dir from the config's folder); options added since are fine.
    for section in given:
        assert agrees(old[section], new[section], section) == []
    assert new["storage"]["state_dir"] == "<ROOT>/state"


def test_events_list_shows_the_old_history_with_its_delivery_marks(fixture: Fixture) -> None:
    ok(fixture, "events-list")
    old = lines_of_json(expected("events-list")["stdout"])
    new = lines_of_json(fixture.stdout("events-list"))
    assert [e["id"] for e in new] == [e["id"] for e in old] == [f"compat-event-{i:02d}" for i in range(1, 8)]
    assert agrees(old, new) == []
    assert [e["delivery"]["mqtt"] for e in new] == ["delivered"] * 4 + ["waiting"] * 3
    ok(fixture, "events-list-text")
    text = fixture.stdout("events-list-text").splitlines()
    assert len(text) == len(old)
    for line, event in zip(text, old, strict=True):
        words = line.split()
        assert words[0] == str(event["seq"]) and event["type"] in words, line
        assert f"mqtt {event['delivery']['mqtt']}" in line, line


def test_clips_list_shows_both_old_clips_and_the_manual_hold(fixture: Fixture) -> None:
    ok(fixture, "clips-list")
    old = lines_of_json(expected("clips-list")["stdout"])
    new = lines_of_json(fixture.stdout("clips-list"))
    assert agrees(old, new) == []
    assert [c["held"] for c in new] == [True, False]
    ok(fixture, "clips-list-text")
    rows = {line.split()[0]: line.split() for line in fixture.stdout("clips-list-text").splitlines()[1:]}
    assert list(rows) == [c["id"] for c in old]
    assert rows[old[0]["id"]][-1] == "held" and rows[old[1]["id"]][-1] == "-"


def test_faces_list_shows_the_enrolled_face_and_its_consent(fixture: Fixture) -> None:
    ok(fixture, "faces-list")
    old, new = json.loads(expected("faces-list")["stdout"]), json.loads(fixture.stdout("faces-list"))
    assert agrees(old, new) == []
    assert [(f["name"], f["consent_by"], f["consent_date"]) for f in new] == [("paul", "Paul (self)", "2026-03-09")]
    # Enrolled before consent end dates: still enrolled (and recognised), shown with a warning until the owner
    # records an end date; given a random id for the audit log when the gallery was first opened.
    assert new[0]["consent_until"] is None and new[0]["consent_status"]["code"] == "no_end_date"
    assert new[0]["consent_status"]["text"] == "no end date recorded"
    assert len(new[0]["person_id"]) == 12 and "paul" not in new[0]["person_id"]
    assert "warning: paul: no consent end date recorded" in fixture.stderr("faces-list")


def test_requests_list_and_show_tell_the_old_story(fixture: Fixture) -> None:
    ok(fixture, "requests-list")
    old_rows = json.loads(expected("requests-list")["stdout"])
    assert agrees(old_rows, json.loads(fixture.stdout("requests-list"))) == []
    assert [r["state"] for r in old_rows] == ["exported", "hold_expired"]
    for i in range(1, len(old_rows) + 1):
        name = f"requests-show-{i}"
        ok(fixture, name)
        old, new = json.loads(expected(name)["stdout"]), json.loads(fixture.stdout(name))
        # "now" is judged at the real time, its details quote it: compare the decision and its reason codes.
        assert new["now"]["decision"] == old["now"]["decision"]
        assert [r["code"] for r in new["now"]["reasons"]] == [r["code"] for r in old["now"]["reasons"]]
        # The export's absolute path is where make_state.py wrote it; the file name is what must be kept.
        for export in old["exports"]:
            export["path"] = Path(export["path"]).name
        for export in new.get("exports", []):
            export["path"] = Path(export["path"]).name
        # When the lapsed hold was swept is the real time of the first command that looked.
        for hold in old["holds"]:
            hold.pop("expired_at", None)
        problems = agrees({k: v for k, v in old.items() if k != "now"}, new)
        assert problems == [], problems
        if old["legal_basis"] == "preservation":
            assert new["holds"][0]["until"] == "2026-06-08T12:41:00.000Z" and new["holds"][0]["expired_at"]


def test_audit_verify_passes_on_the_old_log(fixture: Fixture) -> None:
    ok(fixture, "audit-verify")
    count = re.search(r"(\d+) record\(s\), chain intact", expected("audit-verify")["stdout"])
    assert count is not None
    assert f"{count.group(1)} record(s), chain intact" in fixture.stdout("audit-verify")


def test_the_old_export_bundle_verifies(fixture: Fixture) -> None:
    ok(fixture, "exports-verify")
    old = expected("exports-verify")["stdout"].splitlines()
    new = fixture.stdout("exports-verify").splitlines()
    assert ": OK, signed by device compatbell" in new[0]
    assert new[1:] == old[1:]


def test_a_daemon_run_keeps_the_held_clip_and_the_old_events(fixture: Fixture) -> None:
    ok(fixture, "daemon-run")
    ok(fixture, "after-clips-list")
    before = lines_of_json(expected("clips-list")["stdout"])
    held, lapsed = before[0]["id"], before[1]["id"]
    after = {c["id"]: c for c in lines_of_json(fixture.stdout("after-clips-list"))}
    old_after = {c["id"] for c in lines_of_json(expected("after-clips-list")["stdout"])}
    # The old daemon kept the held clip and deleted the one whose preservation hold had lapsed; so must this one
    # (the deletion shows that retention did run).
    assert held in old_after and lapsed not in old_after
    assert held in after and after[held]["held"] is True, after
    assert lapsed not in after, f"retention did not run: {lapsed} (expired, hold lapsed) is still there"
    assert agrees(before[0], after[held]) == []
    ok(fixture, "after-clips-show")  # exit 0 only when the file is there and matches its sha256
    old_show = json.loads(expected("after-clips-show")["stdout"])
    new_show = json.loads(fixture.stdout("after-clips-show"))
    assert new_show["sha256_ok"] is True and new_show["sha256"] == old_show["sha256"]
    manual = [("2099-01-01T00:00:00.000Z", "owner: the broken fence")]
    assert [(h["until"], h["reference"]) for h in old_show["holds"]] == manual
    assert [(h["until"], h["reference"]) for h in new_show["holds"]] == manual
    ok(fixture, "after-events-list")
    old_events = lines_of_json(expected("after-events-list")["stdout"])
    assert agrees(old_events, lines_of_json(fixture.stdout("after-events-list"))) == []
    ok(fixture, "after-audit-verify")
