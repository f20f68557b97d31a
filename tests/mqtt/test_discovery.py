"""Home Assistant payloads are pure functions; golden files pin the exact discovery configs."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from edge.mqtt.discovery import DeviceInfo, discovery_payloads, doorbell_payload, encode, state_payload
from edge.mqtt.topics import Topics, topics_for
from tests.mqtt.conftest import make_config

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "discovery"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"  # regenerate after a deliberate change, then review the diff
TOPICS = Topics(prefix="doorbell-edge/frontdoor", device_id="frontdoor")
SNAPSHOT_TOPICS = {"homeassistant/image/frontdoor/snapshot/config",
                   "homeassistant/button/frontdoor/take_snapshot/config"}


def payloads(snapshot: bool) -> dict[str, str]:
    info = DeviceInfo(topics=TOPICS, name="Front door", sw_version="1.0.0", snapshot=snapshot)
    return dict(discovery_payloads(info))


def golden_name(topic: str) -> str:
    _, component, _, object_id, _ = topic.split("/")
    return f"{component}.{object_id}.json"


@pytest.mark.parametrize("snapshot", [False, True])
def test_discovery_matches_golden_files(snapshot: bool) -> None:
    for topic, payload in payloads(snapshot).items():
        if not payload:
            assert topic in SNAPSHOT_TOPICS and not snapshot
            continue
        path = GOLDEN / golden_name(topic)
        if UPDATE:
            path.write_text(json.dumps(json.loads(payload), indent=2, sort_keys=True) + "\n")
        assert json.loads(payload) == json.loads(path.read_text()), f"{topic} differs from {path.name}"
        assert payload == encode(json.loads(path.read_text()))  # exact bytes on the wire


def test_every_golden_file_is_used() -> None:
    used = {golden_name(t) for t, p in payloads(True).items() if p}
    assert {p.name for p in GOLDEN.glob("*.json")} == used


def test_discovery_shape() -> None:
    found = {t: json.loads(p) for t, p in payloads(False).items() if p}
    doorbell = found["homeassistant/event/frontdoor/doorbell/config"]
    assert doorbell["device_class"] == "doorbell"
    assert doorbell["event_types"] == ["ring", "known_face", "unknown_face"]
    assert doorbell["state_topic"] == "doorbell-edge/frontdoor/doorbell"
    for body in found.values():
        assert body["device"]["identifiers"] == ["doorbell-edge_frontdoor"]
        assert body["availability_topic"] == "doorbell-edge/frontdoor/availability"
        assert body["unique_id"].startswith("doorbell-edge_frontdoor_")
    for name in ("motion", "occupancy"):
        sensor = found[f"homeassistant/binary_sensor/frontdoor/{name}/config"]
        assert sensor["payload_off"] == "OFF" and "'OFF'" in sensor["value_template"]
    diagnostics = [b for b in found.values() if b.get("entity_category") == "diagnostic"]
    assert len(diagnostics) >= 5
    for topic in SNAPSHOT_TOPICS:
        assert payloads(False)[topic] == ""  # removed when snapshots are off
    image = json.loads(payloads(True)["homeassistant/image/frontdoor/snapshot/config"])
    assert image["image_topic"] == "doorbell-edge/frontdoor/snapshot" and image["content_type"] == "image/jpeg"
    button = json.loads(payloads(True)["homeassistant/button/frontdoor/take_snapshot/config"])
    assert button["command_topic"] == TOPICS.command("snapshot") and button["retain"] is False


def test_topics_follow_the_prefix(tmp_path: Path) -> None:
    config = make_config(tmp_path, 1883, topic_prefix="home/porch", discovery_prefix="ha")
    topics = topics_for(config)
    assert topics.events == "home/porch/events" and topics.availability == "home/porch/availability"
    assert topics.state == "home/porch/state" and topics.snapshot == "home/porch/snapshot"
    assert topics.command("state") == "home/porch/cmd/state" and topics.ha_status == "ha/status"
    assert topics.discovery("event", "doorbell") == "ha/event/testbell/doorbell/config"
    assert topics_for(make_config(tmp_path, 1883)).events == "doorbell-edge/testbell/events"


@pytest.mark.parametrize("prefix", ["a/+/b", "a/#", "/lead", "trail/", ""])
def test_bad_topic_prefix_is_a_config_error(tmp_path: Path, prefix: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="topic_prefix"):
        make_config(tmp_path, 1883, topic_prefix=prefix)


def test_doorbell_feed_and_state_payloads() -> None:
    base = {"id": "e1", "seq": 3, "camera": "front_door", "ts": "2026-01-01T00:00:00.000Z"}
    assert doorbell_payload({**base, "type": "ring", "source": "button"}) == {"event_type": "ring", "event_id": "e1",
                                                                               "seq": 3, "camera": "front_door",
                                                                               "ts": base["ts"]}
    assert doorbell_payload({**base, "type": "face", "result": "known", "person": "alice"})["person"] == "alice"
    unknown = doorbell_payload({**base, "type": "face", "result": "unknown", "visit_id": "v-1"})
    assert unknown is not None and unknown["event_type"] == "unknown_face" and "person" not in unknown
    assert doorbell_payload({**base, "type": "motion_start"}) is None
    state = state_payload({"motion": 1, "fps": "bad", "inference_ms": float("inf"), "pending_requests": "2"}, 4, 1, 9)
    assert state == {"motion": True, "occupancy": False, "recording": False, "fps": None, "inference_ms": None,
                     "pending_requests": 2, "outbox": 4, "dropped": 1, "last_seq": 9}


def test_state_takes_fps_from_the_app_cameras() -> None:
    provided = {"motion": False, "cameras": {"a": {"fps": 10.0}, "b": {"fps": 5.0}}}
    assert state_payload(provided, 0, 0, 0)["fps"] == 7.5


# --- what a real Home Assistant accepts (checked with tools/ha_check.py; see docs/events.md) ---------------------
# Home Assistant itself is not installed in CI. These are the rules its MQTT integration (2024.3) applied to our
# payloads; a payload that breaks one is refused, silently stripped of a key, or shown wrongly.

# Keys each platform's discovery schema knows. binary_sensor and button DROP unknown keys without a word, so a
# misspelt key would silently do nothing; the other platforms refuse the whole entity.
HA_COMMON_KEYS = {"availability", "availability_mode", "availability_template", "availability_topic", "device",
                  "enabled_by_default", "encoding", "entity_category", "icon", "json_attributes_template",
                  "json_attributes_topic", "name", "object_id", "origin", "payload_available",
                  "payload_not_available", "qos", "unique_id"}
HA_PLATFORM_KEYS = {
    "event": {"device_class", "event_types", "state_topic", "value_template"},
    "binary_sensor": {"device_class", "expire_after", "force_update", "off_delay", "payload_off", "payload_on",
                      "state_topic", "value_template"},
    "sensor": {"device_class", "expire_after", "force_update", "last_reset_value_template", "state_class",
               "state_topic", "suggested_display_precision", "unit_of_measurement", "value_template"},
    "image": {"content_type", "image_encoding", "image_topic", "url_template", "url_topic"},
    "button": {"command_template", "command_topic", "device_class", "payload_press", "retain"},
}
HA_DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "name",
                  "serial_number", "suggested_area", "sw_version", "via_device"}
HA_ORIGIN_KEYS = {"name", "sw_version", "support_url"}
HA_DEVICE_CLASSES = {
    "event": {"button", "doorbell", "motion"},
    "binary_sensor": {"battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
                      "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving", "occupancy",
                      "opening", "plug", "power", "presence", "problem", "running", "safety", "smoke", "sound",
                      "tamper", "update", "vibration", "window"},
    "button": {"identify", "restart", "update"},
    # sensor: only the classes we use, with the units and state classes Home Assistant allows for them
    "sensor": {"duration"},
}
HA_SENSOR_UNITS = {"duration": {"d", "h", "min", "s", "ms"}}
HA_STATE_CLASSES = {"measurement", "total", "total_increasing"}
# Home Assistant's discovery topic: <prefix>/<component>/[<node_id>/]<object_id>/config
HA_DISCOVERY_TOPIC = re.compile(r"^homeassistant/(?P<component>\w+)/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config$")
SENSOR_TEMPLATE = re.compile(r"^\{\{ value_json\.(?P<key>[a-z_]+) \}\}$")
BINARY_TEMPLATE = re.compile(r"^\{\{ 'ON' if value_json\.(?P<key>[a-z_]+) else 'OFF' \}\}$")


def announced(snapshot: bool = True) -> dict[str, tuple[str, dict]]:
    found = {}
    for topic, payload in payloads(snapshot).items():
        match = HA_DISCOVERY_TOPIC.match(topic)
        assert match, f"{topic} is not a topic Home Assistant's discovery subscribes to"
        if payload:
            found[topic] = (match["component"], json.loads(payload))
    return found


def test_every_key_is_one_home_assistant_knows() -> None:
    for topic, (component, body) in announced().items():
        unknown = set(body) - HA_COMMON_KEYS - HA_PLATFORM_KEYS[component]
        assert not unknown, f"{topic}: Home Assistant's {component} schema does not know {sorted(unknown)}"
        assert set(body["device"]) <= HA_DEVICE_KEYS and set(body["origin"]) <= HA_ORIGIN_KEYS, topic
        assert body["origin"]["name"], topic


def test_device_classes_units_and_state_classes_are_allowed() -> None:
    for topic, (component, body) in announced().items():
        if "device_class" in body:
            assert body["device_class"] in HA_DEVICE_CLASSES[component], topic
        if component == "sensor":
            assert body.get("state_class", "measurement") in HA_STATE_CLASSES, topic
            if body.get("device_class") in HA_SENSOR_UNITS:
                assert body.get("unit_of_measurement") in HA_SENSOR_UNITS[body["device_class"]], topic
        if component in ("sensor", "binary_sensor"):
            # read-only platforms: "config" is refused, only "diagnostic" (or nothing) is allowed
            assert body.get("entity_category") in (None, "diagnostic"), topic
        assert body["qos"] in (0, 1, 2) and body["payload_available"] != body["payload_not_available"], topic


def test_unique_ids_and_names_make_distinct_entities() -> None:
    bodies = [body for _, body in announced().values()]
    assert len({b["unique_id"] for b in bodies}) == len(bodies)
    # Home Assistant names an entity "<device name> <entity name>"; a null name is the device's main feature (the
    # doorbell, entity_id event.<device>); only one entity may have it, and no name may repeat the device name.
    assert [b["name"] for b in bodies].count(None) == 1
    for body in bodies:
        assert body["name"] is None or not body["name"].lower().startswith(body["device"]["name"].lower())


def realistic_states() -> list[dict]:
    """State payloads as the publisher builds them: at start-up (nothing known yet), in use, and with junk input."""
    return [
        state_payload({}, 0, 0, 0),
        state_payload({"motion": True, "recording": True, "fps": 9.94, "inference_ms": 14.123,
                       "pending_requests": 1, "occupancy": True}, 2, 0, 17),
        state_payload({"motion": None, "cameras": {"front": {"fps": 10.0}}, "inference_ms": "n/a"}, 0, 3, 99),
    ]


def render(template: str, state: dict) -> str:
    """What Home Assistant's Jinja renders for the two template shapes we use (None renders as "None")."""
    if match := BINARY_TEMPLATE.match(template):
        return "ON" if state.get(match["key"]) else "OFF"
    match = SENSOR_TEMPLATE.match(template)
    assert match, f"value_template {template!r} is not one of the shapes checked against Home Assistant"
    assert match["key"] in state, f"{match['key']} is not in the state payload"
    return str(state[match["key"]])


