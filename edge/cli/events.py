"""`doorbell-edge events list`: the device's own event history from the journal, one day or N events at a time."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from edge.events.bus import EVENT_TYPES

DAY = timedelta(days=1)
DEFAULT_LIMIT = 1000
_AGO = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_UNITS = {"m": 60.0, "h": 3600.0, "d": 86400.0}


def register(subparsers: Any) -> None:
    from edge.cli.common import add_config_arg

    events = subparsers.add_parser("events", help="the device's own event history (the event journal)")
    sub = events.add_subparsers(dest="events_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="events in time order: the last day, a window, or the newest N")
    p.add_argument("--since", type=parse_time, default=None, metavar="TIME",
                   help="events from this time on: RFC 3339 (2026-03-01T12:00:00Z), a date (2026-03-01, local "
                   "midnight) or an age (30m, 12h, 7d ago); default: one day before --until or now")
    p.add_argument("--until", type=parse_time, default=None, metavar="TIME",
                   help="events before this time (same forms as --since); default: now")
    p.add_argument("--type", dest="types", action="append", choices=EVENT_TYPES, default=None, metavar="T",
                   help=f"only this type (repeat for several): {', '.join(EVENT_TYPES)}")
    p.add_argument("--limit", type=_positive, default=None, metavar="N",
                   help=f"at most N events: without --since the newest N of any age, with it the first N from "
                   f"--since (default {DEFAULT_LIMIT})")
    p.add_argument("--json", action="store_true", help="one JSON object per line (the MQTT wire form plus delivery)")
    add_config_arg(p)
    p.set_defaults(func=_list)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """RFC 3339 with a zone, a date (local midnight) or an age such as 12h; argparse-friendly errors."""
    now = now or datetime.now(UTC)
    found = _AGO.match(text.strip())
    if found:
        return now - timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: use RFC 3339 (2026-03-01T12:00:00Z), a date "
                                         "(2026-03-01) or an age (30m, 12h, 7d)") from exc
    if value.tzinfo is None:
        if len(text.strip()) == 10:  # a date: midnight where the owner is
            return value.astimezone()
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z for UTC")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _list(args: argparse.Namespace) -> int:
    from edge.config_load import load_config
    from edge.events.journal import read_history
    from edge.events.journal_files import read_only_history

    config = load_config(args.config)
    window = ("newest", None, args.until) if args.since is None and args.limit is not None else (
        "first", args.since if args.since is not None else (args.until or datetime.now(UTC)) - DAY, args.until)
    how, since, until = window
    limit = args.limit or DEFAULT_LIMIT
    path, db = read_only_history(config)
    if db is None:
        print(f"no events recorded yet ({path} does not exist)", file=sys.stderr)
        return 0
    try:
        rows = read_history(db, since, until, args.types or (), limit + 1, newest=how == "newest")
    finally:
        db.close()
    more = len(rows) > limit
    rows = rows[1:] if more and how == "newest" else rows[:limit]
    for row in rows:
        body = as_dict(row)
        if args.json:
            print(json.dumps(body, sort_keys=True, ensure_ascii=False))
        else:
            print(_line(body))
    what = "event" if len(rows) == 1 else "events"
    span = f"the newest {len(rows)} {what}" if how == "newest" else (
        f"{len(rows)} {what} from {_when(since)}" + (f" until {_when(until)}" if until else ""))
    if more:
        nxt = f"--since {_rfc(rows[-1].ts)}"
        hint = "older ones: --until TIME or a larger --limit" if how == "newest" else \
            f"more follow: --limit {limit} {nxt} (events at that instant repeat) or a larger --limit"
        print(f"{span}; {hint}", file=sys.stderr)
    elif not args.json:
        print(span if rows else f"no events from {_when(since)}" if since else "no events", file=sys.stderr)
    return 0


def as_dict(row: Any) -> dict[str, Any]:
    """An event of the history as `--json` prints it: the wire form plus `delivery` per consumer."""
    from edge.events.journal import CONSUMERS

    body: dict[str, Any] = json.loads(row.payload)
    body["delivery"] = {c: ("waiting" if c in row.waiting_for else f"dropped ({row.undelivered[c]} limit)"
                            if c in row.undelivered else "delivered") for c in CONSUMERS}
    return body


_ENVELOPE = ("v", "id", "seq", "type", "camera", "ts", "delivery")


def _line(body: dict[str, Any]) -> str:
    from edge.cli.common import human_time

    fields = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(body.items())
                      if k not in _ENVELOPE)
    delivery = ", ".join(f"{c} {state}" for c, state in body["delivery"].items())
    return (f"{body['seq']:>7}  {human_time(body['ts'])}  {body['type']:<15} {body.get('camera') or '-':<12} "
            f"{fields}  [{delivery}]").rstrip()


def _rfc(ts: datetime) -> str:
    from edge.clock import rfc3339

    return rfc3339(ts)


def _when(ts: datetime | None) -> str:
    from edge.cli.common import human_time

    return human_time(ts) if ts else "the start"
