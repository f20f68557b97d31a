"""`doorbell-edge clips list | show ID | copy ID DEST`: the owner's view of the clip store."""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.actions.clips import copy_clip, list_clips, open_store, show_clip
from edge.cli.common import load_config_for
from edge.clock import SystemClock, parse_rfc3339, rfc3339
from edge.recording.store import ClipRef, ClipStore

_NAIVE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?$")  # a time without its zone


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edge.cli.common import add_config_arg

    clips = subparsers.add_parser("clips", help="list, inspect and copy recorded clips")
    sub = clips.add_subparsers(dest="clips_command", metavar="ACTION")
    sub.required = True

    lister = sub.add_parser("list", help="recorded clips, oldest first")
    add_config_arg(lister)
    lister.add_argument("--camera", default=None, help="only this camera")
    lister.add_argument("--since", type=_time, default=None, help="clips ending after this RFC 3339 time")
    lister.add_argument("--until", type=_time, default=None, help="clips starting before this RFC 3339 time")
    lister.add_argument("--json", action="store_true", help="one JSON object per line")
    lister.set_defaults(func=_cmd_list)

    show = sub.add_parser("show", help="one clip: times, events, hash check, snapshots, holds")
    add_config_arg(show)
    show.add_argument("clip_id", metavar="ID", help="the clip id, as `clips list` shows it")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=_cmd_show)

    copy = sub.add_parser("copy", help="copy a clip (hash-checked) to a file or directory: the owner's own copy")
    add_config_arg(copy)
    copy.add_argument("clip_id", metavar="ID", help="the clip id, as `clips list` shows it")
    copy.add_argument("dest", metavar="DEST", type=Path, help="file to write, or a folder to copy the clip into")
    copy.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    copy.set_defaults(func=_cmd_copy)


def _time(text: str) -> datetime:
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        if _NAIVE.match(text):
            raise argparse.ArgumentTypeError(f"{text!r} has no time zone; add Z for UTC") from exc
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time such as 2026-03-01T12:00:00Z") from exc


def _store(args: argparse.Namespace) -> ClipStore:

    return open_store(load_config_for(args).state_dir, SystemClock())


def _summary(ref: ClipRef) -> dict[str, Any]:
    return {
        "id": ref.id,
        "camera": ref.camera,
        "start": rfc3339(ref.start),
        "end": rfc3339(ref.end),
        "seconds": round((ref.end - ref.start).total_seconds(), 3),
        "frames": ref.frames,
        "size": ref.size,
        "class": ref.klass,
        "events": list(ref.events),
        "truncated": ref.truncated,
        "held": ref.held,
        "trusted_time": ref.trusted,  # false: recorded while the clock was not trusted (docs/time.md)
    }


def _cmd_list(args: argparse.Namespace) -> int:
    refs = list_clips(_store(args), args.camera, args.since, args.until)
    if args.json:
        for ref in refs:
            print(json.dumps(_summary(ref)))
        return 0
    if not refs:
        print("no clips")
        return 0
    from edge.cli.common import human_time

    starts = {ref.id: human_time(ref.start) for ref in refs}  # local time, UTC in brackets (README, Commands)
    width = max(len("START"), *(len(v) for v in starts.values()))
    print(f"{'ID':<40} {'CAMERA':<12} {'START':<{width}} {'SECONDS':>7} {'MB':>7} {'CLASS':<6} FLAGS")
    for ref in refs:
        marks = (("held", ref.held), ("truncated", ref.truncated), ("untrusted-time", not ref.trusted))
        flags = ",".join(f for f, on in marks if on) or "-"
        seconds = (ref.end - ref.start).total_seconds()
        print(
            f"{ref.id:<40} {ref.camera:<12} {starts[ref.id]:<{width}} {seconds:>7.1f} {ref.size / 1e6:>7.2f} "
            f"{ref.klass:<6} {flags}"
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    detail = show_clip(_store(args), args.clip_id)
    ref = detail.clip
    body = _summary(ref)
    body["path"] = str(ref.path)
    body["mime"] = ref.mime
    body["sha256"] = ref.sha256
    body["sha256_ok"] = detail.sha256_ok
    body["snapshots"] = [{"event": s.event_id, "ts": rfc3339(s.ts), "path": str(s.path)} for s in detail.snapshots]
    body["holds"] = [{"id": h.id, "until": rfc3339(h.until), "reference": h.reference} for h in detail.holds]
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        _print_clip(ref, body)
    return 0 if body["sha256_ok"] else 1


def _print_clip(ref: ClipRef, body: dict[str, Any]) -> None:
    """`clips show` for people: local times, counts instead of id lists (the ids are in --json)."""
    from edge.cli.common import human_time, print_fields

    flags = [
        f
        for f, on in (
            ("truncated (the recording stopped early)", ref.truncated),
            ("UNTRUSTED TIME: recorded while the clock was not trusted, not exported by default; docs/time.md",
             not ref.trusted),
        )
        if on
    ]
    holds = [f"{h['reference'] or h['id']} until {human_time(h['until'])}" for h in body["holds"]]
    print_fields([
        ("clip", ref.id),
        ("camera", ref.camera),
        ("start", human_time(ref.start)),
        ("end", human_time(ref.end)),
        ("length", f"{body['seconds']:.1f} s, {ref.frames} frames" + (f" ({', '.join(flags)})" if flags else "")),
        ("class", ref.klass),
        ("events", len(ref.events)),
        ("snapshots", len(body["snapshots"])),
        ("held", "\n".join(holds) if holds else "no"),
        ("file", f"{ref.path} ({ref.size / 1e6:.2f} MB, {ref.mime})"),
        ("sha256", f"{ref.sha256[:16]}... " + ("matches the file" if body["sha256_ok"] else
                                                "DOES NOT MATCH the file (damaged or changed)")),
    ])


def _cmd_copy(args: argparse.Namespace) -> int:
    done = copy_clip(_store(args), args.clip_id, args.dest, SystemClock(), force=args.force)
    print(f"copied {done.clip.id} to {done.dest} (sha256 {done.clip.sha256})")
    return 0
