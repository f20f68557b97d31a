"""`doorbell-edge requests ...`: the owner's local interface to footage requests (edge.actions.footage).

`exports` and `keys` and `agencies` are in edge.cli.footage_keys, `audit` in edge.cli.footage_audit."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.cli.common import load_config_for
from edge.errors import RequestError

if TYPE_CHECKING:
    from edge.actions.footage import AgencyName

OWNER_COMMANDS = frozenset({"approve", "deny", "ratify", "export", "renew-hold", "release-hold"})


def register(subparsers: Any) -> None:
    from edge.cli import footage_audit, footage_keys

    _register_requests(subparsers)
    footage_keys.register(subparsers)
    footage_audit.register(subparsers)


def _register_requests(subparsers: Any) -> None:
    requests = subparsers.add_parser("requests", help="footage requests: evaluate, submit, approve, deny, report")
    rsub = requests.add_subparsers(dest="requests_command", metavar="ACTION")
    rsub.required = True

    _add_intake(rsub)
    _add_decisions(rsub)
    _add_reading(rsub)


def _add_intake(rsub: Any) -> None:
    from edge.cli.common import add_config_arg

    p = rsub.add_parser("evaluate", help="print the decision a request would get; records nothing")
    p.add_argument("file", metavar="FILE", help="request document (JSON or YAML; FILE.minisig and "
                   "FILE.court.minisig beside it: its detached signatures); - for stdin")
    p.add_argument("--now", default=None, metavar="TIME", help="judge as of this RFC 3339 time (default: now)")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    add_config_arg(p)
    p.set_defaults(func=_evaluate)

    p = rsub.add_parser("submit", help="record a request (audited) and print its decision")
    p.add_argument("file", metavar="FILE", help="request document (JSON or YAML; FILE.minisig and "
                   "FILE.court.minisig beside it: its detached signatures); - for stdin")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    add_config_arg(p)
    p.set_defaults(func=_submit)


def _add_decisions(rsub: Any) -> None:
    """The owner's commands (OWNER_COMMANDS: run as the state dir's owner or root)."""
    from edge.cli.common import add_config_arg

    p = rsub.add_parser("approve", help="owner: approve a request under review (may narrow, never widen)")
    p.add_argument("id", metavar="ID", help="the request's local id (fr-..., as `requests list` shows it)")
    p.add_argument("--clips", nargs="+", default=None, metavar="CLIP", help="release only these clips")
    p.add_argument("--cameras", nargs="+", default=None, metavar="CAMERA", help="release only these cameras")
    p.add_argument("--data", nargs="+", default=None, metavar="KIND", help="release only these data kinds")
    p.add_argument("--unblur", action="append", default=[], metavar="CLIP",
                   help="release this clip without face blurring (audited; repeatable)")
    p.add_argument("--attest-original", action="store_true",
                   help="record that you checked the paper original of an unverified warrant (audited)")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    add_config_arg(p)
    p.set_defaults(func=_approve)

    p = rsub.add_parser("deny", help="owner: refuse a request")
    p.add_argument("id", metavar="ID", help="the request's local id (fr-..., as `requests list` shows it)")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why (kept in the audit log)")
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    add_config_arg(p)
    p.set_defaults(func=_deny)

    p = rsub.add_parser("ratify", help="owner: record the warrant or case confirmation of an emergency release")
    p.add_argument("id", metavar="ID", help="the request's local id (fr-..., as `requests list` shows it)")
    p.add_argument("--reference", required=True, metavar="REF", help="warrant number or case confirmation")
    add_config_arg(p)
    p.set_defaults(func=_ratify)

    p = rsub.add_parser("export", help="owner: write the signed, encrypted bundle of a released request")
    p.add_argument("id", metavar="ID", help="the request's local id (fr-..., as `requests list` shows it)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="directory for the bundle (default: <state_dir>/footage/exports)")
    p.add_argument("--json", action="store_true", help="print the bundle's path, hash and files as JSON")
    p.add_argument("--include-untrusted-time", action="store_true",
                   help="also export clips recorded while the device clock was not trusted (docs/time.md); "
                   "recorded in the audit log")
    p.add_argument("--keep-region", default=None, metavar="X,Y,W,H",
                   help="stricter redaction for crowded scenes: pixelate everything outside this region of the "
                   "frame (pixels; faces inside it are still blurred); recorded in the audit log")
    add_config_arg(p)
    p.set_defaults(func=_export)

    p = rsub.add_parser("renew-hold", help="owner: renew a preservation hold once for another 90 days")
    p.add_argument("id", metavar="ID", help="the request's local id (fr-..., as `requests list` shows it)")
    add_config_arg(p)
    p.set_defaults(func=_renew)

    p = rsub.add_parser("release-hold", help="owner: lift a preservation hold (audited); its clips are subject to "
                                             "retention again")
    p.add_argument("id", metavar="ID", help="the request's local id (fr-..., as `requests list` shows it)")
    p.add_argument("--reason", default="", metavar="TEXT", help="why (kept in the audit log)")
    add_config_arg(p)
    p.set_defaults(func=_release_hold)


def _add_reading(rsub: Any) -> None:
    from edge.cli.common import add_config_arg

    p = rsub.add_parser("list", help="every request with its current decision")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    add_config_arg(p)
    p.set_defaults(func=_list)

    p = rsub.add_parser("show", help="one request: document summary, decisions, owner actions, exports, holds")
    p.add_argument("id", metavar="ID", help="the request's local id (fr-..., as `requests list` shows it)")
    p.add_argument("--json", action="store_true", help="print everything as JSON (the document in full)")
    add_config_arg(p)
    p.set_defaults(func=_show)

    p = rsub.add_parser("report", help="transparency report: counts by basis and decision, exigent, holds")
    p.add_argument("--since", default=None, metavar="TIME",
                   help="only requests received at or after this RFC 3339 time")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_config_arg(p)
    p.set_defaults(func=_report)


# --- helpers -----------------------------------------------------------------------------------------------


def _desk(args: argparse.Namespace) -> Any:
    from edge.footage.desk import FootageDesk

    config = load_config_for(args)
    if getattr(args, "requests_command", None) in OWNER_COMMANDS:
        _check_owner(Path(config.state_dir))
    return FootageDesk(config)


def _check_owner(state_dir: Path) -> None:
    """Owner commands run locally as the service user (who owns the state directory) or root."""
    uid = os.geteuid()
    if uid == 0 or not state_dir.exists():
        return
    if state_dir.stat().st_uid != uid:
        raise RequestError(
            f"only the owner may decide on footage requests: run as the service user that owns {state_dir} "
            "(e.g. sudo -u doorbell-edge doorbell-edge requests ...)"
        )


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    from edge.footage.request import read_request_file

    try:  # FILE, or FILE with its detached minisign signatures FILE.minisig (FILE.court.minisig) in an envelope
        return read_request_file(Path(path))
    except OSError as exc:
        raise RequestError(f"cannot read request document {exc.filename or path}: {exc.strerror or exc}") from exc


def _parse_now(text: str | None) -> datetime | None:
    if text is None:
        return None
    from edge.clock import parse_rfc3339

    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise RequestError(f"--now: {exc}") from exc


def _print_decision(decision: Any, as_json: bool, request: str | None = None) -> None:
    body = decision.to_dict()
    if request is not None:
        body = {"id": request, **body}
    if as_json:
        print(json.dumps(body, indent=2))
        return
    head = f"{request}: " if request else ""
    print(f"{head}{body['decision'].upper()}  (request_id {body['request_id']})")
    for reason in body["reasons"]:
        print(f"  {reason['code']}: {reason['detail']}")
    for clip in body["clips"]:
        digest = f"  sha256 {clip['sha256']}" if clip.get("sha256") else ""
        print(f"  clip {clip['clip']} on {clip['camera']}: {clip['start']} .. {clip['end']}{digest}")
    if body["data"]:
        print(f"  data: {', '.join(body['data'])}")


# --- commands ----------------------------------------------------------------------------------------------


def _evaluate(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions

    desk = _desk(args)
    _print_decision(actions.evaluate(desk, _read(args.file), _parse_now(args.now)), args.json)
    return 0


def _submit(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions

    desk = _desk(args)
    submitted = actions.submit(desk, _read(args.file))
    request, decision, result = submitted.request, submitted.decision, submitted.export
    if result is not None:
        # Only an auto-released verified warrant is released at intake: the owner chose this in the config.
        if not args.json:
            _print_decision(decision, False, request)
            print(f"  exported: {result.path}")
            return 0
        print(json.dumps({"id": request, **decision.to_dict(), "export": str(result.path)}, indent=2))
        return 0
    _print_decision(decision, args.json, request)
    return 0


def _approve(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions
    from edge.footage.approval import Narrowing

    desk = _desk(args)
    decision = actions.approve(desk, args.id, narrowing=Narrowing(args.clips, args.cameras, args.data),
                               unblur=args.unblur, attest_original=args.attest_original)
    _print_decision(decision, args.json, args.id)
    if decision.decision == "release" and not args.json:
        # The clip lines above are exactly what this approval releases (recorded with their sha256).
        print(f"  this approval releases the {len(decision.segments)} clip part(s) above and nothing else; a clip "
              "that finishes later, or one whose content changes, needs a new approval")
        print(f"  next: doorbell-edge requests export {args.id}")
    return 0


def _deny(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions

    desk = _desk(args)
    _print_decision(actions.deny(desk, args.id, args.reason), args.json, args.id)
    return 0


def _ratify(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions

    desk = _desk(args)
    _print_decision(actions.ratify(desk, args.id, args.reference), False, args.id)
    return 0


def _export(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions
    from edge.footage.redact import parse_region

    keep = parse_region(args.keep_region) if args.keep_region else None  # a typo fails before anything starts
    desk = _desk(args)
    result = actions.export(desk, args.id, Path(args.out) if args.out else None,
                            include_untrusted=args.include_untrusted_time, keep=keep)
    if args.json:
        print(json.dumps({"path": str(result.path), "sha256": result.sha256, "export_id": result.export_id,
                          "files": result.manifest["files"]}, indent=2))
    else:
        print(f"{result.path}\n  sha256 {result.sha256}\n  {len(result.manifest['files'])} file(s)")
    return 0


def _renew(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions

    hold = actions.renew_hold(_desk(args), args.id)
    print(f"{args.id}: hold renewed ({hold or 'no clips in scope'})")
    return 0


def _release_hold(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions

    lifted = actions.release_hold(_desk(args), args.id, args.reason)
    print(f"{args.id}: hold(s) lifted: {', '.join(lifted)}; the clips are subject to retention again")
    return 0


def _list(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions

    rows = [row.to_dict() for row in actions.list_requests(_desk(args))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from edge.cli.common import human_time

    for row in rows:  # local time, UTC in brackets (README, Commands); --json keeps RFC 3339 UTC
        print(f"{row['id']}  {human_time(row['received_at'])}  {row['agency'] or '-'}  {row['request_id'] or '-'}  "
              f"{row['basis'] or '-'}  {row['state']:<12}  {row['decision']}  {','.join(row['codes'])}")
    if not rows:
        print("no footage requests")
    return 0


def _show(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions

    desk = _desk(args)
    details = actions.show(desk, args.id)
    summary = details.summary  # with where it stands, as `requests list` says it
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary, actions.request_agency(desk, details))
    return 0


def _codes(reasons: list[dict[str, Any]]) -> str:
    return ", ".join(str(r.get("code")) for r in reasons) or "-"


def _print_summary(s: dict[str, Any], agency: AgencyName) -> None:
    """`requests show` for people: local times, counts per camera instead of clip id lists (--json has them)."""
    from collections import Counter

    from edge.cli.common import human_time, print_fields

    doc = s.get("document") or {}
    scope = doc.get("scope") or {}
    now = s["now"]
    clips = Counter(str(c["camera"]) for c in now.get("clips", []))
    actions = [
        f"#{a['seq']} {a['kind']} {human_time(a['at'])}" + (f": {a['reason']}" if a.get("reason") else "")
        for a in s.get("owner_actions", [])
    ]
    exports = [
        f"{e.get('id')}: " + (f"completed {human_time(e['completed_at'])}" if e.get("completed_at") else
                              f"started {human_time(e.get('started_at'))}, NOT completed")
        for e in s.get("exports", [])
    ]
    holds = [
        f"{h.get('hold_id')}: {len(json.loads(h['clips'])) if isinstance(h.get('clips'), str) else '?'} clip(s) "
        f"until {human_time(h.get('until'))}" + (f", expired {human_time(h['expired_at'])}" if h.get("expired_at")
                                                 else "")
        for h in s.get("holds", [])
    ]
    officer = doc.get("officer") or {}
    rows: list[tuple[str, object]] = [("request", s["id"])]
    if "state" in s:
        rows.append(("state", s["state"]))
    rows += [
        ("received", human_time(s.get("received_at"))),
        # the configured name (the document's own name only as what it says), then the id it carries
        ("agency", agency.text + (f" [{agency.id}]" if agency.id and agency.configured else "")),
        ("agency's id", s.get("request_id") or "-"),
        ("legal basis", s.get("legal_basis") or "-"),
        ("case number", s.get("case_number") or "-"),
    ]
    if officer:
        rows.append(("officer", f"{officer.get('name')} (badge {officer.get('badge')})"))
    if doc:
        rows += [("issued", human_time(doc.get("issued_at"))), ("expires", human_time(doc.get("expires_at")))]
        windows = [f"{human_time(w['start'])} .. {human_time(w['end'])}" for w in scope.get("windows", [])]
        rows += [
            ("cameras asked", ", ".join(scope.get("cameras", [])) or "-"),
            ("time windows", "\n".join(windows) or "-"),
        ]
    problems = s.get("document_problems") or []
    rows += [
        ("document", f"sha256 {str(s.get('document_sha256'))[:16]}..., "
                     + (f"{len(problems)} problem(s):\n" + "\n".join(problems) if problems else "no problems")),
        ("at intake", f"{s['decision_at_intake']['decision']} ({_codes(s['decision_at_intake']['reasons'])})"),
        ("decision now", f"{now['decision']} ({_codes(now['reasons'])})"),
        ("reasons", "\n".join(f"{r['code']}: {r['detail']}" for r in now["reasons"]) or "-"),
        ("clips in scope", f"{sum(clips.values())}" + (f" ({', '.join(f'{c} {n}' for c, n in sorted(clips.items()))})"
                                                      if clips else "")),
        ("data", ", ".join(now.get("data", [])) or "-"),
        ("owner actions", "\n".join(actions) or "none"),
        ("exports", "\n".join(exports) or "none"),
        ("holds", "\n".join(holds) or "none"),
    ]
    if now["decision"] in ("owner_review", "release"):
        # Exactly what `requests approve ID` would release now, or what the approval in force releases.
        codes = {r["code"] for r in now["reasons"]}
        title = ("an approval releases" if now["decision"] != "release" else
                 "approval releases" if "OWNER_APPROVED" in codes else "released")
        parts = [f"{c['clip']}  {c['camera']}  {human_time(c['start'])} .. {human_time(c['end'])}  "
                 f"sha256 {str(c.get('sha256') or '?')[:16]}..." for c in now.get("clips", [])]
        rows.append((title, "\n".join(parts) or "nothing (no finished clip in scope)"))
    print_fields(rows)


def _report(args: argparse.Namespace) -> int:
    from edge.actions import footage as actions

    report = actions.report(_desk(args), _parse_now(args.since))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"Footage requests{' since ' + report['since'] if report['since'] else ''}: {report['requests']}")
    for title, key in (("By legal basis", "by_basis"), ("By decision", "by_decision"),
                       ("By basis and decision", "by_basis_and_decision")):
        print(f"{title}:")
        for name, count in report[key].items():
            print(f"  {name}: {count}")
    print(f"Exports: {report['exports']}")
    print(f"Emergency releases: {report['exigent_releases']} (UNRATIFIED: {report['unratified']})")
    print(f"Preservation holds: {report['holds']} ({report['holds_active']} active)")
    return 0

