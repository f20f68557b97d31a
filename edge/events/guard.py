"""What an event may carry off the device (the privacy guard) and its wire form on .../events."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from edge.events.bus import Event

# Keys that would carry face data or footage. No event may hold them, whatever its type.
FORBIDDEN_KEYS = frozenset(
    {"embedding", "embeddings", "vector", "crop", "face_crop", "image", "jpeg", "thumbnail", "frame", "clip_data"}
)
FACE_FIELDS = frozenset({"result", "person", "confidence", "visit_id", "track_id"})
VISIT_ID = re.compile(r"^[A-Za-z0-9_-]{4,64}$")


class EventRejected(ValueError):
    """The event would carry something that must not leave the device, or cannot be encoded."""


def check_event(event: Event) -> None:
    """Raise EventRejected naming the offending key when an event breaks the privacy rules.

    A `face` event names an enrolled person (`result: known`, `person`) or says `result: unknown` with a
    short-lived `visit_id`; it never carries an embedding or a crop. Numbers must be finite.
    """
    _walk(event.type, event.fields, "")
    if event.type != "face":
        return
    extra = set(event.fields) - FACE_FIELDS
    if extra:
        raise EventRejected(f"face event: field(s) {', '.join(sorted(extra))} not allowed "
                            f"(allowed: {', '.join(sorted(FACE_FIELDS))})")
    result = event.fields.get("result")
    if result == "known":
        person = event.fields.get("person")
        if not isinstance(person, str) or not person or person == "unknown":
            raise EventRejected("face event: result 'known' needs the enrolled person's name in 'person'")
        if "visit_id" in event.fields:
            raise EventRejected("face event: 'visit_id' belongs to unknown faces only")
    elif result == "unknown":
        if "person" in event.fields:
            raise EventRejected("face event: an unknown face must not name a person")
        visit = event.fields.get("visit_id")
        if not isinstance(visit, str) or not VISIT_ID.fullmatch(visit):
            raise EventRejected("face event: result 'unknown' needs a visit_id of 4-64 letters, digits, '_' or '-'")
    else:
        raise EventRejected(f"face event: 'result' must be 'known' or 'unknown', got {result!r}")
    confidence = event.fields.get("confidence")
    if confidence is not None and (not isinstance(confidence, int | float) or not 0 <= confidence <= 1):
        raise EventRejected("face event: 'confidence' must be a number from 0 to 1")


def _walk(event_type: str, value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EventRejected(f"{event_type} event: key {key!r} at {path or 'top level'} is not a string")
            if key.lower() in FORBIDDEN_KEYS:
                raise EventRejected(f"{event_type} event: field {path}{key!r} would carry face data or footage")
            _walk(event_type, item, f"{path}{key}.")
    elif isinstance(value, list | tuple):
        if len(value) > 16 and all(isinstance(v, float) for v in value):
            raise EventRejected(f"{event_type} event: {path.rstrip('.')} looks like an embedding (a long float list)")
        for item in value:
            _walk(event_type, item, path)
    elif isinstance(value, bytes | bytearray | memoryview):
        raise EventRejected(f"{event_type} event: {path.rstrip('.')} holds raw bytes; events carry no binary data")


def event_payload(event: Event) -> str:
    """The JSON text sent on .../events (sorted keys, compact, no NaN)."""
    try:
        return json.dumps(event.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise EventRejected(f"{event.type} event {event.id}: fields are not plain JSON: {exc}") from exc
