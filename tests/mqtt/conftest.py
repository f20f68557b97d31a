"""Fixtures for the MQTT tests: a real mosquitto per test, a recording subscriber, a config pointing at both."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.config import Config
from tests.mqtt.broker import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll until predicate() holds; fail naming `what`. A generous bound, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


class Subscriber:
    """A paho client that records every message on `topics` (QoS 1). `persistent` keeps its session on the broker."""

    def __init__(self, port: int, topics: list[str], client_id: str = "test-subscriber",
                 persistent: bool = False) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._topics = topics
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311,
                                  clean_session=not persistent)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            pytest.fail("test subscriber could not subscribe")

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        for topic in self._topics:
            client.subscribe(topic, qos=1)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(p) for p in self.on(topic) if p]

    def close(self) -> None:
        self.client.disconnect()  # wakes the network loop, so loop_stop() joins at once
        self.client.loop_stop()


@pytest.fixture
def subscribe(broker: Broker) -> Iterator[Callable[..., Subscriber]]:
    made: list[Subscriber] = []

    def _make(topics: list[str], **kwargs: Any) -> Subscriber:
        sub = Subscriber(kwargs.pop("port", broker.port), topics, **kwargs)
        made.append(sub)
        return sub

    yield _make
    for sub in made:
        sub.close()


def make_config(state_dir: Path, port: int, **mqtt: Any) -> Config:
    settings: dict[str, Any] = {"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1, "reconnect_max_s": 1.0,
                                "state_interval_s": 5.0}
    settings.update(mqtt)
    return Config.model_validate(
        {"device": {"id": "testbell", "name": "Test Bell"}, "storage": {"state_dir": str(state_dir)},
         "mqtt": settings}
    )


def check_sequence(events: list[dict[str, Any]], first: int, last: int) -> None:
    """Every seq from first to last arrives; first sightings are in order; a repeat carries the same id."""
    ids: dict[int, str] = {}
    order: list[int] = []
    for body in events:
        seq = body["seq"]
        if seq in ids:
            assert ids[seq] == body["id"], f"seq {seq} redelivered with a different id"
            continue
        ids[seq] = body["id"]
        order.append(seq)
    assert order == sorted(order), f"events out of order: {order[:50]}"
    missing = sorted(set(range(first, last + 1)) - set(ids))
    assert not missing, f"missing seqs: {missing[:50]}"
