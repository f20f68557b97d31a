"""Makes tests/events/fixtures/: state dirs written by the outbox before the event journal (edge/mqtt/outbox.py at
commit 257a599f, file `mqtt-outbox.sqlite3`, schema 1), for the migration tests. Run once from the repository root:

    .venv/bin/python tests/events/make_fixture.py

It loads that commit's outbox.py from git into a throwaway module, so the files are exactly what the old code
wrote. Two state dirs: `closed/` (the daemon stopped cleanly: no -wal), `killed/` (copied while the outbox was open,
the way SIGKILL leaves it: the newest rows only in mqtt-outbox.sqlite3-wal).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

OLD_COMMIT = "257a599f36739e7cecd2a7512773ce71df0c1df4"
REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests/events/fixtures"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def old_outbox_module() -> object:
    sys.path.insert(0, str(REPO))  # the old module imports edge.* (unchanged parts) from this tree
    source = subprocess.run(["git", "show", f"{OLD_COMMIT}:edge/mqtt/outbox.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp())
    (folder / "old_outbox.py").write_text(source)
    spec = importlib.util.spec_from_file_location("old_outbox", folder / "old_outbox.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_outbox"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def fill(outbox: object, events: list[object]) -> None:
    """12 events recorded (seq 3 and 4 dropped for size on the way), seq 1-4 acknowledged; ring seq 7 already fed."""
    stamped = [outbox.record(e) for e in events]  # type: ignore[attr-defined]
    outbox.remove([1, 2, 3, 4])  # type: ignore[attr-defined]
    outbox.mark_fed(stamped[6].id)  # type: ignore[attr-defined]


def events() -> list[object]:
    from edge.events.bus import Event

    kinds = ["system", "ring", "motion_start", "motion_end", "motion_start", "person", "ring", "face",
             "footage_request", "motion_end", "system", "ring"]
    made = []
    for i, kind in enumerate(kinds):
        fields: dict[str, object] = {"ring": {"source": "button"}, "system": {"status": "started"},
                                     "face": {"result": "known", "person": "alice", "confidence": 0.9},
                                     "footage_request": {"request": "fr-1", "state": "received"}}.get(kind, {})
        made.append(Event(kind, None if kind in ("system", "footage_request") else "front_door",
                          T0 + timedelta(minutes=i), fields, id=f"old-event-{i + 1:02d}"))
    return made


def main() -> None:
    old = old_outbox_module()
    for name in ("closed", "killed"):
        shutil.rmtree(OUT / name, ignore_errors=True)
        (OUT / name).mkdir(parents=True)
    # max_events 10: recording the 11th and 12th drops the two oldest motion events (seq 3, 4) for size
    bounds = old.OutboxBounds(max_events=10)  # type: ignore[attr-defined]
    work = Path(tempfile.mkdtemp())
    with old.Outbox(work / "a" / "mqtt-outbox.sqlite3", bounds) as outbox:  # type: ignore[attr-defined]
        fill(outbox, events())
    shutil.copy2(work / "a" / "mqtt-outbox.sqlite3", OUT / "closed" / "mqtt-outbox.sqlite3")
    outbox = old.Outbox(work / "b" / "mqtt-outbox.sqlite3", bounds)  # type: ignore[attr-defined]
    outbox._db.execute("PRAGMA wal_autocheckpoint=0")  # keep every row in the -wal, as a busy daemon may
    fill(outbox, events())
    for suffix in ("", "-wal"):
        shutil.copy2(work / "b" / f"mqtt-outbox.sqlite3{suffix}", OUT / "killed" / f"mqtt-outbox.sqlite3{suffix}")
    outbox.close()
    print(f"wrote {OUT}/closed and {OUT}/killed")


if __name__ == "__main__":
    main()
