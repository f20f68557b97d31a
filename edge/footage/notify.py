"""The one place footage code publishes its `footage_request` events (never clip content) via the event journal."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge.config import Config
from edge.errors import EdgeError
from edge.events.bus import Event

log = logging.getLogger(__name__)

Emit = Callable[[Event], Any]

# Fields a footage event may carry: ids, states and codes. Never officer names, clip bytes or face data.
ALLOWED_FIELDS = frozenset(
    {"request", "state", "decision", "basis", "agency", "codes", "urgent", "clips", "export", "hold", "audit_seq",
     "audit_hash"}
)


def journal_emitter(config: Config) -> Emit:
    """emit(event) into the device's event journal, whether or not MQTT is on (the publisher is one consumer)."""
    from edge.events.journal_files import emit

    def send(event: Event) -> Any:
        try:
            return emit(config, event)
        except (EdgeError, ValueError) as exc:
            # The audit log already holds the step; a full or broken journal must not undo it.
            log.warning("footage event %s not recorded in the event journal: %s", event.id, exc)
            return None

    return send


def footage_event(ts: Any, **fields: Any) -> Event:
    unknown = set(fields) - ALLOWED_FIELDS
    if unknown:
        raise ValueError(f"footage events may not carry {sorted(unknown)}")
    return Event("footage_request", None, ts, {k: v for k, v in fields.items() if v is not None})


def head_event(record: dict[str, Any]) -> Event:
    """The audit log's new head, after every append: a `system` event the MQTT publisher also keeps retained on
    <prefix>/audit/head, so a subscriber (Home Assistant's recorder) witnesses every head the log ever had."""
    from edge.clock import parse_rfc3339

    return Event("system", None, parse_rfc3339(str(record["ts"])),
                 {"status": "audit_appended", "audit_seq": int(record["seq"]), "audit_hash": str(record["hash"])})
