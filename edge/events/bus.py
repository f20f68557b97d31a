"""Domain events and the in-process bus that stamps them with a per-device sequence and fans them out."""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from edge.clock import rfc3339

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

EVENT_TYPES = (
    "motion_start",
    "motion_end",
    "person",
    "face",
    "ring",
    "footage_request",
    "system",
)


@dataclass(frozen=True)
class Event:
    """Something that happened: `ts` is when it happened (aware UTC), not when it was sent.

    `seq` is assigned by the bus when the event is published; `fields` holds the type-specific data
    (never an embedding, a face crop or clip content).
    """

    type: str
    camera: str | None
    ts: datetime
    fields: Mapping[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    seq: int | None = None

    def __post_init__(self) -> None:
        if self.type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {self.type!r}")
        if self.ts.tzinfo is None:
            raise ValueError("event ts must be timezone-aware")

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "id": self.id,
            "seq": self.seq,
            "type": self.type,
            "camera": self.camera,
            "ts": rfc3339(self.ts),
        }
        for key, value in self.fields.items():
            if key in body:
                raise ValueError(f"event field {key!r} shadows an envelope field")
            body[key] = value
        return body


class Journal(Protocol):
    """Assigns the next strictly increasing per-device `seq` and, if durable, stores the event in the same step.

    The MQTT outbox is the durable journal (SQLite; safe across processes, so CLI commands can emit
    events the daemon later publishes); MemoryJournal is used when MQTT is off and in tests.
    """

    def record(self, event: Event) -> Event: ...


class MemoryJournal:
    """Numbers events in memory only; forgets on restart."""

    def __init__(self, start: int = 1) -> None:
        self._counter = itertools.count(start)
        self._lock = threading.Lock()

    def record(self, event: Event) -> Event:
        with self._lock:
            return replace(event, seq=next(self._counter))


Sink = Callable[[Event], None]


class EventBus:
    """Records each event in the journal (which stamps `seq`), then hands it to every sink in order.

    A failing sink is logged and does not stop the others: one broken consumer must never
    swallow a ring.
    """

    def __init__(self, journal: Journal | None = None) -> None:
        self._journal: Journal = journal or MemoryJournal()
        self._sinks: list[Sink] = []
        self._lock = threading.Lock()

    def set_journal(self, journal: Journal) -> None:
        with self._lock:
            self._journal = journal

    def subscribe(self, sink: Sink) -> None:
        with self._lock:
            self._sinks.append(sink)

    def publish(self, event: Event) -> Event:
        # One lock around stamping and fan-out keeps every sink seeing events in seq order.
        with self._lock:
            stamped = self._journal.record(event)
            for sink in self._sinks:
                try:
                    sink(stamped)
                except Exception:
                    log.exception("event sink %r failed on event %s", sink, stamped.id)
        return stamped
