"""The audit log's head on <prefix>/audit/head: read back the retained (witnessed) head after every connection and
publish a newer one only when it descends from it; a fork is refused and told to the owner once."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from edge.clock import Clock
from edge.errors import StorageError
from edge.events.bus import Event
from edge.mqtt.client import Link
from edge.mqtt.discovery import encode
from edge.mqtt.topics import Topics

# The publisher's log: operators filter on its name (docs/events.md), whichever of its parts speaks.
log = logging.getLogger("edge.mqtt.publisher")

# After a (re)connection, audit heads wait this long at most for the retained head to be read back (the marker on
# audit/sync normally ends the wait within one round trip; a broker ACL refusing it must not hold them for ever).
HEAD_SYNC_S = 5.0

# audit_lookup(seq): the hash of the local audit log's record `seq`, None when the log has no such record; raises
# (anything) when the log cannot be read. It tells a witnessed head our log contains from one it forked from.
AuditLookup = Callable[[int], str | None]


class AuditHeads:
    """The retained audit head is read back: a head older than the one the broker holds is never published over it
    (a state dir restored from an older copy must not erase the witness of what came after). Heads wait after every
    (re)connection until the retained one has been read back (issue 12: a rolled-back daemon flushed its outbox
    first and put its forked head over the witnessed one).

    read_back() and synced() run on the link's thread, the rest on the publisher's.
    """

    def __init__(self, link: Link, topics: Topics, clock: Clock, counters: dict[str, int],
                 record: Callable[[Event], object], wake: Callable[[], None], *, retain: bool,
                 lookup: AuditLookup | None, sync_s: float) -> None:
        self._link = link
        self._topics = topics
        self._clock = clock
        self._counters = counters
        self._record = record  # queues the `system` event that tells the owner of a conflict
        self._wake = wake
        self._retain = retain
        self._lookup = lookup
        self._sync_s = sync_s
        self._lock = threading.Lock()
        self._head: tuple[int, str] | None = None  # the newest head published or read back (under _lock)
        self._synced = False  # the retained head was read back on this connection (under _lock)
        self._token: str | None = None  # the marker we sent on audit/sync (under _lock)
        self._deadline = 0.0
        self._held: dict[int, tuple[str, Any]] = {}  # seq -> (hash, ts): heads waiting for the read-back
        self._told: set[tuple[int, str]] = set()  # witnessed heads whose conflict was already reported

    # --- the link's thread --------------------------------------------------------------------------

    def connected(self) -> None:
        """A new connection: nothing is read back on it yet."""
        with self._lock:
            self._synced = False
            self._token = None

    def sync_marker(self, payload: bytes) -> None:
        """Our marker came back on audit/sync: whatever the broker retains on audit/head came before it."""
        with self._lock:
            if self._token is None or payload.decode(errors="replace") != self._token:
                return
            self._synced = True
        self._wake()

    def read_back(self, payload: bytes) -> None:
        try:
            body = json.loads(payload)
            head = (int(body["seq"]), str(body["hash"]))
        except (ValueError, KeyError, TypeError):
            return  # empty (cleared by the owner) or not ours
        with self._lock:
            if self._head is None or head[0] > self._head[0]:
                self._head = head

    # --- the publisher's thread ---------------------------------------------------------------------

    def begin_sync(self, now: float) -> None:
        """Sent after the SUBSCRIBE on the same connection: the broker queues the retained audit head (if any)
        before routing the marker back to us, so its return means the read-back is complete."""
        token = uuid.uuid4().hex
        with self._lock:
            self._token = token
        self._deadline = now + self._sync_s
        self._link.publish(self._topics.audit_sync, token, qos=1, retain=False)

    def release(self, now: float) -> None:
        """Once the retained head is read back (or sync_s passed without it), offer the held heads in order."""
        with self._lock:
            synced = self._synced
        if not synced:
            if now < self._deadline:
                return
            log.warning("MQTT: the retained audit head on %s was not read back within %.0f s (does the broker's "
                        "ACL let this client subscribe and publish to %s?); publishing audit heads without it",
                        self._topics.audit_head, self._sync_s, self._topics.audit_sync)
            with self._lock:
                self._synced = True
        held, self._held = self._held, {}
        for seq in sorted(held):
            self._offer(seq, *held[seq])

    def send(self, payload: str | bytes) -> None:
        """An event carrying the audit log's head (the `audit_appended` system event after every append, and every
        footage_request event): publish it retained on <prefix>/audit/head unless it would replace the witnessed
        head (the newest the broker holds or we published) with one that is older or not its descendant. Until the
        retained head has been read back after a (re)connection, heads are held, not published."""
        try:
            body = json.loads(payload)
            seq, digest = int(body["audit_seq"]), str(body["audit_hash"])
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            synced = self._synced
        if not synced:
            self._held[seq] = (digest, body.get("ts"))
            return
        self._offer(seq, digest, body.get("ts"))

    def _offer(self, seq: int, digest: str, ts: Any) -> None:
        with self._lock:
            known = self._head
        if known == (seq, digest):
            return
        if known is not None:
            problem = self._problem(known, seq, digest)
            if problem == "stale":
                # Two processes appending at once may queue their heads out of order: the newer one is out already.
                self._counters["audit_heads_refused"] += 1
                log.debug("MQTT: audit head %s not published: the broker already holds the newer %s", seq, known[0])
                return
            if problem is not None:
                self._refuse(known, seq, digest, problem)
                return
        with self._lock:
            if self._head is not None and self._head[0] > seq:
                return  # a newer head was read back meanwhile: offered again with the next append
            self._head = (seq, digest)
        self._link.publish(self._topics.audit_head, encode({"seq": seq, "hash": digest, "ts": ts}), qos=1,
                           retain=self._retain)
        self._counters["audit_heads"] += 1

    def _problem(self, known: tuple[int, str], seq: int, digest: str) -> str | None:
        """Why (seq, digest) must not replace the witnessed head `known`: None (it may), "stale" (our log holds the
        witnessed head: this one is just late), or a sentence for the owner (the log forked or went backwards)."""
        if seq == known[0] and digest != known[1]:
            return (f"audit record {seq} has hash {digest[:16]}, but the broker witnessed {known[1][:16]} for it: the "
                    "log was rewritten or restored from an older copy")
        if self._lookup is not None:
            try:
                ours = self._lookup(known[0])
            except Exception as exc:  # the log unreadable: judge by the numbers alone, as without a lookup
                log.debug("MQTT: cannot read the audit log to compare heads: %s", exc)
            else:
                if ours is None:
                    return (f"the audit log ends before record {known[0]}, which the broker witnessed: the log was "
                            "cut off or restored from an older copy")
                if ours != known[1]:
                    return (f"audit record {known[0]} has hash {ours[:16]} here, but the broker witnessed "
                            f"{known[1][:16]} for it: the log forked (rewritten or restored from an older copy)")
                return "stale" if seq < known[0] else None
        if seq < known[0]:
            # Without the log we cannot tell a late head of a concurrent append from a log that went backwards.
            log.warning("MQTT: audit head %s is older than the witnessed head %s on the broker; not published over "
                        "it (if this repeats: `doorbell-edge audit verify --against %s:%s`)", seq, known[0], known[0],
                        known[1])
            return "stale"
        return None

    def _refuse(self, known: tuple[int, str], seq: int, digest: str, problem: str) -> None:
        """Keep the witnessed head retained; tell the owner once per witnessed head: ERROR and a `system` event."""
        self._counters["audit_heads_refused"] += 1
        if known in self._told:
            log.debug("MQTT: audit head %s not published over the witnessed %s (conflict already reported)", seq,
                      known[0])
            return
        self._told.add(known)
        self._counters["audit_head_conflicts"] += 1
        log.error("MQTT: audit head %s:%s NOT published over the witnessed head %s:%s: %s; run `doorbell-edge audit "
                  "verify --against %s:%s`", seq, digest[:16], known[0], known[1][:16], problem, known[0], known[1])
        try:
            self._record(Event("system", None, self._clock.now(), {
                "status": "audit_head_conflict", "witnessed_seq": known[0],
                "witnessed_hash": known[1], "local_seq": seq, "local_hash": digest, "detail": problem}))
        except (StorageError, ValueError) as exc:
            log.error("MQTT: the audit head conflict could not be queued as an event: %s", exc)
