"""MQTT command floods: snapshot, discovery and state commands are rate limited, counted and logged once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge.clock import FakeClock, SystemClock
from edge.events.bus import EventBus
from edge.mqtt.commands import Command, CommandLimits
from edge.mqtt.service import build
from edge.mqtt.topics import topics_for
from tests.mqtt.conftest import make_config, wait_until


def test_one_command_of_each_name_per_interval() -> None:
    clock = FakeClock()
    limits = CommandLimits(clock.monotonic, snapshot_interval_s=5.0, command_interval_s=1.0)
    snapshot, state, discovery = Command("snapshot"), Command("state"), Command("discovery")
    assert limits.admit(snapshot) is None and limits.admit(state) is None and limits.admit(discovery) is None
    clock.advance(0.5)
    refused = limits.admit(snapshot)
    assert refused is not None and refused.rate_limited
    assert refused.reason == ("rate limited: MQTT command 'snapshot' was accepted 0.5 s ago; at most one per 5 s "
                              "(mqtt.snapshot_interval_s); retry in 4.5 s")
    assert limits.admit(state) is not None
    clock.advance(0.5)
    assert limits.admit(state) is None and limits.admit(discovery) is None  # 1 s: the cheap ones again
    assert limits.admit(snapshot) is not None
    clock.advance(4.0)
    assert limits.admit(snapshot) is None
    assert limits.refused == 3


def test_limits_come_from_the_config_and_zero_turns_them_off(tmp_path: Path) -> None:
    clock = FakeClock()
    config = make_config(tmp_path, 1883, snapshot_interval_s=0, command_interval_s=30)
    limits = CommandLimits.from_config(config.mqtt, clock.monotonic)
    assert all(limits.admit(Command("snapshot")) is None for _ in range(50))
    assert limits.admit(Command("state")) is None and limits.admit(Command("state")) is not None
    assert make_config(tmp_path, 1883).mqtt.snapshot_interval_s == 5.0


def test_a_snapshot_command_flood_makes_one_snapshot(tmp_path: Path, broker, subscribe,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    # 60 s: the whole flood falls in one interval however slow the machine is
    config = make_config(tmp_path / "state", broker.port, snapshot=True, snapshot_interval_s=60)
    topics = topics_for(config)
    sender = subscribe([topics.snapshot], client_id="flooder")
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 100 + b"\xff\xd9"
    made: list[int] = []
    service = build(config, EventBus(), SystemClock(), dict, snapshot_provider=lambda: made.append(1) or jpeg)
    service.start()
    publisher = service.publisher
    assert publisher is not None
    try:
        wait_until(lambda: publisher.link.connections == 1, what="connected")
        caplog.set_level(logging.INFO)
        for i in range(200):
            sender.client.publish(topics.command("snapshot"), f'{{"request_id": "r{i}"}}'.encode(), qos=1)
        wait_until(lambda: publisher.counters["commands"] + publisher.counters["rate_limited_commands"] == 200,
                   what="all 200 commands handled")
        wait_until(lambda: len(sender.on(topics.snapshot)) == 1, what="the one snapshot")
    finally:
        service.stop()
    assert publisher.counters["commands"] == 1 and publisher.counters["rate_limited_commands"] == 199
    assert made == [1] and sender.on(topics.snapshot) == [jpeg]
    limited = [r.getMessage() for r in caplog.records if "rate limited" in r.getMessage()]
    assert limited == ["MQTT command snapshot: rate limited (at most one per 60 s, mqtt.snapshot_interval_s); "
                       "further refusals are counted"]
