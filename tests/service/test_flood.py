"""A ring flood against the running daemon: 400 rings/s for 10 s through the real control socket, broker away.

The watchdog keeps being fed, rings are rate limited with a clear reply, no footage_request or system event is
evicted from the outbox, and a ninth client's `ring` is answered while eight idle clients hold connections.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edge.app import App
from edge.clock import SystemClock
from edge.config import CameraConfig, Config
from edge.events.bus import Event
from edge.mqtt.outbox import RESERVED_KINDS, Outbox, bounds_for, emit, outbox_path
from edge.service.control import send_command, socket_path

FLOOD_S = 10.0
RATE = 400  # rings per second, over FLOOD_CLIENTS clients
FLOOD_CLIENTS = 4
RING_INTERVAL_S = 3.0  # the default button.ring_interval_s
WATCHDOG_USEC = 1_000_000  # the daemon feeds every 0.5 s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NotifySocket:
    """A fake $NOTIFY_SOCKET: a datagram socket that keeps every message with its arrival time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            self.received.append((time.monotonic(), data))

    def feeds(self) -> list[float]:
        return [t for t, m in self.received if m == "WATCHDOG=1"]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def flood_client(state_dir: Path, start: float, per_s: float, until: float, replies: list[dict[str, Any]]) -> None:
    """One client ringing at `per_s` (paced from `start`, never faster), a new connection per ring."""
    n = 0
    while True:
        due = start + n / per_s
        now = time.monotonic()
        if due >= until or now >= until:
            return
        if due > now:
            time.sleep(due - now)
        replies.append(send_command(state_dir, {"cmd": "ring"}))
        n += 1


