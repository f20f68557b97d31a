"""Strict parsing of the harmless MQTT commands (republish discovery or state, request a snapshot); never footage."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge import strictjson
from edge.mqtt.topics import COMMANDS

MAX_COMMAND_BYTES = 256
REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
ALLOWED_KEYS = frozenset({"request_id"})


@dataclass(frozen=True)
class Command:
    """A validated command: `name` is one of topics.COMMANDS; `request_id` is echoed in logs only."""

    name: str
    request_id: str | None = None


@dataclass(frozen=True)
class Rejected:
    reason: str


def parse_command(name: str, payload: bytes) -> Command | Rejected:
    """Accept an empty payload or a JSON object with at most a `request_id`; reject anything else with a reason.

    Footage approvals are never commands: they need a signed request or the owner on the device.
    """
    if name not in COMMANDS:
        return Rejected(f"unknown command {name[:40]!r} (known: {', '.join(COMMANDS)})")
    if len(payload) > MAX_COMMAND_BYTES:
        return Rejected(f"payload of {len(payload)} bytes is over the {MAX_COMMAND_BYTES}-byte limit")
    if not payload.strip():
        return Command(name)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("payload is not UTF-8")
    try:
        data = strictjson.loads(text)
    except (ValueError, RecursionError) as exc:
        return Rejected(f"payload is not valid JSON: {str(exc)[:80]}")
    if not isinstance(data, dict):
        return Rejected(f"payload must be empty or a JSON object, not {type(data).__name__}")
    unknown = sorted(set(data) - ALLOWED_KEYS)
    if unknown:
        return Rejected(f"unknown key(s) {', '.join(repr(k[:40]) for k in unknown[:5])} (allowed: request_id)")
    request_id = data.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not REQUEST_ID.fullmatch(request_id)):
        return Rejected("request_id must be 1-64 letters, digits, '_' or '-'")
    return Command(name, request_id)


