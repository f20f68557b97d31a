"""No broker, calmly: one warning per outage, then a summary every few minutes; and the built-in demo leaves
nothing retained on a broker it finds by chance."""

from __future__ import annotations

import io
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.app import App
from edge.clock import FakeClock, SystemClock
from edge.config import Config
from edge.config_load import load_config
from edge.errors import ConfigError
from edge.events.bus import Event, EventBus
from edge.mqtt.service import build
from edge.mqtt.topics import topics_for
from tests.mqtt.broker import Broker, free_port
from tests.mqtt.certs import TestCA
from tests.mqtt.conftest import Subscriber, make_config, wait_until

REPO = Path(__file__).resolve().parents[2]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("edge.mqtt") and r.levelno >= logging.WARNING]


def test_no_broker_one_warning_then_a_summary_every_five_minutes(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    clock = FakeClock()  # the summaries follow the injected clock; the link retries on the real one, quickly
    config = make_config(tmp_path / "state", port, reconnect_min_s=0.02, reconnect_max_s=0.05)
    caplog.set_level(logging.DEBUG, logger="edge.mqtt")
    bus = EventBus()
    service = build(config, bus, clock, dict)
    assert service.publisher is not None
    link = service.publisher.link
    service.start()
    try:
        for i in range(37):
            bus.publish(Event("motion_start" if i % 2 else "ring", "front_door", clock.now(),
                              {"source": "button"} if i % 2 == 0 else {}))
        wait_until(lambda: link.attempts >= 15, what="many reconnect attempts")
        assert len(_warnings(caplog)) == 1, _warnings(caplog)
        assert "cannot reach broker 127.0.0.1:" in _warnings(caplog)[0]
        retries = [r for r in caplog.records if "reconnecting to" in r.getMessage()]
        assert len(retries) >= 14 and all(r.levelno == logging.DEBUG for r in retries)

        clock.advance(301)
        wait_until(lambda: len(_warnings(caplog)) == 2, what="the first summary")
        summary = _warnings(caplog)[1]
        assert f"broker 127.0.0.1:{port} unreachable for 5 min; 37 events waiting in the outbox; nothing lost" \
            in summary, summary
        assert "last error: MQTT: cannot reach broker" in summary
        attempts = link.attempts
        wait_until(lambda: link.attempts >= attempts + 10, what="more attempts")
        assert len(_warnings(caplog)) == 2, _warnings(caplog)[2:]  # retries stay quiet between summaries

        clock.advance(300)
        wait_until(lambda: len(_warnings(caplog)) == 3, what="the second summary")
        assert "unreachable for 10 min; 37 events waiting" in _warnings(caplog)[2]

        broker = Broker(tmp_path / "broker", port=port).start()
        wait_until(lambda: service.journal.stats().waiting == 0, what="the backlog delivered")
        back = [r.getMessage() for r in caplog.records if "broker back after" in r.getMessage()]
        assert back and back[0].startswith("MQTT: broker back after 10 min; sending "), back
    finally:
        service.stop()  # while the broker is still there: a clean goodbye
        if "broker" in locals():
            broker.stop()
    assert len(_warnings(caplog)) == 3, _warnings(caplog)


def test_summary_counts_what_the_outbox_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    config = make_config(tmp_path / "state", free_port(), reconnect_min_s=0.05, reconnect_max_s=0.1,
                         outbox_max_events=10)
    caplog.set_level(logging.WARNING, logger="edge.mqtt")
    bus = EventBus()
    service = build(config, bus, clock, dict)
    service.start()
    try:
        wait_until(lambda: service.publisher is not None and service.publisher.link.attempts >= 1, what="a try")
        for _ in range(15):
            bus.publish(Event("motion_start", "front_door", clock.now(), {}))
        clock.advance(301)
        wait_until(lambda: any("unreachable for" in m for m in _warnings(caplog)), what="the summary")
        summary = next(m for m in _warnings(caplog) if "unreachable for" in m)
        assert "10 events waiting in the outbox; 5 dropped by the outbox limits" in summary, summary
    finally:
        service.stop()


def _no_retained(port: int) -> list[tuple[str, bytes, bool]]:
    """Everything a fresh '#' subscriber receives before its own marker comes back: retained messages are sent on
    subscribing, before the broker handles the marker this client publishes afterwards."""
    sub = Subscriber(port, ["#"], client_id="fresh-subscriber")
    try:
        marker = f"test/marker/{os.getpid()}"
        sub.client.publish(marker, b"m", qos=1)
        wait_until(lambda: bool(sub.on(marker)), what="the marker")
        return [m for m in sub.messages if m[0] != marker]
    finally:
        sub.close()


def _demo_config(state: Path, port: int) -> Config:
    """The built-in demo exactly as the loader makes it without a config file, pointed at the test broker's port
    instead of localhost:1883 (the only change), with the camera small and faces/recording off to stay quick."""
    if Path("/etc/doorbell-edge/config.yaml").exists():
        pytest.fail("/etc/doorbell-edge/config.yaml exists here: the built-in defaults cannot be tested")
    config = load_config(None, environ={"DOORBELL_EDGE_STATE_DIR": str(state)})
    assert config.mqtt.retain is False and config.mqtt.discovery is False
    camera = config.cameras["front_door"].model_copy(update={"width": 160, "height": 120, "analysis_width": 64})
    return config.model_copy(update={
        "mqtt": config.mqtt.model_copy(update={"host": "127.0.0.1", "port": port, "reconnect_min_s": 0.1}),
        "cameras": {"front_door": camera},
        "faces": config.faces.model_copy(update={"enabled": False}),
        "recording": config.recording.model_copy(update={"enabled": False}),
    })


def test_built_in_demo_leaves_nothing_retained(tmp_path: Path, broker: Broker, subscribe) -> None:
    config = _demo_config(tmp_path / "state", broker.port)
    topics = topics_for(config)
    watching = subscribe(["#"])
    app = App(config, stdout=io.StringIO(), environ={}).build()
    app.start()
    try:
        ring = app.ring("front_door", "button")
        wait_until(lambda: any(e.get("seq") == ring.seq for e in watching.json_on(topics.events)), what="the ring")
        wait_until(lambda: bool(watching.on(topics.state)), what="a state")
    finally:
        app.stop()
    wait_until(lambda: watching.on(topics.availability)[-1:] == [b"offline"], what="offline after stop")
    # It did talk to the broker (events, state, availability), none of it retained and no discovery at all:
    assert watching.on(topics.availability)[0] == b"online"
    assert not any(t.startswith("homeassistant/") for t, _, _ in watching.messages)
    assert _no_retained(broker.port) == []


def test_a_config_file_keeps_retaining_and_the_check_sees_it(tmp_path: Path, broker: Broker) -> None:
    """The control: with a config file (retain left at its default), a fresh subscriber does get retained
    availability, state and discovery, so the check above can see retained messages when there are some."""
    config = make_config(tmp_path / "state", broker.port)
    topics = topics_for(config)
    service = build(config, EventBus(), SystemClock(), dict)
    service.start()
    try:
        assert service.publisher is not None
        link = service.publisher.link
        wait_until(lambda: link.connected, what="connected")
    finally:
        service.stop()
    retained = {t: p for t, p, r in _no_retained(broker.port) if r}
    assert retained[topics.availability] == b"offline"
    assert topics.state in retained
    assert any(t.startswith("homeassistant/") for t in retained)


CHILD = """
import sys, time
from edge.clock import SystemClock
from edge.config_load import load_config
from edge.events.bus import EventBus
from edge.mqtt.service import build
config = load_config(None, environ={"DOORBELL_EDGE_STATE_DIR": sys.argv[1]})
config = config.model_copy(update={"mqtt": config.mqtt.model_copy(update={"host": "127.0.0.1",
                                                                         "port": int(sys.argv[2])})})
service = build(config, EventBus(), SystemClock(), dict)
service.start()
while not service.publisher.link.connected:
    time.sleep(0.02)
print("connected", flush=True)
while True:
    time.sleep(1)
"""


def test_built_in_demo_killed_leaves_no_retained_will(tmp_path: Path, broker: Broker, subscribe) -> None:
    if Path("/etc/doorbell-edge/config.yaml").exists():
        pytest.fail("/etc/doorbell-edge/config.yaml exists here: the built-in defaults cannot be tested")
    environ = {k: v for k, v in os.environ.items() if k not in ("DOORBELL_EDGE_CONFIG", "DOORBELL_EDGE_STATE_DIR")}
    watching = subscribe(["#"])
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "state"), str(broker.port)],
                             stdout=subprocess.PIPE, text=True, cwd=REPO, env=environ)
    try:
        assert child.stdout is not None
        line = [""]
        reader = threading.Thread(target=lambda: line.__setitem__(0, child.stdout.readline() if child.stdout else ""))
        reader.start()
        reader.join(30)
        assert line[0].strip() == "connected", line
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout:
            child.stdout.close()
    # The broker sent the last will (offline) to whoever listened, but did not keep it.
    wait_until(lambda: any(p == b"offline" for t, p, _ in watching.messages if t.endswith("/availability")),
               what="the last will")
    assert _no_retained(broker.port) == []


