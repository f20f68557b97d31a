"""The events feed: journal rows to <prefix>/events in seq order within a window, PUBACKs back to the journal,
Home Assistant's doorbell feed for fresh rings and faces, and occupancy from person and face events."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import partial

from edge.clock import Clock
from edge.errors import StorageError
from edge.mqtt.client import Link
from edge.mqtt.discovery import doorbell_payload, encode
from edge.mqtt.outbox import Outbox
from edge.mqtt.topics import Topics

# The publisher's log: operators filter on its name (docs/events.md), whichever of its parts speaks.
log = logging.getLogger("edge.mqtt.publisher")

# A ring that reaches Home Assistant two minutes late is not a doorbell press any more: the full event still goes
# to .../events, but the event entity (which notifies phones) only hears about fresh ones.
DOORBELL_FRESH_S = 120.0
# Events that change what the retained state says: publish the state right after them.
STATEFUL_TYPES = frozenset({"motion_start", "motion_end", "person", "face", "footage_request"})
# Occupancy (Home Assistant binary sensor) stays ON this long after the last person or face event.
OCCUPANCY_HOLD_S = 30.0

Acked = Callable[[int, bool, str], None]  # (seq, delivered, reason), called on the link's thread


class EventFeed:
    """Runs on the publisher's thread. After every (re)connection restart() makes it send everything not yet
    acknowledged again, from the lowest seq: a subscriber may see an event twice (same id and seq), never a gap or
    a reordering."""

    def __init__(self, outbox: Outbox, link: Link, topics: Topics, clock: Clock, counters: dict[str, int], *,
                 window: int, on_ack: Acked, audit_head: Callable[[str], None]) -> None:
        self._outbox = outbox
        self._link = link
        self._topics = topics
        self._clock = clock
        self._counters = counters
        self._window = window
        self._on_ack = on_ack
        self._audit_head = audit_head  # given the payload of every event that carries the audit log's head
        self._inflight: set[int] = set()
        self._sent_upto = 0
        self.occupied_until = 0.0  # monotonic; a person or face was seen this recently (0: nobody)

    def restart(self) -> None:
        """Whatever was in flight on the old connection may be lost: it all goes again, in order."""
        self._inflight.clear()
        self._sent_upto = 0

    def settle(self, acks: list[tuple[int, bool, str]]) -> None:
        done = []
        for seq, delivered, reason in acks:
            self._inflight.discard(seq)
            if delivered:
                done.append(seq)
            else:
                # Kept: it goes again after the next reconnection. A broker ACL denying our own topic is a
                # configuration problem the owner must see.
                self._counters["nacked"] += 1
                log.error("MQTT: broker refused event seq=%s: %s (kept in the outbox)", seq, reason)
        if done:
            self._counters["acked"] += len(done)
            self._outbox.remove(done)

    def send(self) -> bool:
        """Fill the window from the journal; True if an event that changes the retained state went out."""
        stateful = False
        while len(self._inflight) < self._window:
            rows = self._outbox.pending(self._sent_upto, self._window - len(self._inflight))
            if not rows:
                break
            for row in rows:
                if not self._link.publish(self._topics.events, row.payload, qos=1, retain=False,
                                          on_ack=partial(self._on_ack, row.seq)):
                    return stateful
                self._inflight.add(row.seq)
                self._sent_upto = row.seq
                self._counters["sent"] += 1
                stateful = stateful or row.type in STATEFUL_TYPES
                if row.type in ("system", "footage_request"):
                    self._audit_head(row.payload)
                if row.type in ("person", "face"):
                    self._occupied(row.ts)
                if (row.type in ("ring", "face") and not row.fed
                        and self._clock.now().timestamp() - row.ts < DOORBELL_FRESH_S):
                    self._feed_doorbell(row.id, row.payload)
        return stateful

    def occupancy_over(self, now: float) -> bool:
        """True once, when the occupancy hold ends (the state then says OFF explicitly)."""
        if self.occupied_until and now >= self.occupied_until:
            self.occupied_until = 0.0
            return True
        return False

    def _occupied(self, ts: float) -> None:
        age = max(0.0, self._clock.now().timestamp() - ts)
        if age < OCCUPANCY_HOLD_S:
            self.occupied_until = max(self.occupied_until, self._clock.monotonic() + OCCUPANCY_HOLD_S - age)

    def _feed_doorbell(self, event_id: str, payload: str) -> None:
        feed = doorbell_payload(json.loads(payload))
        if feed is None:
            return
        # A re-sent ring must not ring Home Assistant's phones twice: the outbox remembers it (re-sends,
        # reconnects and restarts all read it back through pending()).
        self._link.publish(self._topics.doorbell, encode(feed), qos=1, retain=False)
        try:
            self._outbox.mark_fed(event_id)
        except StorageError as exc:
            log.warning("MQTT: %s (a re-send may feed it again)", exc)
