"""The publisher against a real mosquitto: schema-valid events in order, availability, state, discovery, HA feed."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest

from edge.clock import SystemClock
from edge.events.bus import Event, EventBus
from edge.mqtt.outbox import Outbox
from edge.mqtt.service import build
from edge.mqtt.topics import topics_for
from tests.mqtt.conftest import check_sequence, make_config, wait_until

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "edge/schemas/event.schema.json").read_text())

STATE = {"motion": True, "occupancy": False, "recording": False, "fps": 9.87, "inference_ms": 31.4,
         "pending_requests": 1}


def sample_events(clock: SystemClock) -> list[Event]:
    now = clock.now()
    return [
        Event("system", None, now, {"status": "started", "version": "0.1.0"}),
        Event("motion_start", "front_door", now, {"score": 0.12}),
        Event("person", "front_door", now, {"confidence": 0.91}),
        Event("face", "front_door", now, {"result": "known", "person": "alice", "confidence": 0.88}),
        Event("face", "front_door", now, {"result": "unknown", "visit_id": "v-7f3a2c"}),
        Event("ring", "front_door", now, {"source": "button"}),
        Event("footage_request", None, now, {"request": "req-20260101-0001", "state": "received"}),
        Event("motion_end", "front_door", now, {"peak_score": 0.4}),
        # Happened ten minutes ago (e.g. recorded while the broker was away): too old for the HA doorbell feed.
        Event("ring", "front_door", now - timedelta(minutes=10), {"source": "cli"}),
    ]


@pytest.mark.parametrize("protocol", ["mqttv5", "mqttv311"])
def test_events_arrive_schema_valid_in_order(tmp_path: Path, broker, subscribe, protocol: str) -> None:
    config = make_config(tmp_path / "state", broker.port, protocol=protocol)
    topics = topics_for(config)
    sub = subscribe([f"{topics.prefix}/#", "homeassistant/#"])
    clock = SystemClock()
    bus = EventBus()
    service = build(config, bus, clock, lambda: STATE)
    service.start()
    try:
        stamped = [bus.publish(e) for e in sample_events(clock)]
        wait_until(lambda: len(sub.json_on(topics.events)) >= len(stamped), what="all events")
        wait_until(lambda: service.journal.stats().waiting == 0, what="outbox drained by PUBACKs")
        events = sub.json_on(topics.events)
        validator = jsonschema.Draft202012Validator(SCHEMA)
        for body in events:
            errors = sorted(validator.iter_errors(body), key=str)
            assert not errors, f"{body['type']}: {errors[0].message}"
        check_sequence(events, 1, len(stamped))
        assert [e["id"] for e in events[: len(stamped)]] == [e.id for e in stamped]
        # The ts is when it happened, not when it was sent.
        assert events[-1]["ts"] < events[0]["ts"]

        wait_until(lambda: sub.on(topics.availability) == [b"online"], what="availability online")
        late = subscribe([topics.availability, topics.state], client_id="late-subscriber")
        wait_until(lambda: len(late.messages) >= 2, what="retained availability and state")
        assert all(retain for _, _, retain in late.messages)
        service.publisher.link.publish(topics.command("state"), b"", qos=1)  # ask for a fresh summary
        wait_until(lambda: any(s["last_seq"] == len(stamped) and s["outbox"] == 0 for s in sub.json_on(topics.state)),
                   what="state")
        state = sub.json_on(topics.state)[-1]
        assert state["motion"] is True and state["occupancy"] is False and state["fps"] == 9.87
        assert state["pending_requests"] == 1 and state["outbox"] == 0 and state["dropped"] == 0

        # The HA event entity hears fresh rings and faces only; never an embedding.
        wait_until(lambda: len(sub.json_on(topics.doorbell)) >= 3, what="doorbell feed")
        feed = sub.json_on(topics.doorbell)
        assert [f["event_type"] for f in feed] == ["known_face", "unknown_face", "ring"]
        assert feed[0]["person"] == "alice" and "visit_id" not in feed[0]
        assert feed[1]["visit_id"] == "v-7f3a2c" and "person" not in feed[1]
        assert all(not retain for t, _, retain in sub.messages if t in (topics.events, topics.doorbell))
    finally:
        service.stop()
    wait_until(lambda: sub.on(topics.availability)[-1:] == [b"offline"], what="offline on clean stop")


def test_fresh_state_precedes_online_and_a_clean_stop_leaves_everything_off(
    tmp_path: Path, broker, subscribe
) -> None:
    """Home Assistant shows the retained state as current as soon as it hears `online`: after a crash that state
    is the last run's, so a fresh one must come first; a clean stop leaves a retained state with nothing on."""
    config = make_config(tmp_path / "state", broker.port)
    topics = topics_for(config)
    # The last run crashed with motion and occupancy on: that state is still retained on the broker.
    stale = subscribe([topics.state], client_id="stale-writer")
    stale.client.publish(topics.state, json.dumps({"motion": True, "occupancy": True}), qos=1, retain=True)
    stale.client.publish(topics.availability, "offline", qos=1, retain=True)
    sub = subscribe([topics.availability, topics.state, "homeassistant/#"])
    wait_until(lambda: sub.on(topics.availability) == [b"offline"], what="retained offline")
    live = {"motion": False, "occupancy": False, "recording": True, "fps": 10.0}
    service = build(config, EventBus(), SystemClock(), lambda: live)
    service.start()
    try:
        wait_until(lambda: b"online" in sub.on(topics.availability), what="online")
        order = [(t, p) for t, p, _ in sub.messages]
        online_at = order.index((topics.availability, b"online"))
        before = [json.loads(p) for t, p in order[:online_at] if t == topics.state]
        assert before[-1]["motion"] is False and before[-1]["recording"] is True  # fresh, not the stale one
        assert any(t.startswith("homeassistant/") for t, _ in order[:online_at])  # discovery came first too
        live["motion"] = True
    finally:
        service.stop()
    wait_until(lambda: sub.on(topics.availability)[-1:] == [b"offline"], what="offline on clean stop")
    order = [(t, p) for t, p, _ in sub.messages]
    states = [i for i, (t, _) in enumerate(order) if t == topics.state]
    assert states[-1] < len(order) - 1 and order[-1] == (topics.availability, b"offline")
    last_state = json.loads(order[states[-1]][1])
    assert last_state["motion"] is False and last_state["occupancy"] is False and last_state["recording"] is False
    late = subscribe([topics.state], client_id="late-reader")
    wait_until(lambda: late.json_on(topics.state), what="retained state")
    assert late.json_on(topics.state)[-1]["motion"] is False


