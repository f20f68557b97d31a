"""`doorbell-edge events list`: yesterday's events after the broker (a real mosquitto) acknowledged them and after a
restart; windows, types, the newest N, and clear errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge.cli import main
from edge.clock import SystemClock
from edge.events.bus import Event, EventBus
from edge.mqtt.service import build
from edge.mqtt.topics import topics_for
from tests.mqtt.broker import Broker
from tests.mqtt.conftest import make_config, wait_until


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"device:\n  id: testbell\nmqtt:\n  host: 127.0.0.1\n  port: {port}\n  reconnect_min_s: 0.1\n"
                    f"  reconnect_max_s: 0.5\nstorage:\n  state_dir: {tmp_path / 'state'}\n")
    return path


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, object]]:
    assert main(["events", "list", "--json", *args]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_yesterdays_events_are_listed_after_the_broker_acked_them_and_a_restart(
        tmp_path: Path, broker: Broker, subscribe, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOORBELL_EDGE_STATE_DIR", raising=False)
    path = write_config(tmp_path, broker.port)
    config = make_config(tmp_path / "state", broker.port)
    topics = topics_for(config)
    sub = subscribe([topics.events])
    now = datetime.now(UTC)
    yesterday = now - timedelta(hours=20)
    before = now - timedelta(hours=30)
    service = build(config, (bus := EventBus()), SystemClock(), dict)
    service.start()
    try:
        old = bus.publish(Event("ring", "front_door", before, {"source": "button"}))
        ring = bus.publish(Event("ring", "front_door", yesterday, {"source": "button"}))
        face = bus.publish(Event("face", "front_door", yesterday + timedelta(seconds=5),
                                 {"result": "known", "person": "alice"}))
        motion = bus.publish(Event("motion_start", "front_door", yesterday + timedelta(seconds=6), {"score": 0.4}))
        wait_until(lambda: {e["seq"] for e in sub.json_on(topics.events)} >= {1, 2, 3, 4}, what="all on the broker")
        wait_until(lambda: service.journal.stats().waiting == 0, what="every PUBACK")
    finally:
        service.stop()
    # a restart: the daemon comes up again (a new process would open the same file) and goes down
    again = build(config, EventBus(), SystemClock(), dict)
    again.start()
    again.stop()

    got = listed(capsys, "--config", str(path))  # the last day
    assert [e["id"] for e in got] == [ring.id, face.id, motion.id]
    assert [e["seq"] for e in got] == [2, 3, 4]
    assert all(e["delivery"] == {"mqtt": "delivered"} for e in got)
    assert got[1]["person"] == "alice" and got[1]["ts"] == (yesterday + timedelta(seconds=5)).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    assert [e["id"] for e in listed(capsys, "--since", "2d", "--type", "ring", "--config", str(path))] == [
        old.id, ring.id]
    assert [e["seq"] for e in listed(capsys, "--limit", "2", "--config", str(path))] == [3, 4]
    assert listed(capsys, "--until", "2d", "--config", str(path)) == []
    # for people: one line each, oldest first, with the delivery state
    assert main(["events", "list", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 3 and "ring" in lines[0] and "person=\"alice\"" in lines[1] and "[mqtt delivered]" in lines[2]
    assert err.startswith("3 events from ")


def test_paging_the_newest_n_and_a_window_says_what_is_left(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOORBELL_EDGE_STATE_DIR", raising=False)
    path = write_config(tmp_path, 1)
    config = make_config(tmp_path / "state", 1, enabled=False)
    now = datetime.now(UTC)
    service = build(config, (bus := EventBus()), SystemClock(), dict)
    try:
        for minute in range(10):
            bus.publish(Event("motion_start", "front_door", now - timedelta(minutes=60 - minute), {}))
    finally:
        service.stop()
    assert [e["seq"] for e in listed(capsys, "--limit", "3", "--config", str(path))] == [8, 9, 10]
    main(["events", "list", "--limit", "3", "--config", str(path)])
    assert "older ones: --until TIME or a larger --limit" in capsys.readouterr().err
    got = listed(capsys, "--since", "2h", "--limit", "4", "--config", str(path))
    assert [e["seq"] for e in got] == [1, 2, 3, 4] and all(e["delivery"] == {"mqtt": "waiting"} for e in got)


def test_an_empty_state_dir_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOORBELL_EDGE_STATE_DIR", raising=False)
    path = write_config(tmp_path, 1)
    (tmp_path / "state").mkdir()
    assert main(["events", "list", "--config", str(path)]) == 0
    assert "no events recorded yet" in capsys.readouterr().err
    assert not (tmp_path / "state" / "events.sqlite3").exists()  # a reader creates nothing
    for bad, said in ((["--since", "yesterday-ish"], "is not a time"), (["--since", "2026-03-01T12:00:00"],
                      "no time zone"), (["--type", "doorbell"], "invalid choice"), (["--limit", "0"], "at least 1")):
        with pytest.raises(SystemExit) as exit_:
            main(["events", "list", *bad, "--config", str(path)])
        assert exit_.value.code == 2
        assert said in capsys.readouterr().err
