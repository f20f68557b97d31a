"""The connection adapter: back-off arithmetic, and a broker absent at start-up never stops anything."""

from __future__ import annotations

from pathlib import Path

from edge.clock import SystemClock
from edge.events.bus import Event, EventBus
from edge.mqtt.client import jittered, next_delay
from edge.mqtt.service import build
from edge.mqtt.topics import topics_for
from tests.mqtt.broker import Broker, free_port
from tests.mqtt.conftest import Subscriber, check_sequence, make_config, wait_until


def test_back_off_doubles_up_to_the_cap() -> None:
    delays: list[float] = []
    delay = None
    for _ in range(8):
        delay = next_delay(delay, 1.0, 60.0)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60]
    assert jittered(10.0, 0.0, 60.0) == 8.0 and jittered(10.0, 0.999999, 60.0) < 12.0
    assert jittered(60.0, 0.99, 60.0) == 60.0


def test_broker_down_at_start_up_then_up(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(tmp_path / "state", port)
    topics = topics_for(config)
    bus = EventBus()
    service = build(config, bus, SystemClock(), dict)
    service.start()  # must not raise, must not block
    try:
        for _ in range(5):
            bus.publish(Event("ring", "front_door", SystemClock().now(), {"source": "button"}))
        assert service.publisher is not None
        wait_until(lambda: service.publisher.link.attempts >= 3, what="retries while the broker is down")
        assert service.journal.stats().waiting == 5
        broker = Broker(tmp_path / "broker", port=port).start()
        try:
            sub = Subscriber(port, [topics.events])
            wait_until(lambda: service.journal.stats().waiting == 0, what="backlog delivered")
            # Events may have reached the broker before the subscriber: check via a fresh ring that order holds.
            bus.publish(Event("ring", "front_door", SystemClock().now(), {"source": "button"}))
            wait_until(lambda: any(e["seq"] == 6 for e in sub.json_on(topics.events)), what="live event")
            check_sequence([e for e in sub.json_on(topics.events)], min(e["seq"] for e in sub.json_on(topics.events)),
                           6)
            sub.close()
        finally:
            broker.stop()
    finally:
        service.stop()


def test_mqtt_disabled_still_numbers_events_durably(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", 1883, enabled=False)
    bus = EventBus()
    service = build(config, bus, SystemClock(), dict)
    service.start()
    assert service.publisher is None
    assert bus.publish(Event("ring", None, SystemClock().now(), {"source": "cli"})).seq == 1
    service.stop()
    service2 = build(config, EventBus(), SystemClock(), dict)
    assert service2.journal.stats().last_seq == 1
    service2.stop()
