"""`doorbell-edge events list`: the device's own event history from the journal, one day or N events at a time."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from edge.actions.events import DEFAULT_LIMIT
from edge.cli.common import load_config_for
from edge.clock import parse_rfc3339, rfc3339
from edge.events.bus import EVENT_TYPES

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")  # a time without its zone
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
    text = text.strip()
    found = _AGO.match(text)
    if found:
        return now - timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])
    if _DATE.match(text):  # a date: midnight where the owner is
        try:
            return datetime.combine(date.fromisoformat(text), time(0)).astimezone()
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not a date: {exc}") from exc
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        if _NAIVE.match(text):
            raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z for UTC") from exc
        raise argparse.ArgumentTypeError(f"{text!r} is not a time: use RFC 3339 (2026-03-01T12:00:00Z), a date "
                                         "(2026-03-01) or an age (30m, 12h, 7d)") from exc


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _list(args: argparse.Namespace) -> int:
    from edge.actions.events import read_events
    from edge.clock import SystemClock

    page = read_events(load_config_for(args), SystemClock(), since=args.since, until=args.until,
                       types=args.types or (), limit=args.limit)
    if not page.found:
        print(f"no events recorded yet ({page.journal} does not exist)", file=sys.stderr)
        return 0
    for event in page.events:
        body = event.as_dict()
        if args.json:
            print(json.dumps(body, sort_keys=True, ensure_ascii=False))
        else:
            print(_line(body))
    rows, since, until = page.events, page.since, page.until
    what = "event" if len(rows) == 1 else "events"
    span = f"the newest {len(rows)} {what}" if page.newest else (
        f"{len(rows)} {what} from {_when(since)}" + (f" until {_when(until)}" if until else ""))
    if page.more:
        nxt = f"--since {rfc3339(rows[-1].ts)}"
        hint = "older ones: --until TIME or a larger --limit" if page.newest else \
            f"more follow: --limit {page.limit} {nxt} (events at that instant repeat) or a larger --limit"
        print(f"{span}; {hint}", file=sys.stderr)
    elif not args.json:
        print(span if rows else f"no events from {_when(since)}" if since else "no events", file=sys.stderr)
    return 0


_ENVELOPE = ("v", "id", "seq", "type", "camera", "ts", "delivery")


def _line(body: dict[str, Any]) -> str:
    from edge.cli.common import human_time

    fields = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(body.items())
                      if k not in _ENVELOPE)
    delivery = ", ".join(f"{c} {state}" for c, state in body["delivery"].items())
    return (f"{body['seq']:>7}  {human_time(body['ts'])}  {body['type']:<15} {body.get('camera') or '-':<12} "
            f"{fields}  [{delivery}]").rstrip()


def _when(ts: datetime | None) -> str:
    from edge.cli.common import human_time

    return human_time(ts) if ts else "the start"
