"""The journal takes over a state dir written by the outbox before it (fixtures made by that code: make_fixture.py):
every waiting event, feed mark and drop counter is kept, none duplicated, also when SIGKILLed at each step."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.config import Config
from edge.crashpoints import ENV
from edge.events.bus import Event
from edge.events.journal import JOURNAL_FILE, MQTT, OLD_OUTBOX_FILE
from edge.events.journal_files import last_seq_of, migrate_outbox, open_journal
from edge.mqtt.outbox import Outbox

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
WAITING = list(range(5, 13))  # what the old outbox held: seq 1-4 were acknowledged or dropped before


def state_from(fixture: str, tmp_path: Path) -> Path:
    state = tmp_path / "state"
    shutil.copytree(FIXTURES / fixture, state)
    return state


def config(state: Path) -> Config:
    return Config(storage={"state_dir": state})


def check_migrated(state: Path) -> None:
    """What the old code left waiting, in the journal once, with its marks; the old file gone."""
    with open_journal(config(state)) as journal:  # migrates, or finishes an interrupted migration
        assert not (state / OLD_OUTBOX_FILE).exists() and not Path(f"{state / OLD_OUTBOX_FILE}-wal").exists()
        assert not (state / (JOURNAL_FILE + ".migrating")).exists()
        assert oct((state / JOURNAL_FILE).stat().st_mode & 0o777) == "0o600"
        pending = journal.pending(MQTT, limit=100)
        assert [p.seq for p in pending] == WAITING
        assert [p.id for p in pending] == [f"old-event-{s:02d}" for s in WAITING]
        assert [p.seq for p in pending if p.fed] == [7]  # the ring already given to the doorbell feed
        assert journal.drops(MQTT) == {("size", "motion_start"): 1, ("size", "motion_end"): 1}
        assert [r.seq for r in journal.history(limit=100)] == WAITING
        assert journal.stats(MQTT).last_seq == 12
        stamped = journal.record(Event("ring", "front_door", datetime.now(UTC), {"source": "button"}))
        assert stamped.seq == 13


@pytest.mark.parametrize("fixture", ["closed", "killed"])
def test_a_state_dir_written_by_the_outbox_is_migrated(tmp_path: Path, fixture: str) -> None:
    state = state_from(fixture, tmp_path)
    assert migrate_outbox(state)
    check_migrated(state)
    assert not migrate_outbox(state)  # once only


def test_an_outbox_file_opened_by_path_is_converted_in_place(tmp_path: Path) -> None:
    state = state_from("closed", tmp_path)
    with Outbox(state / OLD_OUTBOX_FILE) as outbox:
        assert [p.seq for p in outbox.pending(limit=100)] == WAITING
        assert outbox.stats().dropped == 2
    with sqlite3.connect(state / OLD_OUTBOX_FILE) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        assert db.execute("SELECT name FROM sqlite_master WHERE name IN ('outbox', 'fed')").fetchall() == []


def _migrate_and_record(state: str) -> None:
    with open_journal(Config(storage={"state_dir": state})) as journal:
        journal.record(Event("ring", None, datetime.now(UTC), {"source": "cli"}))


def test_two_processes_migrating_at_once_neither_loses_nor_duplicates(tmp_path: Path) -> None:
    state = state_from("killed", tmp_path)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_migrate_and_record, args=(str(state),)) for _ in range(2)]
    for p in procs:
        p.start()
    _migrate_and_record(str(state))
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with open_journal(config(state)) as journal:
        assert [p.seq for p in journal.pending(MQTT, limit=100)] == [*WAITING, 13, 14, 15]
        assert len({r.id for r in journal.history(limit=100)}) == 11
    assert not (state / OLD_OUTBOX_FILE).exists()


CHILD = """
import sys
from edge.config import Config
from edge.events.journal_files import open_journal
open_journal(Config(storage={"state_dir": sys.argv[1]})).close()
"""


@pytest.mark.parametrize("point", ["journal-migrate-built", "journal-migrate-renamed"])
@pytest.mark.parametrize("fixture", ["closed", "killed"])
def test_sigkill_at_each_migration_step_loses_and_duplicates_nothing(tmp_path: Path, fixture: str,
                                                                     point: str) -> None:
    state = state_from(fixture, tmp_path)
    child = subprocess.run([sys.executable, "-c", CHILD, str(state)], env={**os.environ, ENV: point}, cwd=REPO,
                           capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    if point == "journal-migrate-built":  # killed before the rename: the old file is untouched
        assert (state / OLD_OUTBOX_FILE).exists() and not (state / JOURNAL_FILE).exists()
        assert (state / (JOURNAL_FILE + ".migrating")).exists()
    else:  # killed after the rename: both files, the old one a leftover the next open removes
        assert (state / OLD_OUTBOX_FILE).exists() and (state / JOURNAL_FILE).exists()
    check_migrated(state)


def test_a_read_only_state_dir_numbers_on_from_the_old_file(tmp_path: Path) -> None:
    state = state_from("killed", tmp_path)
    assert last_seq_of(state) == 12  # read without writing (the -wal is read, nothing migrated)
    assert (state / OLD_OUTBOX_FILE).exists() and not (state / JOURNAL_FILE).exists()


def test_a_damaged_outbox_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / OLD_OUTBOX_FILE).write_bytes(b"not a database" * 100)
    from edge.errors import StorageError

    with pytest.raises(StorageError, match=rf"cannot migrate {state / OLD_OUTBOX_FILE}: .*left as it was"):
        migrate_outbox(state)
    assert (state / OLD_OUTBOX_FILE).read_bytes() == b"not a database" * 100
    assert not (state / JOURNAL_FILE).exists() and not (state / (JOURNAL_FILE + ".migrating")).exists()
