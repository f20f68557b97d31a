"""The MQTT publisher: one thread that keeps the broker told (availability, discovery, state, the events feed, audit
heads) and answers commands. Its parts: feeds.py (events), audit_heads.py, outage.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from edge.clock import Clock
from edge.errors import StorageError
from edge.mqtt.audit_heads import HEAD_SYNC_S, AuditHeads, AuditLookup
from edge.mqtt.client import Link, LinkSettings
from edge.mqtt.commands import Command, CommandLimits, Rejected, parse_command
from edge.mqtt.discovery import DeviceInfo, discovery_payloads, encode, state_payload
from edge.mqtt.feeds import OCCUPANCY_HOLD_S, EventFeed
from edge.mqtt.outage import DOWN_SUMMARY_S, OutageWatch
from edge.mqtt.outbox import Outbox
from edge.mqtt.topics import OFFLINE, ONLINE, Topics

log = logging.getLogger(__name__)

__all__ = ["OCCUPANCY_HOLD_S", "Publisher", "SnapshotProvider", "StateProvider"]

PRUNE_EVERY_S = 60.0

StateProvider = Callable[[], Mapping[str, Any]]
SnapshotProvider = Callable[[], bytes | None]


class Publisher:
    """One thread; wakes on a new event, an ack, a (re)connection, a command, or every `poll_s` to pick up events
    other processes appended to the outbox.

    After every (re)connection the feed re-sends everything not yet acknowledged, from the lowest seq: a subscriber
    may see an event twice (same id and seq), never a gap or a reordering.
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
        self._poll_s = poll_s
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
        self._next_state = 0.0
        self._next_prune = 0.0
        self.counters = {"sent": 0, "acked": 0, "nacked": 0, "commands": 0, "rejected_commands": 0,
                         "discovery": 0, "state": 0, "snapshots": 0,
                         "rate_limited_commands": 0, "audit_heads": 0, "audit_heads_refused": 0,
                         "audit_head_conflicts": 0}
        self.heads = AuditHeads(self.link, topics, clock, self.counters, outbox.record, self._poke, retain=retain,
                                lookup=audit_lookup, sync_s=head_sync_s)
        self.feed = EventFeed(outbox, self.link, topics, clock, self.counters, window=window, on_ack=self._ack,
                              audit_head=self.heads.send)
        self._outage = OutageWatch(outbox, self.link, down_summary_s)
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
        self.heads.connected()
        with self._cond:
            self._connected = True
            self._session_new = True
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
            self.heads.read_back(payload)
            return
        if topic == self.topics.audit_sync:
            self.heads.sync_marker(payload)
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
        self.feed.settle(acks)
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY_S
            self.outbox.prune()
        if not connected:
            self.feed.restart()
            self._outage.down(now)
            return
        self._outage.up(now)
        state_due = "state" in requests or now >= self._next_state
        if session_new:
            self.feed.restart()
            # Discovery and a fresh state go out before `online`: the retained state is the last run's (after a
            # crash it may say motion ON), and Home Assistant shows it as current the moment we say online.
            if self._discovery:
                self._send_discovery()
            requests.discard("discovery")
            self._send_state()
            self._next_state = now + self._state_interval_s
            self.link.publish(self.topics.availability, ONLINE, qos=1, retain=self._retain)
            state_due = "state" in requests
            self.heads.begin_sync(now)
        self.heads.release(now)
        if "discovery" in requests and self._discovery:
            self._send_discovery()
        if "snapshot" in requests and self._snapshot_provider is not None:
            self._send_snapshot()
        state_due = self.feed.send() or state_due
        if self.feed.occupancy_over(now):
            state_due = True  # occupancy goes explicitly OFF
        if state_due:
            self._send_state()
            self._next_state = now + self._state_interval_s

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
        provided.setdefault("occupancy", bool(self.feed.occupied_until))
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

