"""The MQTT publisher's queue: what waits for the broker, as one consumer of the event journal (edge/events/journal.py).

An event leaves the outbox when the broker acknowledges it (or the queue limits drop it); it stays in the
journal's history either way (`doorbell-edge events list`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from edge.clock import Clock
from edge.config import Config
from edge.events.bus import Event
from edge.events.journal import (
    KEEP,
    MQTT,
    RESERVED_KINDS,
    EventJournal,
    HistoryBounds,
    Pending,
    drop_class,
)
from edge.events.journal import QueueBounds as OutboxBounds
from edge.events.journal import QueueStats as OutboxStats
from edge.events.journal_files import emit, journal_path, memory_journal, open_journal, queue_bounds

log = logging.getLogger(__name__)

__all__ = ["KEEP", "RESERVED_KINDS", "Outbox", "OutboxBounds", "OutboxStats", "Pending", "bounds_for", "drop_class",
           "emit", "memory_outbox", "open_outbox", "outbox_path"]

bounds_for = queue_bounds


def outbox_path(config: Config) -> Path:
    """The file the outbox lives in: the event journal's."""
    return journal_path(config)


class Outbox:
    """The journal seen by the MQTT publisher: record (for everyone), pending/remove/prune/stats (the `mqtt`
    consumer's queue). `Outbox(path)` opens (or converts an old outbox file in place to) a journal at `path`."""

    def __init__(self, path: Path | None = None, bounds: OutboxBounds | None = None, clock: Clock | None = None, *,
                 in_memory: bool = False, journal: EventJournal | None = None,
                 history: HistoryBounds | None = None) -> None:
        if journal is None:
            if path is None:
                raise ValueError("Outbox needs a path or a journal")
            journal = EventJournal(path, queues={MQTT: bounds or OutboxBounds()}, history=history, clock=clock,
                                   in_memory=in_memory)
        self.journal = journal
        self.path = journal.path
        self.bounds = journal.queues[MQTT]
        self.reserve = journal.reserve
        self.in_memory = journal.in_memory

    def record(self, event: Event) -> Event:
        """Number and store the event in the journal (waiting for every consumer); wakes the publisher."""
        return self.journal.record(event)

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[Pending]:
        """Events waiting for the broker with seq > after_seq, in seq order."""
        return self.journal.pending(MQTT, after_seq, limit)

    def mark_fed(self, event_id: str) -> None:
        """Remember that a waiting event went to the doorbell feed (until the broker acknowledges it)."""
        self.journal.mark_fed(MQTT, event_id)

    def remove(self, seqs: Iterable[int]) -> int:
        """The broker acknowledged these: they leave the queue (not the history)."""
        return self.journal.delivered(MQTT, seqs)

    def prune(self) -> int:
        return self.journal.prune(MQTT)

    def stats(self) -> OutboxStats:
        return self.journal.stats(MQTT)

    def drops(self) -> dict[tuple[str, str], int]:
        return self.journal.drops(MQTT)

    def add_listener(self, listener: Callable[[], None]) -> None:
        self.journal.add_listener(listener)

    def close(self) -> None:
        self.journal.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_outbox(config: Config, clock: Clock | None = None) -> Outbox:
    return Outbox(journal=open_journal(config, clock))


def memory_outbox(config: Config, clock: Clock | None = None) -> Outbox:
    """See edge.events.journal_files.memory_journal (a read-only state dir)."""
    return Outbox(journal=memory_journal(config, clock))
