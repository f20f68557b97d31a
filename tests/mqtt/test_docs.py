"""docs/events.md shows a schema-valid example of every event type."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema

from edge.events.bus import EVENT_TYPES

REPO = Path(__file__).resolve().parents[2]


def test_every_event_type_has_a_valid_example() -> None:
    schema = json.loads((REPO / "edge/schemas/event.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    text = (REPO / "docs/events.md").read_text()
    examples = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", text, re.S)]
    for body in examples:
        errors = list(validator.iter_errors(body))
        assert not errors, f"{body['type']} example: {errors[0].message}"
    assert {e["type"] for e in examples} == set(EVENT_TYPES)


def test_schema_refuses_face_data() -> None:
    schema = json.loads((REPO / "edge/schemas/event.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    base = {"v": 1, "id": "c7e1a9b3-5d2f-4a6e-b8c0-3f9d1e7a5b24", "seq": 1, "type": "face", "camera": "c",
            "ts": "2026-05-04T17:21:04.620Z"}
    assert validator.is_valid({**base, "result": "known", "person": "alice"})
    assert not validator.is_valid({**base, "result": "known", "person": "alice", "embedding": [0.1, 0.2]})
    assert not validator.is_valid({**base, "result": "unknown", "visit_id": "v-1234", "person": "alice"})
    assert not validator.is_valid({**base, "result": "known", "person": "unknown"})
    assert not validator.is_valid({**base, "type": "ring", "source": "button", "image": "..."})
