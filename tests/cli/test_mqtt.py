"""`doorbell-edge mqtt outbox | discovery | check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main
from edge.clock import SystemClock
from edge.events.bus import Event
from edge.mqtt.outbox import emit
from tests.mqtt.broker import free_port
from tests.mqtt.conftest import make_config


def write_config(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        "device:\n  id: clibell\n"
        f"mqtt:\n  host: 127.0.0.1\n  port: {port}\n  reconnect_min_s: 0.1\n  reconnect_max_s: 0.5\n"
        f"storage:\n  state_dir: {tmp_path / 'state'}\n"
    )
    return path


def test_outbox_reports_waiting_events(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOORBELL_EDGE_STATE_DIR", raising=False)
    path = write_config(tmp_path, 1883)
    config = make_config(tmp_path / "state", 1883)
    emit(config, Event("ring", None, SystemClock().now(), {"source": "cli"}))
    assert main(["mqtt", "outbox", "--json", "--config", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["waiting"] == 1 and report["last_seq"] == 1 and report["oldest_waiting_seq"] == 1


def test_discovery_prints_payloads(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOORBELL_EDGE_STATE_DIR", raising=False)
    assert main(["mqtt", "discovery", "--config", str(write_config(tmp_path, 1883))]) == 0
    assert "homeassistant/event/clibell/doorbell/config" in capsys.readouterr().out


def test_check_against_a_real_broker_and_a_dead_port(tmp_path: Path, broker, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOORBELL_EDGE_STATE_DIR", raising=False)
    assert main(["mqtt", "check", "--config", str(write_config(tmp_path, broker.port))]) == 0
    assert main(["mqtt", "check", "--timeout", "1", "--config", str(write_config(tmp_path, free_port()))]) == 1
    assert "cannot reach broker" in capsys.readouterr().err