def test_a_ring_fed_before_a_restart_does_not_ring_again(tmp_path: Path, broker, subscribe) -> None:
    """The last run gave the ring to the doorbell feed, then died before the broker acknowledged the event: the
    event is sent again (subscribers de-duplicate on id), but Home Assistant's phones must not ring twice."""
    config = make_config(tmp_path / "state", broker.port)
    topics = topics_for(config)
    now = SystemClock().now()
    with Outbox(tmp_path / "state" / "events.sqlite3") as outbox:
        fed = outbox.record(Event("ring", "front_door", now, {"source": "button"}))
        outbox.mark_fed(fed.id)
        fresh = outbox.record(Event("ring", "front_door", now, {"source": "cli"}))
    sub = subscribe([topics.events, topics.doorbell])
    service = build(config, EventBus(), SystemClock(), dict)
    service.start()
    try:
        wait_until(lambda: len(sub.json_on(topics.events)) >= 2, what="both events re-sent")
        wait_until(lambda: len(sub.json_on(topics.doorbell)) >= 1, what="doorbell feed")
        wait_until(lambda: service.journal.stats().waiting == 0, what="acknowledged")
    finally:
        service.stop()
    assert [e["id"] for e in sub.json_on(topics.events)] == [fed.id, fresh.id]
    assert [f["event_id"] for f in sub.json_on(topics.doorbell)] == [fresh.id]


def test_ha_status_online_resends_discovery(tmp_path: Path, broker, subscribe) -> None:
    config = make_config(tmp_path / "state", broker.port)
    sub = subscribe(["homeassistant/+/testbell/+/config"])
    service = build(config, EventBus(), SystemClock(), dict)
    service.start()
    try:
        wait_until(lambda: len(sub.messages) >= 10, what="first discovery")
        first = len(sub.messages)
        sub.client.publish("homeassistant/status", "online", qos=1)
        wait_until(lambda: len(sub.messages) >= 2 * first, what="discovery re-sent")
        assert service.publisher is not None and service.publisher.counters["discovery"] == 2
    finally:
        service.stop()