def test_missing_ca_file_is_named_at_start(tmp_path: Path) -> None:
    config = make_config(tmp_path / "state", free_port(), tls={"enabled": True, "ca_file": str(tmp_path / "ca.pem")})
    with pytest.raises(ConfigError) as info:
        build(config, EventBus(), SystemClock(), dict)
    assert str(info.value) == f"mqtt.tls.ca_file: file not found: {tmp_path / 'ca.pem'}"
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=rf"mqtt.tls.ca_file: {tmp_path / 'ca.pem'} holds no usable PEM CA"):
        build(config, EventBus(), SystemClock(), dict)


def test_ca_file_lost_after_start_is_named_by_the_link(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(TestCA(tmp_path / "pki", "test-ca").cert_path.read_bytes())
    config = make_config(tmp_path / "state", free_port(), reconnect_min_s=0.05, reconnect_max_s=0.1,
                         tls={"enabled": True, "ca_file": str(ca)})
    caplog.set_level(logging.WARNING, logger="edge.mqtt")
    service = build(config, EventBus(), SystemClock(), dict)
    ca.unlink()
    service.start()
    try:
        assert service.publisher is not None
        link = service.publisher.link
        wait_until(lambda: link.attempts >= 3, what="attempts")
        assert link.last_error == (f"MQTT: cannot prepare the connection to 127.0.0.1:{config.mqtt.port}: "
                                   f"mqtt.tls.ca_file: file not found: {ca}")
        assert len([m for m in _warnings(caplog) if "mqtt.tls.ca_file" in m]) == 1
    finally:
        service.stop()
