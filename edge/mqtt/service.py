"""Builds the MQTT component from config: the event journal becomes the bus's journal, the publisher drains its
queue (the outbox)."""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from pathlib import Path

from edge import __version__
from edge.clock import Clock
from edge.config import Config
from edge.diskfaults import is_read_only
from edge.errors import ConfigError, StorageError
from edge.events.bus import EventBus
from edge.layout import StateLayout
from edge.mqtt.client import LinkSettings, TlsSettings, tls_context
from edge.mqtt.commands import CommandLimits
from edge.mqtt.discovery import DeviceInfo
from edge.mqtt.outbox import Outbox, memory_outbox, open_outbox
from edge.mqtt.publisher import Publisher, SnapshotProvider, StateProvider
from edge.mqtt.topics import OFFLINE, topics_for

log = logging.getLogger(__name__)

CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"


def read_password(config: Config, environ: dict[str, str] | None = None) -> str | None:
    """The broker password from mqtt.password_file or the systemd credential; ConfigError names what is wrong."""
    mqtt = config.mqtt
    env = os.environ if environ is None else environ
    if mqtt.password_file is not None:
        path = mqtt.password_file
        what = f"mqtt.password_file {path}"
    elif mqtt.password_credential is not None:
        directory = env.get(CREDENTIALS_ENV)
        if not directory:
            raise ConfigError(f"mqtt.password_credential {mqtt.password_credential!r}: ${CREDENTIALS_ENV} is not set "
                              "(add LoadCredential= to the unit, or use password_file)")
        path = Path(directory) / mqtt.password_credential
        what = f"systemd credential {mqtt.password_credential!r} ({path})"
    else:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read the MQTT password: {exc}") from exc
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(f"{what}: the file is empty")
    return password


def link_settings(config: Config) -> LinkSettings:
    mqtt = config.mqtt
    tls = None
    if mqtt.tls.enabled:
        tls = TlsSettings(mqtt.tls.ca_file, mqtt.tls.cert_file, mqtt.tls.key_file, mqtt.tls.insecure)
    topics = topics_for(config)
    has_password = mqtt.password_file is not None or mqtt.password_credential is not None
    return LinkSettings(
        host=mqtt.host,
        port=mqtt.port,
        client_id=mqtt.client_id or f"doorbell-edge-{config.device.id}",
        will_topic=topics.availability,
        will_payload=OFFLINE,
        protocol=mqtt.protocol,
        keepalive_s=mqtt.keepalive_s,
        username=mqtt.username,
        password=(lambda: read_password(config)) if has_password else None,
        tls=tls,
        reconnect_min_s=mqtt.reconnect_min_s,
        reconnect_max_s=mqtt.reconnect_max_s,
        will_retain=mqtt.retain,
        password_hint=(f"mqtt.password_file {mqtt.password_file}" if mqtt.password_file
                       else f"credential {mqtt.password_credential!r}" if mqtt.password_credential
                       else "the password"),
    )


class MqttService:
    """start()/stop() for the app; `journal` is the durable outbox (set on the bus by build())."""

    def __init__(self, journal: Outbox, publisher: Publisher | None) -> None:
        self.journal = journal
        self.publisher = publisher

    def start(self) -> None:
        if self.publisher is not None:
            self.publisher.start()

    def stop(self) -> None:
        if self.publisher is not None:
            self.publisher.stop()
        self.journal.close()

    def publish_snapshot(self, jpeg: bytes) -> bool:
        return self.publisher.publish_snapshot(jpeg) if self.publisher is not None else False


def build(
    config: Config,
    bus: EventBus,
    clock: Clock,
    state_provider: StateProvider,
    snapshot_provider: SnapshotProvider | None = None,
) -> MqttService:
    """Open the event journal under config.state_dir (migrating mqtt-outbox.sqlite3 once), make it the bus's
    journal, and prepare (not start) the publisher.

    With mqtt.enabled false the journal still numbers and keeps events durably (so CLI processes and the daemon
    share one seq, and `events list` shows them), but nothing is sent; the queue stays bounded by outbox_max_events.
    """
    try:
        outbox = open_outbox(config, clock)
    except StorageError:
        if not is_read_only(config.state_dir):
            raise
        # A read-only state dir: events still reach the broker from an in-memory journal (not durable).
        log.error("the state dir %s is read-only: events are kept in memory only until it is fixed", config.state_dir)
        outbox = memory_outbox(config, clock)
    bus.set_journal(outbox)
    if not config.mqtt.enabled:
        log.info("MQTT is off: events are numbered in %s but not published", outbox.path)
        return MqttService(outbox, None)
    if config.mqtt.snapshot:
        log.warning("MQTT snapshots are ON (mqtt.snapshot): JPEG frames will be sent to %s:%s on request",
                    config.mqtt.host, config.mqtt.port)
    if config.mqtt.tls.insecure:
        log.warning("MQTT TLS verification is OFF (mqtt.tls.insecure): testing only")
    settings = link_settings(config)
    if settings.tls is not None:
        # A TLS file that is missing or not PEM will not appear by retrying: exit 78 naming the key and file now
        # (if one goes missing later, every attempt logs the same named error).
        tls_context(settings.tls)
    if not config.mqtt.retain:
        log.info("MQTT: nothing retained on %s:%s (mqtt.retain false%s)", config.mqtt.host, config.mqtt.port,
                 "" if config.mqtt.discovery else ", no Home Assistant discovery")
    topics = topics_for(config)
    device = DeviceInfo(topics=topics, name=config.device.name, sw_version=__version__, snapshot=config.mqtt.snapshot)
    publisher = Publisher(
        outbox,
        settings,
        topics,
        device,
        clock,
        state_provider=state_provider,
        snapshot_provider=snapshot_provider,
        discovery=config.mqtt.discovery,
        retain=config.mqtt.retain,
        snapshot=config.mqtt.snapshot,
        state_interval_s=config.mqtt.state_interval_s,
        limits=CommandLimits.from_config(config.mqtt, clock.monotonic),
        audit_lookup=partial(audit_hash_at, config.state_dir),
    )
    return MqttService(outbox, publisher)


def audit_hash_at(state_dir: Path, seq: int) -> str | None:
    """The hash of record `seq` in the footage audit log under `state_dir`; None when the log has no such record
    (or no log exists). Raises OSError when it cannot be read. The publisher compares witnessed heads with it."""
    try:
        data = StateLayout.of(state_dir).audit_log.read_bytes()
    except FileNotFoundError:
        return None
    lines = data.splitlines()
    # Record n is line n unless the log is damaged (then `audit verify` says so): look there first, then scan.
    for line in ([lines[seq - 1]] if 0 < seq <= len(lines) else []) + lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn tail
        if isinstance(record, dict) and record.get("seq") == seq:
            return str(record.get("hash"))
    return None
