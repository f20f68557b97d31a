"""Pure builders of the Home Assistant payloads: discovery configs, the doorbell event feed and the state summary."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.mqtt.topics import OFFLINE, ONLINE, Topics

# The event entity's types, in the order Home Assistant shows them.
HA_EVENT_TYPES = ("ring", "known_face", "unknown_face")

# What Home Assistant's buttons send on <prefix>/cmd/<name>: a command the device accepts, naming its sender in logs.
HA_COMMAND_PAYLOAD = {"request_id": "home-assistant"}

# Keys of the retained .../state payload and their types; anything the app leaves out is null.
STATE_KEYS: dict[str, type] = {
    "motion": bool,
    "occupancy": bool,
    "recording": bool,
    "fps": float,
    "inference_ms": float,
    "pending_requests": int,
}


@dataclass(frozen=True)
class DeviceInfo:
    """What discovery needs to know about this device."""

    topics: Topics
    name: str
    sw_version: str
    snapshot: bool = False


def encode(payload: Mapping[str, Any]) -> str:
    """The wire form of every JSON payload: sorted keys, compact, UTF-8 safe."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _device(info: DeviceInfo) -> dict[str, Any]:
    return {
        "identifiers": [f"doorbell-edge_{info.topics.device_id}"],
        "manufacturer": "doorbell-edge",
        "model": "doorbell-edge",
        "name": info.name,
        "sw_version": info.sw_version,
    }


def _common(info: DeviceInfo, object_id: str, name: str | None) -> dict[str, Any]:
    return {
        "availability_topic": info.topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": _device(info),
        "name": name,
        "unique_id": f"doorbell-edge_{info.topics.device_id}_{object_id}",
        "origin": {"name": "doorbell-edge", "sw_version": info.sw_version},
        "qos": 1,
    }


def _binary(info: DeviceInfo, object_id: str, name: str, key: str, device_class: str | None,
            diagnostic: bool = False) -> dict[str, Any]:
    body = _common(info, object_id, name)
    body.update(
        {
            "state_topic": info.topics.state,
            # Explicit OFF: a missing or false key is OFF, never "unknown" or a stuck ON.
            "value_template": f"{{{{ 'ON' if value_json.{key} else 'OFF' }}}}",
            "payload_on": "ON",
            "payload_off": "OFF",
        }
    )
    if device_class:
        body["device_class"] = device_class
    if diagnostic:
        body["entity_category"] = "diagnostic"
    return body


def _sensor(info: DeviceInfo, object_id: str, name: str, key: str, unit: str | None,
            state_class: str = "measurement", icon: str | None = None) -> dict[str, Any]:
    body = _common(info, object_id, name)
    body.update(
        {
            "state_topic": info.topics.state,
            "value_template": f"{{{{ value_json.{key} }}}}",
            "entity_category": "diagnostic",
            "state_class": state_class,
        }
    )
    if unit:
        body["unit_of_measurement"] = unit
    if icon:
        body["icon"] = icon
    return body


def discovery_payloads(info: DeviceInfo) -> list[tuple[str, str]]:
    """(topic, payload) for every entity; an empty payload removes an entity (the snapshot image and its button
    when snapshots are off).

    All discovery configs are published retained so Home Assistant finds them after its own restart.
    """
    topics = info.topics
    entities: list[tuple[str, str, dict[str, Any] | None]] = []

    doorbell = _common(info, "doorbell", None)
    doorbell.update(
        {
            "state_topic": topics.doorbell,
            "device_class": "doorbell",
            "event_types": list(HA_EVENT_TYPES),
        }
    )
    entities.append(("event", "doorbell", doorbell))
    entities.append(("binary_sensor", "motion", _binary(info, "motion", "Motion", "motion", "motion")))
    entities.append(("binary_sensor", "occupancy", _binary(info, "occupancy", "Occupancy", "occupancy", "occupancy")))
    entities.append(
        ("binary_sensor", "recording", _binary(info, "recording", "Recording", "recording", "running", True))
    )
    entities.append(("sensor", "fps", _sensor(info, "fps", "Frame rate", "fps", "fps", icon="mdi:camera-timer")))
    inference = _sensor(info, "inference_ms", "Inference time", "inference_ms", "ms")
    inference["device_class"] = "duration"
    entities.append(("sensor", "inference_ms", inference))
    entities.append(
        ("sensor", "pending_requests", _sensor(info, "pending_requests", "Pending footage requests",
                                               "pending_requests", None, icon="mdi:file-clock"))
    )
    entities.append(
        ("sensor", "outbox", _sensor(info, "outbox", "Events waiting", "outbox", None, icon="mdi:tray-full"))
    )
    entities.append(
        ("sensor", "dropped_events", _sensor(info, "dropped_events", "Events dropped", "dropped",
                                             None, state_class="total_increasing", icon="mdi:delete-alert"))
    )
    if info.snapshot:
        image = _common(info, "snapshot", "Snapshot")
        image.update({"image_topic": topics.snapshot, "content_type": "image/jpeg"})
        entities.append(("image", "snapshot", image))
        # The device only sends a snapshot when asked: this button asks (cmd/snapshot). Home Assistant's default
        # press payload "PRESS" is not a valid command, so the button sends a JSON object the parser accepts.
        button = _common(info, "take_snapshot", "Take snapshot")
        button.update({"command_topic": topics.command("snapshot"), "payload_press": encode(HA_COMMAND_PAYLOAD),
                       "retain": False, "icon": "mdi:camera"})
        entities.append(("button", "take_snapshot", button))
    else:
        entities.append(("image", "snapshot", None))
        entities.append(("button", "take_snapshot", None))
    return [(topics.discovery(component, object_id), "" if body is None else encode(body))
            for component, object_id, body in entities]


def doorbell_payload(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the Home Assistant event entity hears for an event (its wire form), or None if not one of its types.

    Carries ids, the camera and (for a known face) the enrolled person's name; never an embedding or an image.
    """
    base: dict[str, Any] = {"event_id": event.get("id"), "seq": event.get("seq"), "camera": event.get("camera"),
                            "ts": event.get("ts")}
    if event.get("type") == "ring":
        return {"event_type": "ring", **base}
    if event.get("type") == "face":
        if event.get("result") == "known":
            return {"event_type": "known_face", **base, "person": event.get("person")}
        if event.get("result") == "unknown":
            return {"event_type": "unknown_face", **base, "visit_id": event.get("visit_id")}
    return None


def state_payload(provided: Mapping[str, Any], outbox: int, dropped: int, last_seq: int) -> dict[str, Any]:
    """The retained summary: the app's values coerced to their documented types (null when absent or unusable)."""
    body: dict[str, Any] = {}
    for key, kind in STATE_KEYS.items():
        body[key] = _coerce(provided.get(key), kind)
    cameras = provided.get("cameras")
    if body["fps"] is None and isinstance(cameras, Mapping):
        # The app reports per camera; the device sensor shows their mean.
        rates = [c.get("fps") for c in cameras.values() if isinstance(c, Mapping)]
        numbers = [float(r) for r in rates if isinstance(r, int | float) and math.isfinite(r)]
        body["fps"] = round(sum(numbers) / len(numbers), 2) if numbers else None
    for key in ("motion", "occupancy", "recording"):
        body[key] = bool(body[key])  # explicit OFF
    body.update({"outbox": outbox, "dropped": dropped, "last_seq": last_seq})
    return body


def _coerce(value: Any, kind: type) -> Any:
    if value is None:
        return None
    if kind is bool:
        return bool(value)
    try:
        if kind is int:
            return int(value)
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 2) if math.isfinite(number) else None
