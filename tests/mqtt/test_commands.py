"""Command topics: only harmless commands, strictly validated; garbage is rejected with a log line, changes nothing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.clock import SystemClock
from edge.events.bus import Event, EventBus
from edge.mqtt.commands import MAX_COMMAND_BYTES, Command, Rejected, parse_command
from edge.mqtt.service import build
from edge.mqtt.topics import COMMANDS, topics_for
from tests.mqtt.conftest import make_config, wait_until


@pytest.mark.parametrize("name", COMMANDS)
@pytest.mark.parametrize("payload", [b"", b"  ", b"{}", b'{"request_id": "abc-1"}'])
def test_valid_commands(name: str, payload: bytes) -> None:
    assert isinstance(parse_command(name, payload), Command)


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("approve_footage", b"{}", "unknown command"),
        ("export", b"", "unknown command"),
        ("state", b"\xff\xfe", "not UTF-8"),
        ("state", b"{", "not valid JSON"),
        ("state", b"[]", "JSON object"),
        ("state", b"42", "JSON object"),
        ("state", b'{"request_id": 1}', "request_id"),
        ("state", b'{"request_id": "a b"}', "request_id"),
        ("state", b'{"request_id": "ok\\n"}', "request_id"),
        ("state", b'{"request_id": "a", "request_id": "b"}', "duplicate key"),
        ("state", b'{"approve": true}', "unknown key"),
        ("state", b'{"request_id": NaN}', "not valid JSON"),
        ("state", b"{" * 200, "not valid JSON"),
        ("state", b" " * (MAX_COMMAND_BYTES + 1), "over the"),
        ("discovery", b"x" * 1_000_000, "over the"),
    ],
)
def test_rejected_commands(name: str, payload: bytes, reason: str) -> None:
    result = parse_command(name, payload)
    assert isinstance(result, Rejected) and reason in result.reason


@given(name=st.text(max_size=40), payload=st.binary(max_size=600))
@settings(max_examples=500)
def test_parse_never_raises_and_accepts_only_the_documented_shape(name: str, payload: bytes) -> None:
    result = parse_command(name, payload)
    if isinstance(result, Command):
        assert name in COMMANDS and len(payload) <= MAX_COMMAND_BYTES
        if payload.strip():
            body = json.loads(payload)
            assert set(body) <= {"request_id"}
    else:
        assert result.reason


GARBAGE = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.text(min_size=1, max_size=200).map(str.encode),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
                 max_leaves=10).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"\x00" * 5000, b"{" * 100_000, b"A" * 1_000_000, b'{"request_id": "x", "approve": 1}']),
).filter(lambda p: p.strip() != b"" and p.strip() != b"{}" and not _accepted("state", p))


def _accepted(name: str, payload: bytes) -> bool:
    return isinstance(parse_command(name, payload), Command)


def test_garbage_on_command_topics_changes_nothing(tmp_path: Path, broker, subscribe,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Drive the real broker with hypothesis-chosen garbage; after each, a valid `state` command is the barrier
    that proves the garbage was processed (same topic filter, same connection, so in order)."""
    # command_interval_s 0: the barrier is a `state` command after every garbage message, faster than the default
    # rate limit allows (the limit has its own tests in test_flood_commands.py)
    config = make_config(tmp_path / "state", broker.port, state_interval_s=3600, command_interval_s=0)
    topics = topics_for(config)
    sender = subscribe([topics.state], client_id="attacker")
    bus = EventBus()
    service = build(config, bus, SystemClock(), dict)
    service.start()
    publisher = service.publisher
    assert publisher is not None
    try:
        bus.publish(Event("ring", "front_door", SystemClock().now(), {"source": "button"}))
        wait_until(lambda: service.journal.stats().waiting == 0 and publisher.counters["state"] >= 1,
                   what="connected and idle")
        caplog.set_level(logging.WARNING, logger="edge.mqtt")

        @given(name=st.sampled_from([*COMMANDS, "approve", "footage/approve", "x" * 300, "", "snapshot"]),
               payload=GARBAGE)
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def drive(name: str, payload: bytes) -> None:
            before = dict(publisher.counters)
            before_stats = service.journal.stats()
            caplog.clear()
            sender.client.publish(topics.command(name), payload, qos=1)
            sender.client.publish(topics.command("state"), b"", qos=1)  # the barrier
            wait_until(lambda: publisher.counters["commands"] == before["commands"] + 1
                       and publisher.counters["state"] == before["state"] + 1, what="barrier")
            after = dict(publisher.counters)
            assert after["rejected_commands"] == before["rejected_commands"] + 1
            assert {k: v for k, v in after.items() if k not in ("rejected_commands", "commands", "state")} == {
                k: v for k, v in before.items() if k not in ("rejected_commands", "commands", "state")}
            assert service.journal.stats() == before_stats
            assert any("rejected command" in r.getMessage() for r in caplog.records), caplog.text

        drive()
    finally:
        service.stop()


def test_snapshot_command_refused_when_snapshots_are_off(tmp_path: Path, broker, subscribe,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(tmp_path / "state", broker.port)
    topics = topics_for(config)
    sender = subscribe([topics.snapshot], client_id="asker")
    calls: list[int] = []
    service = build(config, EventBus(), SystemClock(), dict, snapshot_provider=lambda: calls.append(1) or b"")
    service.start()
    try:
        assert service.publisher is not None
        wait_until(lambda: service.publisher.link.connections == 1, what="connected")
        caplog.set_level(logging.WARNING, logger="edge.mqtt")
        sender.client.publish(topics.command("snapshot"), b"{}", qos=1)
        wait_until(lambda: service.publisher.counters["rejected_commands"] == 1, what="rejection")
        assert "snapshots are off" in caplog.text
        assert calls == [] and sender.on(topics.snapshot) == []
    finally:
        service.stop()


def test_snapshot_command_when_enabled(tmp_path: Path, broker, subscribe) -> None:
    config = make_config(tmp_path / "state", broker.port, snapshot=True)
    topics = topics_for(config)
    sender = subscribe([topics.snapshot], client_id="asker")
    jpeg = b"\xff\xd8\xff\xe0" + b"\x00" * 100 + b"\xff\xd9"
    service = build(config, EventBus(), SystemClock(), dict, snapshot_provider=lambda: jpeg)
    service.start()
    try:
        assert service.publisher is not None
        wait_until(lambda: service.publisher.link.connections == 1, what="connected")
        sender.client.publish(topics.command("snapshot"), b'{"request_id": "ha-1"}', qos=1)
        wait_until(lambda: sender.on(topics.snapshot) == [jpeg], what="snapshot")
        assert not service.publish_snapshot(b"not a jpeg")
    finally:
        service.stop()