def test_cli_process_events_are_published(tmp_path: Path, broker, subscribe) -> None:
    """Another Outbox on the same file (what `emit` does in a CLI process) shares the seq; the daemon sends it."""
    config = make_config(tmp_path / "state", broker.port)
    topics = topics_for(config)
    sub = subscribe([topics.events])
    bus = EventBus()
    service = build(config, bus, SystemClock(), dict)
    service.start()
    try:
        from edge.mqtt.outbox import emit

        bus.publish(Event("ring", "front_door", SystemClock().now(), {"source": "button"}))
        other = emit(config, Event("footage_request", None, SystemClock().now(), {"request": "r1"}))
        assert other.seq == 2
        bus.publish(Event("ring", "front_door", SystemClock().now(), {"source": "button"}))
        wait_until(lambda: len(sub.json_on(topics.events)) >= 3, what="events from both processes")
        check_sequence(sub.json_on(topics.events), 1, 3)
    finally:
        service.stop()
    with Outbox(tmp_path / "state" / "events.sqlite3") as outbox:
        assert outbox.stats().waiting == 0


def test_discovery_on_the_broker_equals_the_golden_files(tmp_path: Path, broker, subscribe) -> None:
    from edge import __version__
    from edge.config import Config

    golden_dir = Path(__file__).resolve().parents[1] / "golden" / "discovery"
    config = Config.model_validate({"device": {"id": "frontdoor", "name": "Front door"},
                                    "storage": {"state_dir": str(tmp_path / "state")},
                                    "mqtt": {"host": "127.0.0.1", "port": broker.port}})
    service = build(config, EventBus(), SystemClock(), dict)
    service.start()
    try:
        sub = subscribe(["homeassistant/+/frontdoor/+/config"])  # live or retained copies
        wait_until(lambda: len({t for t, p, _ in sub.messages if p}) == 9, what="retained discovery")
        received = {t: json.loads(p) for t, p, _ in sub.messages if p}
        for golden in golden_dir.glob("*.json"):
            component, object_id = golden.stem.split(".")
            topic = f"homeassistant/{component}/frontdoor/{object_id}/config"
            if (component, object_id) in (("image", "snapshot"), ("button", "take_snapshot")):
                assert topic not in received  # snapshots are off by default
                continue
            expected = json.loads(golden.read_text().replace('"1.0.0"', json.dumps(__version__)))
            assert received[topic] == expected, topic
    finally:
        service.stop()


def test_large_snapshots_and_events_from_several_threads_stay_intact(tmp_path: Path, broker, subscribe) -> None:
    """Publishing from the app thread and the publisher thread at once never interleaves packets."""
    import threading

    config = make_config(tmp_path / "state", broker.port, snapshot=True)
    topics = topics_for(config)
    sub = subscribe([topics.events, topics.snapshot])
    bus = EventBus()
    service = build(config, bus, SystemClock(), dict)
    service.start()
    jpegs = [b"\xff\xd8" + bytes([i]) * 300_000 + b"\xff\xd9" for i in range(10)]
    try:
        assert service.publisher is not None
        wait_until(lambda: service.publisher.link.connections == 1, what="connected")

        def snapshots() -> None:
            for jpeg in jpegs:
                service.publish_snapshot(jpeg)

        sender = threading.Thread(target=snapshots)
        sender.start()
        for _ in range(200):
            bus.publish(Event("motion_start", "front_door", SystemClock().now(), {"score": 0.1}))
        sender.join()
        wait_until(lambda: any(e["seq"] == 200 for e in sub.json_on(topics.events)), what="all events")
        check_sequence(sub.json_on(topics.events), 1, 200)
        wait_until(lambda: len(sub.on(topics.snapshot)) == len(jpegs), what="all snapshots")
        assert sub.on(topics.snapshot) == jpegs
    finally:
        service.stop()


def test_occupancy_follows_person_events_and_goes_explicitly_off(tmp_path: Path, broker, subscribe) -> None:
    from edge.clock import FakeClock
    from edge.mqtt.publisher import OCCUPANCY_HOLD_S

    config = make_config(tmp_path / "state", broker.port, state_interval_s=3600)
    topics = topics_for(config)
    sub = subscribe([topics.state])
    clock = FakeClock()
    bus = EventBus()
    service = build(config, bus, clock, lambda: {"motion": False})
    service.start()
    try:
        assert service.publisher is not None
        wait_until(lambda: any(s["occupancy"] is False for s in sub.json_on(topics.state)), what="first state")
        bus.publish(Event("person", "front_door", clock.now(), {"confidence": 0.9}))
        wait_until(lambda: sub.json_on(topics.state)[-1]["occupancy"] is True, what="occupancy ON")
        clock.advance(OCCUPANCY_HOLD_S + 1)
        wait_until(lambda: sub.json_on(topics.state)[-1]["occupancy"] is False, what="occupancy explicitly OFF")
    finally:
        service.stop()
