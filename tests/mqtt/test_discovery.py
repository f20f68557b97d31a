"""Home Assistant payloads are pure functions; golden files pin the exact discovery configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge.mqtt.discovery import DeviceInfo, discovery_payloads, doorbell_payload, encode, state_payload
from edge.mqtt.topics import Topics, topics_for
from tests.mqtt.conftest import make_config

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "discovery"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"  # regenerate after a deliberate change, then review the diff
TOPICS = Topics(prefix="doorbell-edge/frontdoor", device_id="frontdoor")


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
            assert topic == "homeassistant/image/frontdoor/snapshot/config" and not snapshot
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
    assert payloads(False)["homeassistant/image/frontdoor/snapshot/config"] == ""  # removed when snapshots are off
    image = json.loads(payloads(True)["homeassistant/image/frontdoor/snapshot/config"])
    assert image["image_topic"] == "doorbell-edge/frontdoor/snapshot" and image["content_type"] == "image/jpeg"


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
