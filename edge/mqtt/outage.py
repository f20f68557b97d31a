"""A broker outage told calmly: since when, and every few minutes how long, what waits and what was lost."""

from __future__ import annotations

import logging

from edge.mqtt.client import Link
from edge.mqtt.outbox import Outbox

# The publisher's log: operators filter on its name (docs/events.md), whichever of its parts speaks.
log = logging.getLogger("edge.mqtt.publisher")

# While the broker stays away, one summary this often (the link logs the outage once, then each retry at DEBUG).
DOWN_SUMMARY_S = 300.0


class OutageWatch:
    """Called on the publisher's thread: down() on every step without a connection, up() on the first with one."""

    def __init__(self, outbox: Outbox, link: Link, summary_s: float = DOWN_SUMMARY_S) -> None:
        self._outbox = outbox
        self._link = link
        self._summary_s = summary_s
        self._since: float | None = None  # monotonic; no broker connection since then
        self._dropped = 0  # the outbox's dropped count when the outage began
        self._next_summary = 0.0
        self._summaries = 0

    def down(self, now: float) -> None:
        if self._since is None:
            self._since = now
            self._next_summary = now + self._summary_s
            self._dropped = self._outbox.stats().dropped
            return
        if now < self._next_summary:
            return
        self._next_summary = now + self._summary_s
        self._summaries += 1
        stats = self._outbox.stats()
        dropped = stats.dropped - self._dropped
        lost = ("nothing lost" if dropped <= 0 else
                f"{dropped} dropped by the outbox limits (mqtt.outbox_max_events, mqtt.outbox_max_age_h)")
        s = self._link.settings
        log.warning("MQTT: broker %s:%s unreachable for %s; %d event%s waiting in the outbox; %s (last error: %s)",
                    s.host, s.port, duration(now - self._since), stats.waiting,
                    "" if stats.waiting == 1 else "s", lost, self._link.last_error or "none")

    def up(self, now: float) -> None:
        if self._since is None:
            return
        if self._summaries:
            log.info("MQTT: broker back after %s; sending %d waiting events", duration(now - self._since),
                     self._outbox.stats().waiting)
        self._since = None
        self._summaries = 0


def duration(seconds: float) -> str:
    """For people: '45 s', '5 min', '2 h 5 min'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
