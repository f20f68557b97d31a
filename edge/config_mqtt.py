"""Config of the event flow's far end: the MQTT broker connection, and how long the event journal keeps history."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.config_base import Section


class MqttTlsConfig(Section):
    enabled: bool = Field(False, description="Connect to the broker over TLS (port 8883 is usual).")
    ca_file: Path | None = Field(
        None,
        description="PEM CA certificate(s) that signed the broker certificate; default: the system trust store. "
        "A relative path is taken from the config file's folder.",
    )
    cert_file: Path | None = Field(
        None, description="PEM client certificate for brokers that require one (relative: from the config's folder)."
    )
    key_file: Path | None = Field(
        None, description="PEM private key of cert_file, mode 0600 (relative: from the config's folder)."
    )
    insecure: bool = Field(
        False,
        description="DANGEROUS: skip broker certificate and host name verification; anyone on the path "
        "can read and forge events. Logged as a warning on every connection. Testing only.",
    )

    @model_validator(mode="after")
    def _check_tls(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.enabled and (self.ca_file or self.cert_file or self.insecure):
            raise ValueError("TLS files or insecure are set but tls.enabled is false")
        return self


class MqttConfig(Section):
    enabled: bool = Field(True, description="Publish events over MQTT. A broker that is down never stops the daemon.")
    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    topic_prefix: str | None = Field(None, description="Prefix of every topic; default doorbell-edge/<device.id>.")
    client_id: str | None = Field(None, description="MQTT client id; default doorbell-edge-<device.id>.")
    protocol: Literal["mqttv5", "mqttv311"] = Field(
        "mqttv5", description="MQTT protocol version: mqttv5 or mqttv311 (3.1.1, for older brokers)."
    )
    keepalive_s: int = Field(60, ge=5, le=3600, description="Seconds between keep-alive pings when idle.")
    username: str | None = Field(None, min_length=1, description="Broker user name; null connects anonymously.")
    password_file: Path | None = Field(
        None,
        description="File holding the broker password (one line, mode 0600, readable by the service user; "
        "relative: from the config file's folder); never put the password in YAML.",
    )
    password_credential: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Name of a systemd credential (LoadCredential=) holding the password, read from "
        "$CREDENTIALS_DIRECTORY/<name>; alternative to password_file.",
    )
    tls: MqttTlsConfig = Field(default_factory=lambda: MqttTlsConfig(), description="TLS to the broker.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First back-off delay after a failed or lost connection.")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest back-off delay between connection attempts.")
    outbox_max_events: int = Field(
        10000,
        ge=10,
        description="Most events the durable outbox holds while the broker is away; beyond it "
        "motion events are dropped first (logged and counted), ring/face/footage events last.",
    )
    outbox_reserved_events: int = Field(
        1000,
        ge=1,
        description="Room in the outbox (at most outbox_max_events) kept for footage_request and system events: "
        "no volume of other kinds evicts them; only more than this many of their own drops the oldest "
        "(system first).",
    )
    outbox_max_age_h: float = Field(
        72.0,
        gt=0,
        description="Motion, person and system events older than this are dropped from the outbox "
        "(logged and counted); ring, face and footage_request events are never dropped for age.",
    )
    state_interval_s: float = Field(
        60.0, ge=1, description="Seconds between republishing the retained .../state summary."
    )
    snapshot: bool = Field(
        False,
        description="Publish JPEG snapshots on .../snapshot (owner consent: frames leave the device "
        "to the broker). Off by default.",
    )
    snapshot_interval_s: float = Field(
        5.0, ge=0, le=3600,
        description="At most one snapshot command per this many seconds; more are rejected as rate limited "
        "(logged, counted). 0 turns the limit off.",
    )
    command_interval_s: float = Field(
        1.0, ge=0, le=3600,
        description="At most one discovery or state command (each) per this many seconds; more are rejected "
        "as rate limited (logged, counted). 0 turns the limit off.",
    )
    discovery: bool = Field(
        True,
        description="Publish Home Assistant MQTT discovery payloads. Without a config file (the built-in "
        "demo) this is false.",
    )
    retain: bool = Field(
        True,
        description="Publish discovery, the .../state summary, .../availability and the last will retained, so "
        "Home Assistant knows them after a restart. Without a config file (the built-in demo) this is false: "
        "nothing is left behind on a broker found by chance on localhost. Events are never retained.",
    )
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="Home Assistant discovery prefix (its status topic is <prefix>/status).",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str | None) -> str | None:
        if value is not None and (
            not value or any(ch in value for ch in "+#\0") or value.startswith("/") or value.endswith("/")
        ):
            raise ValueError("topic_prefix must be non-empty, without '+', '#', NUL, or a leading/trailing '/'")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> MqttConfig:
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("set password_file or password_credential, not both")
        if (self.password_file or self.password_credential) and self.username is None:
            raise ValueError("a password needs a username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class EventsConfig(Section):
    keep_days: float = Field(
        30.0,
        gt=0,
        le=3650,
        description="Days the event journal (<state_dir>/events.sqlite3) keeps every event as the device's own "
        "history (`doorbell-edge events list`), whether or not MQTT delivered it; an event a consumer still waits "
        "for is kept until delivered or dropped by that consumer's limits (mqtt.outbox_*). Aged only while the "
        "wall clock is synchronised.",
    )
    max_events: int = Field(
        100000,
        ge=100,
        le=10_000_000,
        description="The journal's size cap: at most this many of the newest events are kept (about 300 bytes each "
        "on disk: 100000 take ~30 MB), however young; older ones go first.",
    )