def test_value_templates_render_what_home_assistant_expects() -> None:
    for topic, (component, body) in announced().items():
        if body.get("state_topic") != TOPICS.state:
            continue
        for state in realistic_states():
            json.loads(encode(state))  # what goes on the wire is what the template sees
            rendered = render(body["value_template"], state)
            if component == "binary_sensor":
                # explicit OFF: the key is always a real bool, never null (which would read as OFF forever)
                assert BINARY_TEMPLATE.match(body["value_template"]), topic
                assert isinstance(state[BINARY_TEMPLATE.match(body["value_template"])["key"]], bool)
                assert rendered in (body["payload_on"], body["payload_off"]), topic
            else:
                # Home Assistant maps "None" to unknown only for a numeric sensor (state_class or unit set);
                # otherwise it would show the word "None".
                assert "state_class" in body or "unit_of_measurement" in body, topic
                if rendered != "None":
                    number = float(rendered)
                    if body.get("state_class") == "total_increasing":
                        assert number >= 0 and float(rendered).is_integer(), topic


def test_doorbell_feed_is_what_the_event_entity_accepts() -> None:
    (_, event), = [v for v in announced().values() if v[0] == "event"]
    base = {"id": "e1", "seq": 3, "camera": "front_door", "ts": "2026-01-01T00:00:00.000Z"}
    events = [{**base, "type": "ring", "source": "button"},
              {**base, "type": "face", "result": "known", "person": "alice"},
              {**base, "type": "face", "result": "unknown", "visit_id": "v-1"}]
    fired = []
    for item in events:
        feed = doorbell_payload(item)
        assert feed is not None
        wire = json.loads(encode(feed))
        # Home Assistant pops event_type (which must be one of event_types) and keeps the rest as attributes;
        # event_types is reserved, and attributes must not shadow the entity's own ones.
        assert wire["event_type"] in event["event_types"]
        assert not set(wire) & {"event_types", "device_class", "friendly_name", "icon"}
        fired.append(wire["event_type"])
    assert fired == event["event_types"]


def test_snapshot_button_sends_a_command_the_device_accepts() -> None:
    from edge.mqtt.commands import Command, Rejected, parse_command

    (_, button), = [v for v in announced().values() if v[0] == "button"]
    # Home Assistant's default payload_press is "PRESS", which the device would reject as not JSON.
    assert isinstance(parse_command("snapshot", b"PRESS"), Rejected)
    name = button["command_topic"].removeprefix(TOPICS.command_prefix)
    assert parse_command(name, button["payload_press"].encode()) == Command("snapshot", "home-assistant")
    assert button["availability_topic"] == TOPICS.availability
