"""Every MQTT topic string doorbell-edge publishes or subscribes to, derived from the configured prefixes."""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import Config

ONLINE = "online"
OFFLINE = "offline"

# Commands a broker user may send: harmless actions only (never anything about footage).
COMMANDS = ("discovery", "state", "snapshot")


@dataclass(frozen=True)
class Topics:
    """Topics of one device: `prefix` is mqtt.topic_prefix (default doorbell-edge/<device.id>)."""

    prefix: str
    device_id: str
    discovery_prefix: str = "homeassistant"

    @property
    def availability(self) -> str:
        """Retained online/offline; offline is the last will."""
        return f"{self.prefix}/availability"

    @property
    def events(self) -> str:
        """Every event as versioned JSON, QoS 1, never retained."""
        return f"{self.prefix}/events"

    @property
    def doorbell(self) -> str:
        """The Home Assistant event entity's feed: {"event_type": ring|known_face|unknown_face}."""
        return f"{self.prefix}/doorbell"

    @property
    def state(self) -> str:
        """Retained summary: motion, occupancy, fps, inference ms, recording, pending requests, outbox."""
        return f"{self.prefix}/state"

    @property
    def audit_head(self) -> str:
        """Retained: the footage audit log's latest head {"seq", "hash", "ts"}, re-published after every append, so a
        subscriber that keeps history (Home Assistant's recorder) witnesses every head (docs/footage-requests.md)."""
        return f"{self.prefix}/audit/head"

    @property
    def audit_sync(self) -> str:
        """Never retained: a marker the publisher sends itself after subscribing to audit_head; when it comes back,
        the broker has delivered the retained head (if any), so audit heads may be compared and published."""
        return f"{self.prefix}/audit/sync"

    @property
    def snapshot(self) -> str:
        """JPEG snapshots (only when mqtt.snapshot is on)."""
        return f"{self.prefix}/snapshot"

    @property
    def command_prefix(self) -> str:
        return f"{self.prefix}/cmd/"

    @property
    def command_filter(self) -> str:
        return f"{self.prefix}/cmd/#"  # deeper topics too, so they are rejected loudly

    def command(self, name: str) -> str:
        return f"{self.command_prefix}{name}"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth/will topic: `online` means discovery must be re-sent."""
        return f"{self.discovery_prefix}/status"

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.device_id}/{object_id}/config"


def topics_for(config: Config) -> Topics:
    return Topics(
        prefix=config.topic_prefix,
        device_id=config.device.id,
        discovery_prefix=config.mqtt.discovery_prefix,
    )
