"""The command line as a user meets it: every command in the README, help on every argument, one `--config`,
one clear line instead of a traceback (missing folders, permission denied, a closed pipe), no runtime chatter."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.cli import add_config_arg, build_parser, human_time, main, print_fields

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """Every leaf command: (path, its parser, the help its parent gives it)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                leaf = not any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                if leaf:
                    yield (*path, name), sub, helps.get(name)
                yield from _commands(sub, (*path, name))


def _readme_commands() -> dict[str, str]:
    """The README's Commands table: the synopsis after `doorbell-edge ` -> the row."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Commands\n"): text.index("\n## ", text.index("## Commands\n") + 1)]
    rows = {}
    for line in section.splitlines():
        found = re.match(r"\| `doorbell-edge ([^`]+)` \|", line)
        if found:
            rows[found.group(1)] = line
    return rows


COMMANDS = list(_commands(build_parser()))


def test_the_walk_finds_the_commands() -> None:
    paths = {" ".join(p) for p, _, _ in COMMANDS}
    assert {"run", "requests renew-hold", "exports keygen", "audit show", "eval detect", "mqtt check"} <= paths
    assert len(paths) >= 29


@pytest.mark.parametrize("path", [" ".join(p) for p, _, _ in COMMANDS])
def test_every_command_is_in_the_readme_table_with_its_required_arguments(path: str) -> None:
    rows = _readme_commands()
    synopsis = next((s for s in rows if s == path or s.startswith(path + " ")), None)
    assert synopsis is not None, f"README.md's Commands table has no row for `doorbell-edge {path}`"
    parser = next(p for c, p, _ in COMMANDS if " ".join(c) == path)
    for action in parser._actions:
        if not action.option_strings:  # a positional: its metavar, as --help shows it
            word = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
            assert re.search(rf"\b{re.escape(word)}\b", synopsis), f"`{path}` row lacks its argument {word}"
        elif action.required:
            assert action.option_strings[0] in synopsis, f"`{path}` row lacks {action.option_strings[0]}"


def test_the_readme_names_run_for() -> None:
    assert any(s.startswith("run ") and "--for SECONDS" in s for s in _readme_commands())


@pytest.mark.parametrize("path", [" ".join(p) for p, _, _ in COMMANDS])
def test_every_command_and_argument_has_help(path: str) -> None:
    _, parser, help_text = next(c for c in COMMANDS if " ".join(c[0]) == path)
    assert help_text, f"`doorbell-edge {path}` has no help line in its parent's --help"
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in parser._actions
               if not a.help and not isinstance(a, argparse._HelpAction)]
    assert missing == [], f"`doorbell-edge {path}`: arguments without help: {missing}"


def test_config_reads_the_same_everywhere() -> None:
    reference = argparse.ArgumentParser()
    add_config_arg(reference)
    (want,) = [a for a in reference._actions if "--config" in a.option_strings]
    takes = []
    for path, parser, _ in COMMANDS:
        for action in parser._actions:
            if "--config" in action.option_strings:
                takes.append(path)
                got = (action.option_strings, action.metavar, action.help, action.default)
                assert got == (want.option_strings, want.metavar, want.help, want.default), " ".join(path)
    # every command that reads the config says so; only these do not read it
    assert {" ".join(p) for p, _, _ in COMMANDS} - {" ".join(p) for p in takes} == {
        "config-schema", "exports verify", "exports keygen"}


# --- one line, not a traceback --------------------------------------------------------------------------------


def _one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_eval_lfw_on_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "lfw", "--data", "/nonexistent"]) == 1
    assert "--data /nonexistent: no such folder" in _one_line(capsys.readouterr().err)
    (tmp_path / "images").mkdir()
    assert main(["eval", "lfw", "--data", str(tmp_path)]) == 1
    assert f"{tmp_path / 'pairs.txt'} is missing" in _one_line(capsys.readouterr().err)
    (tmp_path / "pairs.txt").write_text("ten folds\n")
    assert main(["eval", "lfw", "--data", str(tmp_path)]) == 1
    assert "line 1 should be '<folds> <pairs per fold>'" in _one_line(capsys.readouterr().err)


def test_eval_detect_on_missing_or_empty_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "junk.jpg").write_bytes(b"not a jpeg")
    assert main(["eval", "detect", "--faces", str(tmp_path / "nope"), "--negatives", str(photos)]) == 1
    assert f"--faces {tmp_path / 'nope'}: no such folder" in _one_line(capsys.readouterr().err)
    assert main(["eval", "detect", "--faces", str(photos), "--negatives", str(empty)]) == 1
    assert f"--negatives {empty}: no photos in it" in _one_line(capsys.readouterr().err)
    # photos that do not decode are no measurement either (this one loads the real detector)
    assert main(["eval", "detect", "--faces", str(photos), "--negatives", str(photos)]) == 1
    assert "no readable face photos (2 unreadable)" in _one_line(capsys.readouterr().err)


def _as_nobody() -> list[str]:
    """A command prefix that drops root (root reads everything, so no permission error would happen)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux) to drop to an ordinary user")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def test_permission_denied_is_one_line_naming_the_file() -> None:
    with tempfile.TemporaryDirectory(prefix="edge-perm-") as tmp:
        folder = Path(tmp) / "locked"
        folder.mkdir()
        os.chmod(tmp, 0o755)
        os.chmod(folder, 0o555)  # nobody (and an ordinary owner) may not create files in it
        result = subprocess.run(
            [*_as_nobody(), sys.executable, "-m", "edge", "exports", "keygen", str(folder / "agency.key")],
            capture_output=True, text=True, cwd=REPO, env={**os.environ, "HOME": tmp}, check=False,
        )
    assert result.returncode == 1, result
    line = _one_line(result.stderr)
    assert line.startswith(f"doorbell-edge: {folder / 'agency.key'}: Permission denied"), line
    assert "sudo -u doorbell-edge" in line


