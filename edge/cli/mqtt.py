"""`doorbell-edge mqtt ...`: look at the outbox, print the discovery payloads, check the broker connection."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import threading
from typing import Any

from edge import __version__
from edge.cli.common import load_config_for
from edge.config import Config
from edge.errors import StorageError


def register(subparsers: Any) -> None:
    from edge.cli.common import add_config_arg

    mqtt = subparsers.add_parser("mqtt", help="MQTT: outbox status, discovery payloads, connection check")
    sub = mqtt.add_subparsers(dest="mqtt_command", metavar="ACTION")
    sub.required = True

    p = sub.add_parser("outbox", help="events waiting for the broker, dropped counts, last seq")
    p.add_argument("--json", action="store_true", help="print as JSON")
    add_config_arg(p)
    p.set_defaults(func=_outbox)

    p = sub.add_parser("discovery", help="print the Home Assistant discovery payloads this config publishes")
    add_config_arg(p)
    p.set_defaults(func=_discovery)

    p = sub.add_parser("check", help="connect to the broker once with the configured TLS and credentials")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for the broker (default 10)")
    add_config_arg(p)
    p.set_defaults(func=_check)


def _outbox(args: argparse.Namespace) -> int:
    from edge.mqtt.outbox import open_outbox

    config = load_config_for(args)
    if os.access(config.state_dir, os.W_OK):
        with open_outbox(config) as outbox:
            stats = outbox.stats()
            drops = outbox.drops()
            oldest = outbox.pending(limit=1)
        report = {
            "path": str(outbox.path),
            "waiting": stats.waiting,
            "dropped": stats.dropped,
            "dropped_by": {f"{reason}:{kind}": n for (reason, kind), n in sorted(drops.items())},
            "last_seq": stats.last_seq,
            "oldest_waiting_seq": oldest[0].seq if oldest else None,
        }
    else:  # a read-only state dir (or file system): the same figures, read without writing anything
        report = _outbox_read_only(config)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return 0


def _outbox_read_only(config: Config) -> dict[str, object]:
    from edge.events.journal import MQTT
    from edge.events.journal_files import read_only_history

    path, db = read_only_history(config)
    report: dict[str, object] = {"path": str(path), "waiting": 0, "dropped": 0, "dropped_by": {}, "last_seq": 0,
                                 "oldest_waiting_seq": None}
    if db is None:
        return report
    try:
        (waiting, oldest) = db.execute("SELECT count(*), min(seq) FROM waiting WHERE consumer = ?", (MQTT,)).fetchone()
        drops = db.execute("SELECT reason, type, count FROM drops WHERE consumer = ? ORDER BY reason, type",
                           (MQTT,)).fetchall()
        last = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
    except sqlite3.Error as exc:
        raise StorageError(f"event journal {path}: cannot read: {exc}") from exc
    finally:
        db.close()
    report.update(waiting=int(waiting), dropped=sum(int(n) for _, _, n in drops),
                  dropped_by={f"{r}:{t}": int(n) for r, t, n in drops}, last_seq=int(last[0]) if last else 0,
                  oldest_waiting_seq=oldest)
    return report


def _discovery(args: argparse.Namespace) -> int:
    from edge.mqtt.discovery import DeviceInfo, discovery_payloads
    from edge.mqtt.topics import topics_for

    config = load_config_for(args)
    info = DeviceInfo(topics_for(config), config.device.name, __version__, config.mqtt.snapshot)
    for topic, payload in discovery_payloads(info):
        print(topic)
        print(json.dumps(json.loads(payload), indent=2, sort_keys=True) if payload else "(empty: removes the entity)")
    return 0


def _check(args: argparse.Namespace) -> int:
    from edge.mqtt.client import Link
    from edge.mqtt.service import link_settings

    config = load_config_for(args)
    connected = threading.Event()
    link = Link(link_settings(config), on_connected=connected.set)
    link.start()
    try:
        ok = connected.wait(args.timeout)
    finally:
        link.stop()
    where = f"{config.mqtt.host}:{config.mqtt.port}"
    if ok:
        print(f"connected to {where}")
        return 0
    print(f"could not connect to {where}: {link.last_error or 'no answer'}", file=sys.stderr)
    return 1
