"""TLS with a test CA (verification on), a foreign-CA broker refused, wrong passwords: clear errors, back-off."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from edge.clock import SystemClock
from edge.errors import ConfigError
from edge.events.bus import Event, EventBus
from edge.mqtt.service import build, read_password
from edge.mqtt.topics import topics_for
from tests.mqtt.broker import Broker, add_user, free_port
from tests.mqtt.certs import TestCA
from tests.mqtt.conftest import Subscriber, check_sequence, make_config, wait_until


def tls_broker(tmp_path: Path, ca: TestCA, server_ca: TestCA, plain_port: int) -> Broker:
    server = server_ca.issue("broker", server=True)
    extra = "\n".join([
        f"cafile {ca.cert_path}",
        f"certfile {server.cert}",
        f"keyfile {server.key}",
        "require_certificate true",
        "tls_version tlsv1.2",
        # a plain listener for the test's own subscriber
        f"listener {plain_port} 127.0.0.1",
    ])
    broker = Broker(tmp_path / "broker", extra=extra).start()
    broker.wait_listening(plain_port)
    return broker


def ring(bus: EventBus) -> Event:
    return bus.publish(Event("ring", "front_door", SystemClock().now(), {"source": "button"}))


def test_tls_with_test_ca_and_client_certificate(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "pki", "test-ca")
    client = ca.issue("doorbell", server=False)
    plain = free_port()
    broker = tls_broker(tmp_path, ca, ca, plain)
    try:
        config = make_config(tmp_path / "state", broker.port, tls={
            "enabled": True, "ca_file": str(ca.cert_path), "cert_file": str(client.cert),
            "key_file": str(client.key)})
        topics = topics_for(config)
        sub = Subscriber(plain, [topics.events])
        bus = EventBus()
        service = build(config, bus, SystemClock(), dict)
        service.start()
        try:
            ring(bus)
            ring(bus)
            wait_until(lambda: len(sub.json_on(topics.events)) >= 2, what="events over TLS")
            check_sequence(sub.json_on(topics.events), 1, 2)
        finally:
            service.stop()
            sub.close()
    finally:
        broker.stop()


def test_broker_certificate_from_another_ca_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = TestCA(tmp_path / "pki", "test-ca")
    rogue = TestCA(tmp_path / "pki", "rogue-ca")
    client = ca.issue("doorbell", server=False)
    broker = tls_broker(tmp_path, ca, rogue, free_port())
    try:
        config = make_config(tmp_path / "state", broker.port, tls={
            "enabled": True, "ca_file": str(ca.cert_path), "cert_file": str(client.cert),
            "key_file": str(client.key)})
        bus = EventBus()
        service = build(config, bus, SystemClock(), dict)
        caplog.set_level(logging.WARNING, logger="edge.mqtt")
        service.start()
        try:
            ring(bus)  # the daemon keeps working; the event waits in the outbox
            assert service.publisher is not None
            link = service.publisher.link
            wait_until(lambda: link.attempts >= 3, what="retries with back-off")
            assert link.connections == 0
            refusals = [r.getMessage() for r in caplog.records if "NOT trusted" in r.getMessage()]
            assert refusals, caplog.text
            assert f"TLS certificate of broker 127.0.0.1:{broker.port} NOT trusted, refusing to connect" in refusals[0]
            assert "mqtt.tls.ca_file" in refusals[0]
            assert service.journal.stats().waiting == 1
        finally:
            service.stop()
    finally:
        broker.stop()


def test_insecure_switch_connects_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ca = TestCA(tmp_path / "pki", "test-ca")
    rogue = TestCA(tmp_path / "pki", "rogue-ca")
    client = ca.issue("doorbell", server=False)
    broker = tls_broker(tmp_path, ca, rogue, free_port())
    try:
        config = make_config(tmp_path / "state", broker.port, tls={
            "enabled": True, "insecure": True, "cert_file": str(client.cert), "key_file": str(client.key)})
        caplog.set_level(logging.WARNING, logger="edge.mqtt")
        service = build(config, EventBus(), SystemClock(), dict)
        service.start()
        try:
            assert service.publisher is not None
            wait_until(lambda: service.publisher.link.connections >= 1, what="insecure connection")
            assert "TLS VERIFICATION IS OFF" in caplog.text
        finally:
            service.stop()
    finally:
        broker.stop()


@pytest.mark.parametrize("protocol", ["mqttv5", "mqttv311"])
def test_wrong_password_clear_error_and_back_off(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                 protocol: str) -> None:
    passwords = tmp_path / "passwd"
    add_user(passwords, "bell", "right-password")
    broker = Broker(tmp_path / "broker", anonymous=False, extra=f"password_file {passwords}").start()
    try:
        secret = tmp_path / "mqtt-password"
        secret.write_text("wrong-password\n")
        secret.chmod(0o600)
        config = make_config(tmp_path / "state", broker.port, username="bell", password_file=str(secret),
                             protocol=protocol, reconnect_min_s=0.05, reconnect_max_s=0.4)
        bus = EventBus()
        caplog.set_level(logging.DEBUG, logger="edge.mqtt")  # each retry is logged at DEBUG only
        service = build(config, bus, SystemClock(), dict)
        service.start()
        try:
            ring(bus)
            assert service.publisher is not None
            link = service.publisher.link
            wait_until(lambda: link.attempts >= 4, what="several refused attempts")
            assert link.connections == 0
            refusals = [r for r in caplog.records if "refused the connection" in r.getMessage()]
            refused = [r.getMessage() for r in refusals]
            # The owner sees it once as an ERROR; the retries of the same outage are DEBUG, not a wall of errors.
            assert len(refusals) >= 3 and refusals[0].levelno == logging.ERROR, refused
            assert all(r.levelno == logging.DEBUG for r in refusals[1:]), [r.levelname for r in refusals]
            assert f"check mqtt.username 'bell' and mqtt.password_file {secret}" in refused[0]
            delays = [float(m) for m in re.findall(r"reconnecting to [^ ]+ in ([0-9.]+)s", caplog.text)]
            assert len(delays) >= 3 and delays[1] > delays[0], delays  # backs off
            assert max(delays) <= 0.4

            # Fix the password file: the next attempt reads it again and the waiting ring goes out.
            secret.write_text("right-password\n")
            wait_until(lambda: link.connections >= 1, what="connection after fixing the password")
            wait_until(lambda: service.journal.stats().waiting == 0, what="the ring delivered")
        finally:
            service.stop()
    finally:
        broker.stop()


def test_password_from_systemd_credential(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret\n")
    config = make_config(tmp_path / "state", 1883, username="bell", password_credential="mqtt-password")
    assert read_password(config, {"CREDENTIALS_DIRECTORY": str(creds)}) == "s3cret"
    with pytest.raises(ConfigError, match=r"CREDENTIALS_DIRECTORY is not set"):
        read_password(config, {})
    (creds / "mqtt-password").write_text("")
    with pytest.raises(ConfigError, match="empty"):
        read_password(config, {"CREDENTIALS_DIRECTORY": str(creds)})
    missing = make_config(tmp_path / "state", 1883, username="bell", password_file=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=r"mqtt.password_file .*nope: cannot read"):
        read_password(missing)


def test_broker_acl_refusing_our_topics_keeps_events_and_backs_off(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    acl = tmp_path / "acl"
    acl.write_text("topic read #\ntopic write doorbell-edge/testbell/availability\n")
    broker = Broker(tmp_path / "broker", extra=f"acl_file {acl}").start()
    try:
        config = make_config(tmp_path / "state", broker.port, reconnect_min_s=0.05, reconnect_max_s=0.4)
        bus = EventBus()
        caplog.set_level(logging.DEBUG, logger="edge.mqtt")  # each retry is logged at DEBUG only
        service = build(config, bus, SystemClock(), dict)
        service.start()
        try:
            ring(bus)
            assert service.publisher is not None
            wait_until(lambda: service.publisher.link.attempts >= 4, what="reconnections")
            assert service.journal.stats().waiting == 1  # never acknowledged, never removed
            assert "check that its ACL lets this client publish to doorbell-edge/testbell/#" in caplog.text
            delays = [float(m) for m in re.findall(r"reconnecting to [^ ]+ in ([0-9.]+)s", caplog.text)]
            assert delays[2] > delays[0], delays  # short sessions do not reset the back-off
        finally:
            service.stop()
    finally:
        broker.stop()
