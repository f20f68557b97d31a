"""Strict parsing of the harmless MQTT commands (republish discovery or state, request a snapshot); never footage."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from edge import strictjson
from edge.config import MqttConfig
from edge.mqtt.topics import COMMANDS
from edge.ratelimit import RateLimiter

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
    rate_limited: bool = False  # well-formed, but too soon after the last one of its name


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


class CommandLimits:
    """At most one accepted command of each name per its interval (snapshot: the slowest), after parsing.

    A broker user looping on .../cmd/snapshot would otherwise make the device encode and send a JPEG per
    message; the refused ones are counted by the limiters and logged once per flood.
    """

    def __init__(self, monotonic: Callable[[], float], snapshot_interval_s: float = 5.0,
                 command_interval_s: float = 1.0) -> None:
        self.limiters = {
            name: RateLimiter(
                "MQTT command {key}",
                snapshot_interval_s if name == "snapshot" else command_interval_s,
                (name,),
                monotonic,
                "mqtt.snapshot_interval_s" if name == "snapshot" else "mqtt.command_interval_s",
            )
            for name in COMMANDS
        }

    @classmethod
    def from_config(cls, mqtt: MqttConfig, monotonic: Callable[[], float]) -> CommandLimits:
        return cls(monotonic, mqtt.snapshot_interval_s, mqtt.command_interval_s)

    def admit(self, command: Command) -> Rejected | None:
        """None when the command may run now, else a rate-limited Rejected saying when to retry."""
        refusal = self.limiters[command.name].check(command.name)
        return None if refusal is None else Rejected(refusal.reason, rate_limited=True)

    @property
    def refused(self) -> int:
        return sum(limiter.refused_total for limiter in self.limiters.values())
