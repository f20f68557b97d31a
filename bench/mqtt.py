"""Benchmark: events per second through the durable outbox to a local mosquitto, and creation->receipt latency.

    .venv/bin/python bench/mqtt.py [--events 5000] [--latency-events 300] [--rate 50] [--protocol mqttv5]

Starts its own mosquitto on a free loopback port (or use --port for a running broker) and prints a table:
latency median/p90 (paced events, healthy broker), end-to-end throughput of a burst, outbox record rate, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.clock import SystemClock
from edge.config import Config
from edge.events.bus import Event, EventBus
from edge.mqtt.outbox import Outbox, OutboxBounds
from edge.mqtt.service import build
from edge.mqtt.topics import topics_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mosquitto(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type error\n"
                    "max_queued_messages 0\n" + ("user root\n" if os.geteuid() == 0 else ""))
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"mosquitto did not start on port {port}")


class Receiver:
    def __init__(self, port: int, topic: str) -> None:
        self.latencies: dict[int, float] = {}
        self.last_receipt = 0.0
        self.cond = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub")
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise SystemExit("bench subscriber could not subscribe")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        body = json.loads(msg.payload)
        with self.cond:
            if body["seq"] not in self.latencies:
                self.latencies[body["seq"]] = now - float(body["t"])
                self.last_receipt = now
            self.cond.notify_all()

    def wait_for(self, seq: int, timeout: float = 120.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: seq in self.latencies, timeout):
                raise SystemExit(f"seq {seq} never arrived")


def bench_event(clock: SystemClock) -> Event:
    return Event("system", None, clock.now(), {"status": "bench", "t": time.perf_counter()})


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="burst size for the throughput run")
    parser.add_argument("--latency-events", type=int, default=300, help="paced events for the latency run")
    parser.add_argument("--rate", type=float, default=50.0, help="events per second in the latency run")
    parser.add_argument("--protocol", choices=["mqttv5", "mqttv311"], default="mqttv5")
    parser.add_argument("--port", type=int, default=None, help="use a broker already on 127.0.0.1:PORT")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as tmp:
        workdir = Path(tmp)
        port = args.port or free_port()
        broker = None if args.port else start_mosquitto(workdir, port)
        try:
            rows = run(workdir, port, args)
        finally:
            if broker is not None:
                broker.terminate()
                broker.wait(10)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(("peak RSS (bench process)", f"{peak_rss_mb:.1f}", "MiB"))
    width = max(len(r[0]) for r in rows)
    print(f"\nMQTT outbox benchmark ({args.protocol}, local mosquitto, SQLite WAL synchronous=FULL)")
    print(f"{'metric'.ljust(width)}  {'value':>10}  unit")
    print(f"{'-' * width}  {'-' * 10}  ----")
    for name, value, unit in rows:
        print(f"{name.ljust(width)}  {value:>10}  {unit}")
    return 0


def run(workdir: Path, port: int, args: argparse.Namespace) -> list[tuple[str, str, str]]:
    config = Config.model_validate(
        {"device": {"id": "bench"}, "storage": {"state_dir": str(workdir / "state")},
         "mqtt": {"host": "127.0.0.1", "port": port, "protocol": args.protocol, "outbox_max_events": 1_000_000,
                  "discovery": False, "state_interval_s": 3600}}
    )
    topics = topics_for(config)
    receiver = Receiver(port, topics.events)
    clock = SystemClock()
    bus = EventBus()
    service = build(config, bus, clock, dict)
    service.start()
    assert service.publisher is not None
    deadline = time.monotonic() + 10
    while service.publisher.link.connections == 0 and time.monotonic() < deadline:
        time.sleep(0.01)

    # 1. Latency with a healthy broker: paced events, creation -> subscriber receipt.
    interval = 1.0 / args.rate
    last = 0
    for _ in range(args.latency_events):
        last = bus.publish(bench_event(clock)).seq or 0
        time.sleep(interval)
    receiver.wait_for(last)
    latency_ms = [receiver.latencies[s] * 1000 for s in range(1, last + 1)]

    # 2. Throughput: a burst recorded as fast as possible; time until the subscriber has the last one.
    start = time.perf_counter()
    first = last + 1
    record_s = 0.0
    for _ in range(args.events):
        t = time.perf_counter()
        last = bus.publish(bench_event(clock)).seq or 0
        record_s += time.perf_counter() - t
    receiver.wait_for(last)
    end_to_end = args.events / (receiver.last_receipt - start)
    burst_ms = [receiver.latencies[s] * 1000 for s in range(first, last + 1)]
    deadline = time.monotonic() + 60
    while service.journal.stats().waiting and time.monotonic() < deadline:
        time.sleep(0.05)
    service.stop()
    receiver.client.loop_stop()
    receiver.client.disconnect()

    # 3. The journal alone (no broker): how fast events can be made durable.
    with Outbox(workdir / "alone.sqlite3", OutboxBounds(max_events=1_000_000)) as outbox:
        n = min(args.events, 2000)
        t = time.perf_counter()
        for _ in range(n):
            outbox.record(bench_event(clock))
        alone = n / (time.perf_counter() - t)

    return [
        (f"latency median ({args.latency_events} events at {args.rate:g}/s)", f"{statistics.median(latency_ms):.2f}",
         "ms"),
        ("latency p90", f"{pct(latency_ms, 0.9):.2f}", "ms"),
        ("latency max", f"{max(latency_ms):.2f}", "ms"),
        (f"throughput end-to-end ({args.events} event burst)", f"{end_to_end:.0f}", "events/s"),
        ("burst latency median", f"{statistics.median(burst_ms):.1f}", "ms"),
        ("burst latency p90", f"{pct(burst_ms, 0.9):.1f}", "ms"),
        ("record into outbox (bus.publish)", f"{args.events / record_s:.0f}", "events/s"),
        ("record into outbox, no publisher", f"{alone:.0f}", "events/s"),
    ]


if __name__ == "__main__":
    raise SystemExit(main())
