"""Drains the outbox to the broker in seq order, deleting an event only on its PUBACK; plus state and commands."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from edge.clock import Clock
from edge.errors import StorageError
from edge.events.bus import Event
from edge.mqtt.client import Link, LinkSettings
from edge.mqtt.commands import Command, CommandLimits, Rejected, parse_command
from edge.mqtt.discovery import DeviceInfo, discovery_payloads, doorbell_payload, encode, state_payload
from edge.mqtt.outbox import Outbox
from edge.mqtt.topics import OFFLINE, ONLINE, Topics

log = logging.getLogger(__name__)

# A ring that reaches Home Assistant two minutes late is not a doorbell press any more: the full event still goes
# to .../events, but the event entity (which notifies phones) only hears about fresh ones.
DOORBELL_FRESH_S = 120.0
# Events that change what the retained state says: publish the state right after them.
STATEFUL_TYPES = frozenset({"motion_start", "motion_end", "person", "face", "footage_request"})
PRUNE_EVERY_S = 60.0
# Occupancy (Home Assistant binary sensor) stays ON this long after the last person or face event.
OCCUPANCY_HOLD_S = 30.0
# While the broker stays away, one summary this often (the link logs the outage once, then each retry at DEBUG).
DOWN_SUMMARY_S = 300.0
# After a (re)connection, audit heads wait this long at most for the retained head to be read back (the marker on
# audit/sync normally ends the wait within one round trip; a broker ACL refusing it must not hold them for ever).
HEAD_SYNC_S = 5.0

StateProvider = Callable[[], Mapping[str, Any]]
SnapshotProvider = Callable[[], bytes | None]
# audit_lookup(seq): the hash of the local audit log's record `seq`, None when the log has no such record; raises
# (anything) when the log cannot be read. It tells a witnessed head our log contains from one it forked from.
AuditLookup = Callable[[int], str | None]


class Publisher:
    """One thread; wakes on a new event, an ack, a (re)connection, a command, or every `poll_s` to pick up events
    other processes appended to the outbox.

    After every (re)connection it re-sends everything not yet acknowledged, from the lowest seq: a subscriber may
    see an event twice (same id and seq), never a gap or a reordering.
    """

    def __init__(
        self,
        outbox: Outbox,
        settings: LinkSettings,
        topics: Topics,
        device: DeviceInfo,
        clock: Clock,
        *,
        state_provider: StateProvider = dict,
        snapshot_provider: SnapshotProvider | None = None,
        discovery: bool = True,
        retain: bool = True,
        snapshot: bool = False,
        state_interval_s: float = 60.0,
        limits: CommandLimits | None = None,
        window: int = 50,
        poll_s: float = 0.25,
        down_summary_s: float = DOWN_SUMMARY_S,
        audit_lookup: AuditLookup | None = None,
        head_sync_s: float = HEAD_SYNC_S,
    ) -> None:
        self.outbox = outbox
        self.topics = topics
        self.device = device
        self._clock = clock
        self._state_provider = state_provider
        self._snapshot_provider = snapshot_provider
        self._discovery = discovery
        self._retain = retain  # False: availability, state and discovery go out non-retained (the built-in demo)
        self._snapshot = snapshot
        self._state_interval_s = state_interval_s
        # Rate limits of accepted commands: a flood of snapshot commands is one JPEG per interval.
        self.limits = limits or CommandLimits(clock.monotonic)
        self._window = window
        self._poll_s = poll_s
        # The retained audit head is read back: a head older than the one the broker holds is never published over
        # it (a state dir restored from an older copy must not erase the witness of what came after).
        # Heads wait after every (re)connection until the retained one has been read back (issue 12: a rolled-back
        # daemon flushed its outbox first and put its forked head over the witnessed one).
        subscriptions = (topics.command_filter, *((topics.ha_status,) if discovery else ()), topics.audit_head,
                         topics.audit_sync)
        self.link = Link(
            replace(settings, will_topic=topics.availability, will_payload=OFFLINE, will_retain=retain,
                    subscriptions=subscriptions),
            on_connected=self._connected_cb,
            on_disconnected=self._disconnected_cb,
            on_message=self._message_cb,
        )
        self._cond = threading.Condition()
        self._wake = False
        self._stopping = False
        self._connected = False
        self._session_new = False
        self._acks: list[tuple[int, bool, str]] = []
        self._requests: set[str] = set()
        self._thread: threading.Thread | None = None
        # publisher-thread state
        self._inflight: set[int] = set()
        self._sent_upto = 0
        self._next_state = 0.0
        self._next_prune = 0.0
        self._occupied_until = 0.0  # monotonic; a person or face was seen this recently
        self._audit_head: tuple[int, str] | None = None  # the newest audit head published or read back (under _cond)
        self._audit_lookup = audit_lookup
        self._head_sync_s = head_sync_s
        self._head_synced = False  # the retained head was read back on this connection (under _cond)
        self._sync_token: str | None = None  # the marker we sent on audit/sync (under _cond)
        self._sync_deadline = 0.0
        self._held_heads: dict[int, tuple[str, Any]] = {}  # seq -> (hash, ts): heads waiting for the read-back
        self._conflicts_told: set[tuple[int, str]] = set()  # witnessed heads whose conflict was already reported
        self._down_summary_s = down_summary_s
        self._down_since: float | None = None  # monotonic; no broker connection since then
        self._down_dropped = 0  # the outbox's dropped count when the outage began
        self._next_summary = 0.0
        self._summaries = 0
        self.counters = {"sent": 0, "acked": 0, "nacked": 0, "commands": 0, "rejected_commands": 0,
                         "discovery": 0, "state": 0, "snapshots": 0,
                         "rate_limited_commands": 0, "audit_heads": 0, "audit_heads_refused": 0,
                         "audit_head_conflicts": 0}
        outbox.add_listener(self._poke)

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        self.link.start()

    def stop(self, timeout: float = 5.0, drain_s: float = 1.0) -> None:
        """Give the backlog up to `drain_s` to go out, then stop sending, say `offline` (retained) if connected and
        close the connection. Whatever is still unacknowledged stays in the outbox for the next start."""
        deadline = self._clock.monotonic() + drain_s
        while self.link.connected and self._clock.monotonic() < deadline:
            try:
                if self.outbox.stats().waiting == 0:
                    break
            except StorageError:
                break
            self._pause(0.02)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.link.connected:
            # The retained state outlives us: leave it saying nothing is going on, then say offline.
            self._send_state(final=True)
        said = threading.Event()
        if self.link.publish(self.topics.availability, OFFLINE, qos=1, retain=self._retain,
                             on_ack=lambda ok, reason: said.set()):
            said.wait(min(2.0, timeout))
        self.link.stop(timeout)

    # --- called by the app --------------------------------------------------------------------------

    def publish_snapshot(self, jpeg: bytes) -> bool:
        """Send a JPEG on .../snapshot if snapshots are on and the broker is there; never queued or retained."""
        if not self._snapshot:
            log.debug("snapshot not sent: mqtt.snapshot is off")
            return False
        if not jpeg.startswith(b"\xff\xd8"):
            log.error("snapshot not sent: not a JPEG")
            return False
        sent = self.link.publish(self.topics.snapshot, jpeg, qos=0, retain=False)
        if sent:
            self.counters["snapshots"] += 1
        return sent

    # --- callbacks from the link thread and the outbox ------------------------------------------------

    def _poke(self) -> None:
        with self._cond:
            self._wake = True
            self._cond.notify_all()

    def _connected_cb(self) -> None:
        with self._cond:
            self._connected = True
            self._session_new = True
            self._head_synced = False
            self._sync_token = None
            self._wake = True
            self._cond.notify_all()

    def _disconnected_cb(self) -> None:
        with self._cond:
            self._connected = False
            self._wake = True
            self._cond.notify_all()

    def _ack(self, seq: int, delivered: bool, reason: str) -> None:
        with self._cond:
            self._acks.append((seq, delivered, reason))
            self._wake = True
            self._cond.notify_all()

    def _message_cb(self, topic: str, payload: bytes) -> None:
        if topic == self.topics.audit_head:
            self._read_back_head(payload)
            return
        if topic == self.topics.audit_sync:
            with self._cond:
                if self._sync_token is not None and payload.decode(errors="replace") == self._sync_token:
                    self._head_synced = True  # whatever the broker retains on audit/head came before this
                    self._wake = True
                    self._cond.notify_all()
            return
        if topic == self.topics.ha_status:
            if payload.strip() == ONLINE.encode():
                log.info("Home Assistant is online: re-sending discovery and state")
                self._request("discovery")
                self._request("state")
            return
        if topic.startswith(self.topics.command_prefix):
            result = parse_command(topic[len(self.topics.command_prefix):], payload)
        else:
            result = Rejected("not a command topic")
        if isinstance(result, Rejected):
            self.counters["rejected_commands"] += 1
            log.warning("MQTT: rejected command on %r: %s", topic[:120], result.reason)
            return
        self._accept(result)

    def _accept(self, command: Command) -> None:
        if command.name == "snapshot" and (not self._snapshot or self._snapshot_provider is None):
            self.counters["rejected_commands"] += 1
            log.warning("MQTT: rejected command snapshot: snapshots are off (mqtt.snapshot)")
            return
        if self.limits.admit(command) is not None:
            self.counters["rate_limited_commands"] += 1  # the limiter logs the first refusal of a flood
            return
        self.counters["commands"] += 1
        log.info("MQTT: command %s accepted (request_id=%s)", command.name, command.request_id)
        self._request(command.name)

    def _request(self, name: str) -> None:
        with self._cond:
            self._requests.add(name)
            self._wake = True
            self._cond.notify_all()

    # --- the publisher thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._wake and not self._stopping:
                    self._cond.wait(self._poll_s)
                self._wake = False
                if self._stopping:
                    return
                connected, session_new = self._connected, self._session_new
                self._session_new = False
                acks, self._acks = self._acks, []
                requests, self._requests = self._requests, set()
            try:
                self._step(connected, session_new, acks, requests)
            except StorageError as exc:
                log.error("MQTT publisher: %s", exc)
                self._pause(1.0)
            except Exception:
                log.exception("MQTT publisher step failed")
                self._pause(1.0)

    def _pause(self, seconds: float) -> None:
        with self._cond:
            if not self._stopping:
                self._cond.wait(seconds)

    def _step(self, connected: bool, session_new: bool, acks: list[tuple[int, bool, str]],
              requests: set[str]) -> None:
        now = self._clock.monotonic()
        self._settle(acks)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            self.outbox.prune()
        if not connected:
            self._inflight.clear()
            self._sent_upto = 0
            self._watch_outage(now)
            return
        if self._down_since is not None:
            self._outage_over(now)
        state_due = "state" in requests or now >= self._next_state
        if session_new:
            # Whatever was in flight on the old connection may be lost: send it all again, in order.
            self._inflight.clear()
            self._sent_upto = 0
            # Discovery and a fresh state go out before `online`: the retained state is the last run's (after a
            # crash it may say motion ON), and Home Assistant shows it as current the moment we say online.
            if self._discovery:
                self._send_discovery()
            requests.discard("discovery")
            self._send_state()
            self._next_state = now + self._state_interval_s
            self.link.publish(self.topics.availability, ONLINE, qos=1, retain=self._retain)
            state_due = "state" in requests
            token = uuid.uuid4().hex
            with self._cond:
                self._sync_token = token
            self._sync_deadline = now + self._head_sync_s
            # Sent after the SUBSCRIBE on the same connection: the broker queues the retained audit head (if any)
            # before routing this back to us, so its return means the read-back is complete.
            self.link.publish(self.topics.audit_sync, token, qos=1, retain=False)
        self._release_heads(now)
        if "discovery" in requests and self._discovery:
            self._send_discovery()
        if "snapshot" in requests and self._snapshot_provider is not None:
            self._send_snapshot()
        state_due = self._send_events() or state_due
        if self._occupied_until and now >= self._occupied_until:
            self._occupied_until = 0.0
            state_due = True  # occupancy goes explicitly OFF
        if state_due:
            self._send_state()
            self._next_state = now + self._state_interval_s

    def _watch_outage(self, now: float) -> None:
        """No broker: remember since when, and every down_summary_s say how long, what waits and what was lost."""
        if self._down_since is None:
            self._down_since = now
            self._next_summary = now + self._down_summary_s
            self._down_dropped = self.outbox.stats().dropped
            return
        if now < self._next_summary:
            return
        self._next_summary = now + self._down_summary_s
        self._summaries += 1
        stats = self.outbox.stats()
        dropped = stats.dropped - self._down_dropped
        lost = ("nothing lost" if dropped <= 0 else
                f"{dropped} dropped by the outbox limits (mqtt.outbox_max_events, mqtt.outbox_max_age_h)")
        s = self.link.settings
        log.warning("MQTT: broker %s:%s unreachable for %s; %d event%s waiting in the outbox; %s (last error: %s)",
                    s.host, s.port, duration(now - self._down_since), stats.waiting,
                    "" if stats.waiting == 1 else "s", lost, self.link.last_error or "none")

    def _outage_over(self, now: float) -> None:
        assert self._down_since is not None
        if self._summaries:
            log.info("MQTT: broker back after %s; sending %d waiting events", duration(now - self._down_since),
                     self.outbox.stats().waiting)
        self._down_since = None
        self._summaries = 0

    def _settle(self, acks: list[tuple[int, bool, str]]) -> None:
        done = []
        for seq, delivered, reason in acks:
            self._inflight.discard(seq)
            if delivered:
                done.append(seq)
            else:
                # Kept: it goes again after the next reconnection. A broker ACL denying our own topic is a
                # configuration problem the owner must see.
                self.counters["nacked"] += 1
                log.error("MQTT: broker refused event seq=%s: %s (kept in the outbox)", seq, reason)
        if done:
            self.counters["acked"] += len(done)
            self.outbox.remove(done)

    def _send_events(self) -> bool:
        stateful = False
        while len(self._inflight) < self._window:
            rows = self.outbox.pending(self._sent_upto, self._window - len(self._inflight))
            if not rows:
                break
            for row in rows:
                if not self.link.publish(self.topics.events, row.payload, qos=1, retain=False,
                                         on_ack=partial(self._ack, row.seq)):
                    return stateful
                self._inflight.add(row.seq)
                self._sent_upto = row.seq
                self.counters["sent"] += 1
                stateful = stateful or row.type in STATEFUL_TYPES
                if row.type in ("system", "footage_request"):
                    self._send_audit_head(row.payload)
                if row.type in ("person", "face"):
                    age = max(0.0, self._clock.now().timestamp() - row.ts)
                    if age < OCCUPANCY_HOLD_S:
                        self._occupied_until = max(self._occupied_until,
                                                   self._clock.monotonic() + OCCUPANCY_HOLD_S - age)
                if (row.type in ("ring", "face") and not row.fed
                        and self._clock.now().timestamp() - row.ts < DOORBELL_FRESH_S):
                    feed = doorbell_payload(json.loads(row.payload))
                    if feed is not None:
                        # A re-sent ring must not ring Home Assistant's phones twice: the outbox remembers it
                        # (re-sends, reconnects and restarts all read it back through pending()).
                        self.link.publish(self.topics.doorbell, encode(feed), qos=1, retain=False)
                        try:
                            self.outbox.mark_fed(row.id)
                        except StorageError as exc:
                            log.warning("MQTT: %s (a re-send may feed it again)", exc)
        return stateful

    def _release_heads(self, now: float) -> None:
        """Once the retained head is read back (or HEAD_SYNC_S passed without it), offer the held heads in order."""
        with self._cond:
            synced = self._head_synced
        if not synced:
            if now < self._sync_deadline:
                return
            log.warning("MQTT: the retained audit head on %s was not read back within %.0f s (does the broker's "
                        "ACL let this client subscribe and publish to %s?); publishing audit heads without it",
                        self.topics.audit_head, self._head_sync_s, self.topics.audit_sync)
            with self._cond:
                self._head_synced = True
        held, self._held_heads = self._held_heads, {}
        for seq in sorted(held):
            self._offer_head(seq, *held[seq])

    def _read_back_head(self, payload: bytes) -> None:
        try:
            body = json.loads(payload)
            head = (int(body["seq"]), str(body["hash"]))
        except (ValueError, KeyError, TypeError):
            return  # empty (cleared by the owner) or not ours
        with self._cond:
            if self._audit_head is None or head[0] > self._audit_head[0]:
                self._audit_head = head

    def _send_audit_head(self, payload: str | bytes) -> None:
        """An event carrying the audit log's head (the `audit_appended` system event after every append, and every
        footage_request event): publish it retained on <prefix>/audit/head unless it would replace the witnessed head
        (the newest the broker holds or we published) with one that is older or not its descendant. Until the
        retained head has been read back after a (re)connection, heads are held, not published."""
        try:
            body = json.loads(payload)
            seq, digest = int(body["audit_seq"]), str(body["audit_hash"])
        except (ValueError, KeyError, TypeError):
            return
        with self._cond:
            synced = self._head_synced
        if not synced:
            self._held_heads[seq] = (digest, body.get("ts"))
            return
        self._offer_head(seq, digest, body.get("ts"))

    def _offer_head(self, seq: int, digest: str, ts: Any) -> None:
        with self._cond:
            known = self._audit_head
        if known == (seq, digest):
            return
        if known is not None:
            problem = self._head_problem(known, seq, digest)
            if problem == "stale":
                # Two processes appending at once may queue their heads out of order: the newer one is out already.
                self.counters["audit_heads_refused"] += 1
                log.debug("MQTT: audit head %s not published: the broker already holds the newer %s", seq, known[0])
                return
            if problem is not None:
                self._refuse_head(known, seq, digest, problem)
                return
        with self._cond:
            if self._audit_head is not None and self._audit_head[0] > seq:
                return  # a newer head was read back meanwhile: offered again with the next append
            self._audit_head = (seq, digest)
        self.link.publish(self.topics.audit_head, encode({"seq": seq, "hash": digest, "ts": ts}), qos=1,
                          retain=self._retain)
        self.counters["audit_heads"] += 1

    def _head_problem(self, known: tuple[int, str], seq: int, digest: str) -> str | None:
        """Why (seq, digest) must not replace the witnessed head `known`: None (it may), "stale" (our log holds the
        witnessed head: this one is just late), or a sentence for the owner (the log forked or went backwards)."""
        if seq == known[0] and digest != known[1]:
            return (f"audit record {seq} has hash {digest[:16]}, but the broker witnessed {known[1][:16]} for it: the "
                    "log was rewritten or restored from an older copy")
        if self._audit_lookup is not None:
            try:
                ours = self._audit_lookup(known[0])
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

    def _refuse_head(self, known: tuple[int, str], seq: int, digest: str, problem: str) -> None:
        """Keep the witnessed head retained; tell the owner once per witnessed head: ERROR and a `system` event."""
        self.counters["audit_heads_refused"] += 1
        if known in self._conflicts_told:
            log.debug("MQTT: audit head %s not published over the witnessed %s (conflict already reported)", seq,
                      known[0])
            return
        self._conflicts_told.add(known)
        self.counters["audit_head_conflicts"] += 1
        log.error("MQTT: audit head %s:%s NOT published over the witnessed head %s:%s: %s; run `doorbell-edge audit "
                  "verify --against %s:%s`", seq, digest[:16], known[0], known[1][:16], problem, known[0], known[1])
        try:
            self.outbox.record(Event("system", None, self._clock.now(), {
                "status": "audit_head_conflict", "witnessed_seq": known[0],
                "witnessed_hash": known[1], "local_seq": seq, "local_hash": digest, "detail": problem}))
        except (StorageError, ValueError) as exc:
            log.error("MQTT: the audit head conflict could not be queued as an event: %s", exc)

    def _send_discovery(self) -> None:
        for topic, payload in discovery_payloads(self.device):
            self.link.publish(topic, payload, qos=1, retain=self._retain)
        self.counters["discovery"] += 1
        log.info("MQTT: discovery published under %s/", self.topics.discovery_prefix)

    def _send_state(self, final: bool = False) -> None:
        try:
            provided = dict(self._state_provider())
        except Exception:
            log.exception("state provider failed; publishing outbox figures only")
            provided = {}
        # The app may say itself; otherwise someone is at the door while a person or face was seen recently.
        provided.setdefault("occupancy", bool(self._occupied_until))
        if final:  # stopping: nothing is moving, occupied or recording any more, whatever was true a moment ago
            provided.update(motion=False, occupancy=False, recording=False, fps=None, inference_ms=None)
        stats = self.outbox.stats()
        body = state_payload(provided, stats.waiting, stats.dropped, stats.last_seq)
        self.link.publish(self.topics.state, encode(body), qos=1, retain=self._retain)
        self.counters["state"] += 1

    def _send_snapshot(self) -> None:
        assert self._snapshot_provider is not None
        try:
            jpeg = self._snapshot_provider()
        except Exception:
            log.exception("snapshot provider failed")
            return
        if jpeg:
            self.publish_snapshot(jpeg)


def duration(seconds: float) -> str:
    """For people: '45 s', '5 min', '2 h 5 min'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"