@pytest.mark.slow  # the acceptance flood lasts 10 s
def test_a_ring_flood_keeps_the_watchdog_fed_and_evicts_no_footage_or_system_event(tmp_path: Path) -> None:
    state = tmp_path / "state"
    notify = NotifySocket(tmp_path / "notify.sock")
    config = Config(
        cameras={"porch": CameraConfig(source="demo", width=160, height=120, fps=10, analysis_width=64)},
        storage={"state_dir": state},
        # Nothing listens on this port: the broker is away for the whole flood, so the outbox only fills.
        # A small outbox with half kept for footage_request/system makes eviction happen within seconds.
        mqtt={"host": "127.0.0.1", "port": free_port(), "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
              "outbox_max_events": 20, "outbox_reserved_events": 10},
        faces={"enabled": False},
        pipeline={"stall_after_s": 3.0},
        output={"stdout_events": False},
    )
    # What the owner must hear about, waiting for the broker before the flood starts.
    reserved = [emit(config, Event(kind, None, SystemClock().now(), fields)).id for kind, fields in (
        ("footage_request", {"request": "fr-1", "state": "received"}),
        ("system", {"status": "camera_lost"}),
        ("footage_request", {"request": "fr-2", "state": "received"}),
        ("system", {"status": "recording_paused"}),
        ("footage_request", {"request": "fr-3", "state": "pending_owner"}),
    )]
    app = App(config, stdout=io.StringIO(),
              environ={"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    app.build()
    rings: list[Event] = []
    app.bus.subscribe(lambda e: rings.append(e) if e.type == "ring" else None)
    app.start()
    idle: list[socket.socket] = []
    stalls: list[list[str]] = []
    replies: list[list[dict[str, Any]]] = [[] for _ in range(FLOOD_CLIENTS)]
    volume_drops = 0
    try:
        # Eight idle clients connect and send nothing; a ninth rings and is answered at once.
        for _ in range(8):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(socket_path(state)))
            idle.append(client)
        ninth = send_command(state, {"cmd": "ring"}, timeout=3.0)
        assert ninth["ok"] is True, ninth

        # The flood, plus another writer's volume of motion events in the journal (as a CLI process or a busy
        # scene would add): the reserved kinds must survive both.
        start = time.monotonic()
        until = start + FLOOD_S
        threads = [threading.Thread(target=flood_client, args=(state, start + i / RATE, RATE / FLOOD_CLIENTS,
                                                               until, replies[i]), daemon=True)
                   for i in range(FLOOD_CLIENTS)]

        def volume() -> None:
            with Outbox(outbox_path(config), bounds_for(config)) as other:
                while time.monotonic() < until:
                    other.record(Event("motion_start", "porch", SystemClock().now(), {"score": 0.5}))
                    time.sleep(0.02)

        threads.append(threading.Thread(target=volume, daemon=True))
        for thread in threads:
            thread.start()
        while time.monotonic() < until:
            stalls.append(app.health.stalled())
            time.sleep(0.1)
        for thread in threads:
            thread.join(30)
            assert not thread.is_alive(), "a flood client hung"
        ended = time.monotonic()
        idle_replies = [client.recv(4096) for client in idle]
        assert app.health.stalled() == []
        after_flood = send_command(state, {"cmd": "status"})
        assert after_flood["ok"] is True
        with Outbox(outbox_path(config), bounds_for(config)) as outbox:
            waiting = outbox.pending(limit=1000)
            drops = outbox.drops()
    finally:
        for client in idle:
            client.close()
        app.stop()
        notify.close()

    flood = [r for client_replies in replies for r in client_replies]
    accepted = [r for r in flood if r.get("ok")]
    limited = [r for r in flood if r.get("rate_limited")]
    elapsed = ended - start
    print(f"\nflood: {len(flood)} rings in {elapsed:.1f} s ({len(flood) / elapsed:.0f}/s), {len(accepted)} accepted, "
          f"{len(limited)} rate limited; watchdog fed {len(notify.feeds())} times; outbox drops {drops}")

    # Every ring got a clear answer: a ring event, or "rate limited" with when to retry.
    assert len(flood) >= RATE, f"the flood did not happen: {len(flood)} rings"
    assert len(accepted) + len(limited) == len(flood), [r for r in flood if not r.get("ok") and
                                                         not r.get("rate_limited")][:3]
    assert all("rate limited" in r["error"] and "button.ring_interval_s" in r["error"]
               and 0 <= r["retry_after_s"] <= RING_INTERVAL_S for r in limited)
    # One ring per interval however hard the button is hammered (the ninth client's ring opened the first one),
    # and rings still get through during the flood.
    assert 2 <= len(accepted) <= elapsed / RING_INTERVAL_S + 1
    assert [e.id for e in rings] == [ninth["event_id"], *(r["event_id"] for r in
                                                          sorted(accepted, key=lambda r: r["seq"]))]
    # The idle clients were told why they were dropped, and never held anyone up.
    assert all(b"timed out" in reply and b"control.timeout_s" in reply for reply in idle_replies), idle_replies

    # The watchdog kept being fed: never a stalled stage, and a feed in every 2.5 s of the flood (one is due
    # every 0.5 s), never "STALLED" in the status line.
    assert not [s for s in stalls if s], f"stages stalled during the flood: {[s for s in stalls if s][:3]}"
    feeds = notify.feeds()
    window = 2.5
    gaps = [t for t in (start + k * window for k in range(int(FLOOD_S / window)))
            if not any(t <= f < t + window for f in feeds)]
    assert not gaps, f"no watchdog feed in the {window} s after {[round(g - start, 1) for g in gaps]} s of the flood"
    assert not [m for _, m in notify.received if "STALLED" in m]

    # The broker was away throughout: the outbox overflowed (other kinds were dropped) but kept every
    # footage_request and system event.
    volume_drops = sum(count for (_, kind), count in drops.items() if kind not in RESERVED_KINDS)
    assert volume_drops > 0, "the outbox never overflowed: the test did not test the quota"
    assert not [key for key in drops if key[1] in RESERVED_KINDS], drops
    waiting_ids = {p.id for p in waiting}
    assert set(reserved) <= waiting_ids
    assert any(p.type == "system" and '"started"' in p.payload for p in waiting)