def _into_closed_pipe(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`doorbell-edge ... | head` where head is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "DOORBELL_EDGE_CONFIG"}
    env["DOORBELL_EDGE_STATE_DIR"] = str(tmp_path)
    try:
        return subprocess.run([sys.executable, "-m", "edge", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, cwd=REPO, env=env, check=False)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("argv", [["config-schema"], ["faces", "list"], ["audit", "show"]])
def test_a_closed_pipe_ends_quietly(argv: list[str], tmp_path: Path) -> None:
    """Exit 141 (what a shell shows for SIGPIPE) and one clear line: no traceback, no 'Exception ignored'."""
    result = _into_closed_pipe(argv, tmp_path)
    assert result.returncode == 141
    assert result.stderr == "doorbell-edge: output closed early (broken pipe); the rest was not printed\n"


def test_help_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    result = _into_closed_pipe(["requests", "approve", "--help"], tmp_path)  # argparse itself ignores the error
    assert result.returncode in (0, 141) and result.stderr == ""


def test_main_flushes_inside_its_handlers(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The closed pipe may show only when stdout is flushed: main() flushes before it returns."""
    flushed = []
    monkeypatch.setattr(sys.stdout, "flush", lambda: flushed.append(True))
    assert main(["config-schema"]) == 0
    assert flushed


# --- the TFLite runtime's info line ---------------------------------------------------------------------------


def test_the_xnnpack_info_line_is_not_printed() -> None:
    code = ("from edge.vision import runtime\n"
            "runtime.load('face_detector_int8.tflite'); runtime.load('face_embedder_int8.tflite')\n"
            "print('loaded')\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "loaded\n"
    assert "XNNPACK" not in result.stderr, result.stderr


def test_other_runtime_output_stays_visible(capfd: pytest.CaptureFixture[str]) -> None:
    from edge.vision.runtime import _runtime_chatter_dropped

    with _runtime_chatter_dropped():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        os.write(2, b"ERROR: Didn't find op for builtin opcode 'FOO'\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert err == "ERROR: Didn't find op for builtin opcode 'FOO'\nafter\n"


def test_a_model_that_fails_to_load_is_still_reported(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from edge.errors import ModelError
    from edge.vision.runtime import Model

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer")
    with pytest.raises(ModelError, match=r"cannot load bad\.tflite"):
        Model(bad)
    os.write(2, b"fd 2 is back\n")
    assert capfd.readouterr().err.endswith("fd 2 is back\n")


# --- output for people ----------------------------------------------------------------------------------------


@pytest.fixture
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_are_local_with_utc_in_brackets(berlin: None, monkeypatch: pytest.MonkeyPatch) -> None:
    assert human_time(datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)) == "2026-03-01 13:00:05 CET (12:00:05 UTC)"
    assert human_time("2026-07-01T23:30:00.000Z") == "2026-07-02 01:30:00 CEST (2026-07-01 23:30:00 UTC)"
    assert human_time(None) == "-" and human_time("not a time") == "not a time"
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    assert human_time("2026-03-01T12:00:05Z") == "2026-03-01 12:00:05 UTC"


def test_fields_are_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    print_fields([("clip", "c1"), ("snapshots", 2), ("held", "W-1\nW-2")])
    assert capsys.readouterr().out.splitlines() == [
        "clip:      c1",
        "snapshots: 2",
        "held:      W-1",
        "           W-2",
    ]


# --- deploy/dev.sh and config/example.yaml --------------------------------------------------------------------


def test_dev_sh_help_prints_only_the_usage() -> None:
    script = REPO / "deploy" / "dev.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    result = subprocess.run(["sh", str(script), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "usage:" and len(lines) == 3
    assert all(line.startswith("  deploy/dev.sh ") for line in lines[1:])
    assert [line.split()[1] for line in lines[1:]] == ["run", "test"]
    assert result.stderr == ""
    wrong = subprocess.run(["sh", str(script), "bogus"], capture_output=True, text=True, check=False)
    assert wrong.returncode == 2 and wrong.stdout == "" and wrong.stderr == result.stdout


def test_example_config_names_the_credential_the_unit_loads() -> None:
    import yaml

    from edge.config_load import load_config

    unit = (REPO / "systemd" / "doorbell-edge.service").read_text()
    (load,) = re.findall(r"^LoadCredential=(\S+)$", unit, re.M)
    name = load.split(":", 1)[0]
    example = (REPO / "config" / "example.yaml").read_text()
    assert f"LoadCredential={load}" in example
    assert f"password_credential: {name}" in example
    # and that name is what the config accepts for the credential
    data = yaml.safe_load(example)
    data["mqtt"].update(username="doorbell", password_credential=name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        assert load_config(path, environ={}).mqtt.password_credential == name
