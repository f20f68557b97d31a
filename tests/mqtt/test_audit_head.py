"""The retained audit head is never replaced by a head of a log that went backwards or forked (issue 12): after a
(re)connection the publisher reads the retained head back before it publishes any, then refuses an older or forked
one with an ERROR and a `system` event `audit_head_conflict`. Real mosquitto, real audit log, real outbox."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from edge.clock import FakeClock, SystemClock
from edge.config_load import load_config
from edge.events.bus import EventBus
from edge.footage.desk import FootageDesk
from edge.mqtt.service import MqttService, audit_hash_at, build
from edge.mqtt.topics import topics_for
from tests.footage.factory import NOW, document, signed
from tests.footage.test_audit_anchor import head, write_config
from tests.mqtt.broker import Broker
from tests.mqtt.conftest import Subscriber, wait_until


def retained_head(port: int, topic: str, client_id: str) -> str:
    late = Subscriber(port, [topic], client_id=client_id)
    try:
        wait_until(lambda: bool(late.json_on(topic)), what="the retained audit head")
        body = late.json_on(topic)[-1]
    finally:
        late.close()
    return f"{body['seq']}:{body['hash']}"


def append_until(desk: FootageDesk, request: str, seq: int) -> None:
    """Real appends (each emits its head into the outbox, as every footage step does) up to record `seq`."""
    while desk.audit.head()[0] < seq:
        desk.audit.append("notification", request=request, urgent=False, channel="mqtt")


@pytest.mark.parametrize("offset", [-1, 0, 2], ids=["shorter", "same-seq", "longer"])
def test_a_rolled_back_log_never_replaces_the_witnessed_head(
        tmp_path: Path, offset: int, caplog: pytest.LogCaptureFixture) -> None:
    broker = Broker(tmp_path / "broker").start()
    state = tmp_path / "state"
    services: list[MqttService] = []

    def run_service() -> MqttService:
        service = build(cfg, EventBus(), SystemClock(), state_provider=dict)
        services.append(service)
        service.start()
        return service

    try:
        cfg = load_config(write_config(tmp_path, state, host="127.0.0.1", port=broker.port, reconnect_min_s=0.1,
                                       reconnect_max_s=1.0, discovery=False))
        topics = topics_for(cfg)
        desk = FootageDesk(cfg, FakeClock(NOW))
        first, _ = desk.submit(signed(document("warrant")))
        yesterday = tmp_path / "yesterday"
        shutil.copytree(state, yesterday)

        service = run_service()
        desk.deny(first, "not without a hearing")
        append_until(desk, first, desk.audit.head()[0] + 3)
        witnessed = head(state)
        witnessed_seq = int(witnessed.split(":")[0])
        wait_until(lambda: service.publisher is not None and service.publisher.counters["audit_heads"] > 0
                   and service.journal.stats().waiting == 0, what="the heads acknowledged")
        service.stop()
        assert retained_head(broker.port, topics.audit_head, "witness-1") == witnessed

        shutil.rmtree(state)
        shutil.copytree(yesterday, state)  # the whole state dir, rolled back to the older copy
        rolled = FootageDesk(cfg, FakeClock(NOW))
        append_until(rolled, first, witnessed_seq + offset)  # appends queued while the broker is not connected
        forked = head(state)
        assert forked != witnessed

        watcher = Subscriber(broker.port, [topics.events], client_id="events-watcher")
        caplog.set_level(logging.ERROR, logger="edge.mqtt.publisher")
        service = run_service()
        wait_until(lambda: any(e.get("status") == "audit_head_conflict" for e in watcher.json_on(topics.events)),
                   what="the audit_head_conflict event")
        (conflict,) = [e for e in watcher.json_on(topics.events) if e.get("status") == "audit_head_conflict"]
        assert f"{conflict['witnessed_seq']}:{conflict['witnessed_hash']}" == witnessed
        wait_until(lambda: service.journal.stats().waiting == 0, what="the outbox drained")
        # Another append on the same connection is refused too (reported once), and the witness stays retained.
        rolled.audit.append("notification", request=first, urgent=False, channel="mqtt")
        wait_until(lambda: service.journal.stats().waiting == 0, what="the outbox drained")
        watcher.close()
        service.stop()
        assert retained_head(broker.port, topics.audit_head, "witness-2") == witnessed
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        (told,) = [m for m in errors if "NOT published over the witnessed head" in m]
        assert f"audit verify --against {witnessed}" in told
        assert service.publisher is not None and service.publisher.counters["audit_heads"] == 0
    finally:
        for s in services:
            s.stop()
        broker.stop()


def test_a_log_that_contains_the_witnessed_head_publishes_its_newer_heads(tmp_path: Path) -> None:
    """The read-back must not block an honest restart: a daemon whose log extends the witnessed head publishes."""
    broker = Broker(tmp_path / "broker").start()
    state = tmp_path / "state"
    services: list[MqttService] = []
    try:
        cfg = load_config(write_config(tmp_path, state, host="127.0.0.1", port=broker.port, reconnect_min_s=0.1,
                                       reconnect_max_s=1.0, discovery=False))
        topics = topics_for(cfg)
        desk = FootageDesk(cfg, FakeClock(NOW))
        first, _ = desk.submit(signed(document("warrant")))
        for round_ in range(2):
            service = build(cfg, EventBus(), SystemClock(), state_provider=dict)
            services.append(service)
            service.start()
            append_until(desk, first, desk.audit.head()[0] + 2)
            wait_until(lambda s=service: s.journal.stats().waiting == 0, what="the outbox drained")
            service.stop()
            assert retained_head(broker.port, topics.audit_head, f"witness-{round_}") == head(state)
            assert service.publisher is not None and service.publisher.counters["audit_head_conflicts"] == 0
    finally:
        for s in services:
            s.stop()
        broker.stop()


def test_audit_hash_at_reads_the_log(tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert audit_hash_at(state, 1) is None  # no log yet
    desk = FootageDesk(load_config(write_config(tmp_path, state)), FakeClock(NOW))
    desk.submit(signed(document("warrant")))
    seq, digest = desk.audit.head()
    assert audit_hash_at(state, seq) == digest
    assert audit_hash_at(state, seq + 1) is None
    records = [json.loads(line) for line in (state / "audit" / "footage.jsonl").read_bytes().splitlines()]
    assert audit_hash_at(state, 1) == records[0]["hash"]
