"""Nothing is lost: a 20 s broker outage while events keep coming, and a SIGKILLed publisher with unacked events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge.clock import SystemClock
from edge.events.bus import Event, EventBus
from edge.events.journal import JOURNAL_FILE
from edge.mqtt.outbox import Outbox
from edge.mqtt.service import build
from edge.mqtt.topics import topics_for
from tests.mqtt.broker import Broker
from tests.mqtt.conftest import Subscriber, check_sequence, make_config, wait_until

REPO = Path(__file__).resolve().parents[2]
OUTAGE_S = 20.0


def test_broker_killed_for_20s_then_every_seq_arrives_in_order(tmp_path: Path) -> None:
    # Persistence keeps the subscriber's session (and what is queued for it) across the broker restart, as a
    # real Home Assistant setup would; the outage itself is a SIGKILL.
    broker = Broker(tmp_path / "broker", persistence=True).start()
    config = make_config(tmp_path / "state", broker.port)
    topics = topics_for(config)
    sub = Subscriber(broker.port, [topics.events], client_id="ha-like", persistent=True)
    bus = EventBus()
    clock = SystemClock()
    service = build(config, bus, clock, dict)
    service.start()
    stop = threading.Event()
    recorded: list[int] = []

    def keep_coming() -> None:
        kinds = ["motion_start", "person", "motion_end", "ring"]
        i = 0
        while not stop.is_set():
            kind = kinds[i % len(kinds)]
            fields = {"source": "button"} if kind == "ring" else {}
            recorded.append(bus.publish(Event(kind, "front_door", clock.now(), fields)).seq or 0)
            i += 1
            stop.wait(0.1)

    producer = threading.Thread(target=keep_coming)
    producer.start()
    try:
        wait_until(lambda: len(sub.json_on(topics.events)) >= 10, what="events before the outage")
        time.sleep(1.2)  # let the broker autosave the subscriber's session
        broker.stop(signal.SIGKILL)
        before = len(recorded)
        time.sleep(OUTAGE_S)
        assert len(recorded) > before + 100, "events kept coming during the outage"
        assert service.journal.stats().waiting >= len(recorded) - before - 5
        broker.start()
        time.sleep(2.0)
        stop.set()
        producer.join()
        last = recorded[-1]
        wait_until(lambda: any(e["seq"] == last for e in sub.json_on(topics.events)), timeout=30,
                   what=f"seq {last} after the outage")
        check_sequence(sub.json_on(topics.events), 1, last)
        wait_until(lambda: service.journal.stats().waiting == 0, what="outbox drained")
        assert service.journal.stats().dropped == 0
        assert service.publisher is not None and service.publisher.link.connections >= 2
    finally:
        stop.set()
        producer.join()
        service.stop()
        sub.close()
        broker.stop()


def test_sigkilled_publisher_backlog_arrives_after_restart(tmp_path: Path, broker: Broker, subscribe) -> None:
    state = tmp_path / "state"
    config = make_config(state, broker.port)
    topics = topics_for(config)
    sub = subscribe([topics.events])
    count = 120
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, str(REPO / "tests/mqtt/publisher_child.py"), str(state),
                              str(broker.port), str(count), "0.01"], stdout=subprocess.PIPE, env=env, cwd=REPO)
    try:
        wait_until(lambda: len(sub.json_on(topics.events)) >= 20, what="first events from the child")
        broker.pause()  # no more PUBACKs: what the child records now stays unacknowledged
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"recorded"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        broker.resume()
    with Outbox(state / JOURNAL_FILE) as outbox:
        stats = outbox.stats()
    assert stats.last_seq == count
    assert stats.waiting > 0, "the child should have died with unacknowledged events"

    restarted = subprocess.Popen([sys.executable, str(REPO / "tests/mqtt/publisher_child.py"), str(state),
                                  str(broker.port), "0", "0"], stdout=subprocess.DEVNULL, env=env, cwd=REPO)
    try:
        wait_until(lambda: any(e["seq"] == count for e in sub.json_on(topics.events)), timeout=30,
                   what="the backlog after the restart")
        check_sequence(sub.json_on(topics.events), 1, count)
        with Outbox(state / JOURNAL_FILE) as outbox:
            wait_until(lambda: outbox.stats().waiting == 0, what="backlog acknowledged")
    finally:
        restarted.kill()
        restarted.wait()
