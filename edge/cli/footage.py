"""`doorbell-edge requests | exports | audit` subcommands: the owner's local interface to footage requests."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from edge.errors import RequestError

OWNER_COMMANDS = frozenset({"approve", "deny", "ratify", "export", "renew-hold", "release-hold"})


def register(subparsers: Any) -> None:
    from edge.cli.common import add_config_arg

    requests = subparsers.add_parser("requests", help="footage requests: evaluate, submit, approve, deny, report")
    rsub = requests.add_subparsers(dest="requests_command", metavar="ACTION")
    rsub.required = True

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

    exports = subparsers.add_parser("exports", help="export bundles: verify (agency side), keygen")
    esub = exports.add_subparsers(dest="exports_command", metavar="ACTION")
    esub.required = True
    p = esub.add_parser("verify", help="decrypt a bundle and check its signature and every file's hash")
    p.add_argument("bundle", metavar="BUNDLE", help="the export bundle file")
    p.add_argument("--identity", default=None, metavar="FILE",
                   help="the agency's age identity file (AGE-SECRET-KEY-1..., from `doorbell-edge-agency keygen` or "
                   "`age-keygen`; an older base64 X25519 private key file works too)")
    p.add_argument("--device-key", default=None, metavar="KEY",
                   help="the device's Ed25519 public key as the owner gave it to you in advance (base64, RW... "
                   "minisign or PEM, or "
                   "a file holding either; `doorbell-edge keys show` prints it); this or --device-fingerprint is "
                   "required")
    p.add_argument("--device-fingerprint", default=None, metavar="HEX",
                   help="the device key's 16-hex-digit fingerprint, when you hold only that (weaker than the key)")
    p.add_argument("--extract", default=None, metavar="DIR",
                   help="after a clean check, write the files into this directory")
    p.set_defaults(func=_verify_bundle)
    p = esub.add_parser("keygen", help="agency side: make an X25519 identity file; prints its public key")
    p.add_argument("identity", metavar="IDENTITY", help="where to write the private key (created with mode 0600)")
    p.set_defaults(func=_keygen)

    keys = subparsers.add_parser("keys", help="the device's signing key: what agencies check bundles against")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    ksub.required = True
    p = ksub.add_parser("show", help="print the device's public signing key (base64, PEM) and its fingerprint; "
                                     "creates the key the first time")
    p.add_argument("--json", action="store_true", help="print the key, PEM and fingerprint as JSON")
    p.add_argument("--qr", action="store_true", help="also draw the fingerprint and key as a QR code in the "
                   "terminal (needs segno: pip install 'doorbell-edge[qr]')")
    add_config_arg(p)
    p.set_defaults(func=_keys_show)

    agencies = subparsers.add_parser("agencies", help="the agencies whose requests this doorbell considers")
    gsub = agencies.add_subparsers(dest="agencies_command", metavar="ACTION")
    gsub.required = True
    p = gsub.add_parser("add", help="print (or --write into the config, keeping its comments) an agency's entry "
                                    "and the key fingerprints to compare with the agency by phone")
    p.add_argument("id", metavar="ID", help="the agency id its requests carry in agency.id (e.g. metro-pd)")
    p.add_argument("--name", default=None, help="the agency's name as you know it (default: ID)")
    p.add_argument("--signing-key", required=True, metavar="KEY",
                   help="its signing public key: minisign (RW...), base64 of the raw 32 bytes or PEM, or a file "
                   "holding it (signing.pub from `doorbell-edge-agency keygen`)")
    p.add_argument("--encryption-key", required=True, metavar="KEY",
                   help="its encryption public key: an age recipient (age1...) or base64 of the raw 32 bytes, or a "
                   "file holding it (encryption.pub)")
    p.add_argument("--write", action="store_true",
                   help="add the entry to the config file (the one --config names) in place, keeping comments")
    add_config_arg(p)
    p.set_defaults(func=_agencies_add)

    audit = subparsers.add_parser("audit", help="the footage audit log")
    asub = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    asub.required = True
    p = asub.add_parser("verify", help="check the hash chain and that it agrees with the request store both ways; "
                                       "non-zero exit naming the first bad record or disagreement")
    p.add_argument("--against", action="append", default=[], metavar="CHECKPOINT_FILE|SEQ:HASH",
                   help="a head witnessed earlier: a signed checkpoint file (`audit checkpoint`), the retained MQTT "
                   "head saved as JSON, or SEQ:HASH (hex or base64); the log must hold that record with that hash, "
                   "so a log cut back or a state dir restored from an older copy fails (repeatable)")
    p.add_argument("--checkpoint-key", default=None, metavar="VKEY|FILE",
                   help="the verifier key that checks a checkpoint's signature (the .pub file `audit checkpoint-key` "
                   "wrote, or its one line; default /etc/doorbell-edge/audit-checkpoint.pub)")
    add_config_arg(p)
    p.set_defaults(func=_audit_verify)
    p = asub.add_parser("checkpoint", help="sign the audit log's current head (record count and hash) with the "
                                           "checkpoint key, as a C2SP signed note; run by root or the owner")
    p.add_argument("--key", default=None, metavar="FILE",
                   help="the checkpoint signing key (default /etc/doorbell-edge/audit-checkpoint.key; keep it where "
                   "the daemon's user cannot read it)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="write the checkpoint to this file (default: print it); keep it off the state dir")
    add_config_arg(p)
    p.set_defaults(func=_audit_checkpoint)
    p = asub.add_parser("checkpoint-key", help="make the checkpoint signing key (mode 0600) and its verifier key "
                                               "(FILE.pub, public)")
    p.add_argument("key", metavar="FILE", help="where to write the signing key, e.g. "
                   "/etc/doorbell-edge/audit-checkpoint.key (never overwritten)")
    add_config_arg(p)
    p.set_defaults(func=_audit_checkpoint_key)
    p = asub.add_parser("repair", help="move a torn last record (a power cut mid-append) aside into a kept file "
                                       "and record the repair; refuses any other damage")
    add_config_arg(p)
    p.set_defaults(func=_audit_repair)
    p = asub.add_parser("show", help="the audit records, one line each (--json: the records as stored)")
    p.add_argument("--json", action="store_true", help="print the records exactly as stored, one JSON object a line")
    add_config_arg(p)
    p.set_defaults(func=_audit_show)


# --- helpers -----------------------------------------------------------------------------------------------


def _desk(args: argparse.Namespace) -> Any:
    from edge.config_load import load_config
    from edge.footage.desk import FootageDesk

    config = load_config(args.config)
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
    desk = _desk(args)
    _print_decision(desk.evaluate(_read(args.file), _parse_now(args.now)), args.json)
    return 0


def _submit(args: argparse.Namespace) -> int:
    desk = _desk(args)
    request, decision = desk.submit(_read(args.file))
    if decision.decision == "release":
        # Only an auto-released verified warrant is released at intake: the owner chose this in the config.
        result = desk.export(request)
        if not args.json:
            _print_decision(decision, False, request)
            print(f"  exported: {result.path}")
            return 0
        print(json.dumps({"id": request, **decision.to_dict(), "export": str(result.path)}, indent=2))
        return 0
    _print_decision(decision, args.json, request)
    return 0


def _approve(args: argparse.Namespace) -> int:
    desk = _desk(args)
    decision = desk.approve(args.id, clips=args.clips, cameras=args.cameras, data=args.data, unblur=args.unblur,
                            attest_original=args.attest_original)
    _print_decision(decision, args.json, args.id)
    if decision.decision == "release" and not args.json:
        # The clip lines above are exactly what this approval releases (recorded with their sha256).
        print(f"  this approval releases the {len(decision.segments)} clip part(s) above and nothing else; a clip "
              "that finishes later, or one whose content changes, needs a new approval")
        print(f"  next: doorbell-edge requests export {args.id}")
    return 0


def _deny(args: argparse.Namespace) -> int:
    desk = _desk(args)
    _print_decision(desk.deny(args.id, args.reason), args.json, args.id)
    return 0


def _ratify(args: argparse.Namespace) -> int:
    desk = _desk(args)
    _print_decision(desk.ratify(args.id, args.reference), False, args.id)
    return 0


def _export(args: argparse.Namespace) -> int:
    from edge.footage.redact import parse_region

    keep = parse_region(args.keep_region) if args.keep_region else None  # a typo fails before anything starts
    desk = _desk(args)
    result = desk.export(args.id, Path(args.out) if args.out else None,
                         include_untrusted=args.include_untrusted_time, keep=keep)
    if args.json:
        print(json.dumps({"path": str(result.path), "sha256": result.sha256, "export_id": result.export_id,
                          "files": result.manifest["files"]}, indent=2))
    else:
        print(f"{result.path}\n  sha256 {result.sha256}\n  {len(result.manifest['files'])} file(s)")
    return 0


def _renew(args: argparse.Namespace) -> int:
    desk = _desk(args)
    hold = desk.renew_hold(args.id)
    print(f"{args.id}: hold renewed ({hold or 'no clips in scope'})")
    return 0


def _release_hold(args: argparse.Namespace) -> int:
    desk = _desk(args)
    lifted = desk.release_hold(args.id, args.reason)
    print(f"{args.id}: hold(s) lifted: {', '.join(lifted)}; the clips are subject to retention again")
    return 0


def _list(args: argparse.Namespace) -> int:
    desk = _desk(args)
    desk.sweep()
    rows = desk.rows() if desk.store.exists() else []
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
    desk = _desk(args)
    desk.sweep()
    summary = desk.summary(args.id)
    state = next((row.get("state") for row in desk.rows() if row["id"] == args.id), None)
    if state is not None and "state" not in summary:
        summary["state"] = state  # where it stands, as `requests list` says it
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0


def _codes(reasons: list[dict[str, Any]]) -> str:
    return ", ".join(str(r.get("code")) for r in reasons) or "-"


def _print_summary(s: dict[str, Any]) -> None:
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
        ("agency", f"{s.get('agency') or '-'}" + (f" ({doc['agency']['name']})" if doc.get("agency") else "")),
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
    desk = _desk(args)
    desk.sweep()
    report = desk.report(_parse_now(args.since))
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


def _verify_bundle(args: argparse.Namespace) -> int:
    from edge.footage.bundle import summary_lines
    from edge.footage.exporter import load_identity, verify_bundle

    try:
        identity = load_identity(Path(args.identity).read_text()) if args.identity else None
        if not Path(args.bundle).is_file():
            raise RequestError(f"cannot read {args.bundle}: no such file")
    except OSError as exc:
        raise RequestError(f"cannot read {exc.filename}: {exc.strerror}") from exc
    extract = Path(args.extract) if args.extract else None
    check = verify_bundle(Path(args.bundle), identity, _device_key_arg(args.device_key),
                          device_fingerprint=args.device_fingerprint, extract=extract)
    if not check.ok:
        for problem in check.problems:
            print(f"{args.bundle}: {problem}", file=sys.stderr)
        return 1
    manifest = check.manifest or {}
    from edge.footage.keys import fingerprint

    signer = fingerprint(base64.b64decode(manifest["device"]["signing_key"]))
    print(f"{args.bundle}: OK, signed by device {manifest['device']['id']} key {manifest['device']['signing_key']} "
          f"(fingerprint {signer}), the key you gave; every file's sha256 matches")
    for line in summary_lines(manifest):
        print(f"  {line}")
    if extract is not None:
        print(f"extracted into {extract} (check it again with: cd {extract} && sha256sum -c SHA256SUMS)")
    return 0


def _device_key_arg(value: str | None) -> str | None:
    """--device-key: the key itself (base64 or PEM), or a file holding it."""
    if value is None or value.strip().startswith("-----BEGIN"):
        return value
    path = Path(value)
    if path.is_file():  # base64 may contain "/", so only an existing file counts as one
        try:
            return path.read_text()
        except OSError as exc:
            raise RequestError(f"--device-key: cannot read {value}: {exc.strerror or exc}") from exc
    return value


def _keys_show(args: argparse.Namespace) -> int:
    from edge.config_load import load_config
    from edge.footage.bundle import minisign_public
    from edge.footage.keys import device_key, key_fingerprint, key_path, public_key_b64, public_key_pem, public_raw

    config = load_config(args.config)
    key = device_key(Path(config.state_dir))
    body = {"device": config.device.id, "public_key": public_key_b64(key), "pem": public_key_pem(key),
            "fingerprint": key_fingerprint(key), "algorithm": "Ed25519",
            "minisign": minisign_public(public_raw(key)),
            "fingerprint_rule": "first 16 hex digits of SHA-256 of the raw 32-byte public key",
            "path": str(key_path(Path(config.state_dir)))}
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    print(f"device:      {body['device']}")
    print(f"fingerprint: {body['fingerprint']}")
    print(f"public key:  {body['public_key']}  (Ed25519, base64 of the raw 32 bytes)")
    print(f"minisign:    {body['minisign']}  (the same key as a minisign public key: `minisign -V -P`)")
    print(body["pem"].rstrip())
    print("Give the public key (or at least the fingerprint) to an agency before it asks for footage: it checks "
          "bundles with `doorbell-edge exports verify BUNDLE --identity FILE --device-key KEY`.")
    if args.qr:
        _print_qr(f"doorbell-edge device {body['device']}\nfingerprint {body['fingerprint']}\n"
                  f"Ed25519 {body['public_key']}")
    return 0


def _print_qr(text: str) -> None:
    try:
        import segno
    except ImportError as exc:
        raise RequestError("--qr needs the segno package: pip install segno (or 'doorbell-edge[qr]'); the key and "
                           "fingerprint above are the same thing in text") from exc
    sys.stdout.flush()
    segno.make(text, error="m").terminal(out=sys.stdout, compact=True)


def _agencies_add(args: argparse.Namespace) -> int:
    from edge.agency.config_entry import AgencyEntry, EntryError, insert_entry, write_config
    from edge.agency.encodings import age_recipient, spaced
    from edge.config_load import load_config_text, resolve_config_path

    try:
        entry = AgencyEntry.parse(args.id, args.name or args.id, args.signing_key, args.encryption_key)
    except EntryError as exc:
        raise RequestError(str(exc)) from exc
    print(f"agency {entry.agency_id} ({entry.name})")
    print(f"  signing key fingerprint:    {spaced(entry.signing_fingerprint)}")
    recipient = age_recipient(entry.encryption_raw)
    print(f"  encryption key fingerprint: {spaced(entry.encryption_fingerprint)}   ({recipient})")
    print("Before you trust these keys, call the agency on its published number (not one from the request or an "
          "e-mail) and have them read both fingerprints to you; they must match digit for digit. Read them your "
          "doorbell's fingerprint (`doorbell-edge keys show`) in the same call.")
    if not args.write:
        print("\nThe entry for your config file (or run again with --write):\n")
        print(entry.block(), end="")
        return 0
    path, _explicit = resolve_config_path(args.config)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RequestError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc
    try:
        new = insert_entry(text, entry)
    except EntryError as exc:
        raise RequestError(f"{path}: {exc}") from exc
    config = load_config_text(new, str(path))  # a ConfigError here names the problem; nothing is written
    added = config.footage_requests.agencies.get(entry.agency_id)
    if added is None or base64.b64decode(added.signing_key) != entry.signing_raw:
        raise RequestError(f"{path}: the entry did not read back as written; add it by hand")
    write_config(path, new)
    print(f"\nadded agency {entry.agency_id} to {path} (commands use it at once, the daemon at its next start)")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from nacl.public import PrivateKey

    key = PrivateKey.generate()
    try:
        fd = os.open(args.identity, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise RequestError(f"{args.identity} exists; not overwriting an identity") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(bytes(key)).decode() + "\n")
    print(base64.b64encode(bytes(key.public_key)).decode())
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    from edge.footage.audit import check_against

    desk = _desk(args)
    witnessed_ok = True
    for spec in args.against:
        seq, digest, what = _witnessed_head(spec, args.checkpoint_key, desk.config.device.id)
        result = check_against(desk.audit.path, seq, digest)
        if result.ok:
            print(f"{desk.audit.path}: holds record {seq} with the hash {what} gives it")
        else:
            witnessed_ok = False
            print(f"{result.message(desk.audit.path)} (against {what})", file=sys.stderr)
    ok, message = desk.verify_audit()
    ok = ok and witnessed_ok
    print(message, file=sys.stdout if ok else sys.stderr)
    if not ok and desk.audit.torn():
        print("the last record is torn (a power cut while it was written): `doorbell-edge audit repair` moves it "
              "aside and records the repair", file=sys.stderr)
    return 0 if ok else 1


def _witnessed_head(spec: str, vkey: str | None, device_id: str) -> tuple[int, str, str]:
    """--against: (seq, hash, how to name it) from SEQ:HASH, a signed checkpoint file, or a saved MQTT head."""
    import re

    from edge.footage import checkpoint
    from edge.footage.audit import normalise_hash, parse_head

    if re.fullmatch(r"\d+:\S+", spec.strip()) and not Path(spec).exists():
        try:
            seq, digest = parse_head(spec)
        except ValueError as exc:
            raise RequestError(f"--against: {exc}") from exc
        return seq, digest, f"the witnessed head {seq}:{digest[:16]}..."
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestError(f"--against {spec}: neither SEQ:HASH nor a readable file ({exc})") from exc
    if text.lstrip().startswith("{"):  # the retained <prefix>/audit/head payload, saved by a subscriber
        try:
            head = json.loads(text)
            seq, digest = int(head["seq"]), normalise_hash(str(head["hash"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise RequestError(f"--against {spec}: not an audit head ({{\"seq\": N, \"hash\": HEX}}): {exc}") from exc
        return seq, digest, f"the witnessed head in {spec} ({seq}:{digest[:16]}...)"
    key_text = vkey if vkey is not None else str(checkpoint.DEFAULT_VKEY)
    if "+" not in key_text or Path(key_text).exists():
        try:
            key_text = Path(key_text).read_text(encoding="utf-8")
        except OSError as exc:
            raise RequestError(f"--against {spec}: a checkpoint is checked with its verifier key, and "
                               f"{key_text} cannot be read ({exc.strerror or exc}); give --checkpoint-key") from exc
    try:
        note = checkpoint.open_note(text, checkpoint.parse_vkey(key_text), checkpoint.origin_for(device_id))
    except checkpoint.CheckpointError as exc:
        raise RequestError(f"--against {spec}: {exc}") from exc
    when = f", signed {note.time}" if note.time else ""
    return note.size, note.head_hash, f"the checkpoint {spec} ({note.size}:{note.head_hash[:16]}...{when})"


def _audit_checkpoint(args: argparse.Namespace) -> int:
    from edge.clock import SystemClock
    from edge.config_load import load_config
    from edge.footage import checkpoint
    from edge.footage.audit import AuditLog, verify_log

    config = load_config(args.config)
    log = AuditLog(Path(config.state_dir), SystemClock())
    try:
        result = verify_log(log.path, log.head_path)
        records = log.records()
    except OSError as exc:
        raise RequestError(f"cannot read the audit log {log.path}: {exc.strerror or exc} (run as root or as the "
                           "owner of the state dir)") from exc
    if not result.ok:  # never vouch for a head whose chain does not hold
        print(f"not signed: {result.message(log.path)}", file=sys.stderr)
        return 1
    signer = checkpoint.read_key(Path(args.key) if args.key else checkpoint.DEFAULT_KEY)
    digest = str(records[-1]["hash"]) if records else "0" * 64
    note = checkpoint.make(checkpoint.origin_for(config.device.id), result.records, digest, signer,
                           SystemClock().now())
    if args.out is None:
        sys.stdout.write(note)
        return 0
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(note, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        raise RequestError(f"cannot write the checkpoint to {out}: {exc.strerror or exc}") from exc
    print(f"{out}: checkpoint of record {result.records} ({digest[:16]}...) signed by {signer.name}")
    return 0


def _audit_checkpoint_key(args: argparse.Namespace) -> int:
    from edge.config_load import load_config
    from edge.footage import checkpoint

    config = load_config(args.config)
    signer = checkpoint.generate(checkpoint.origin_for(config.device.id))
    public = checkpoint.write_key(Path(args.key), signer)
    print(f"{args.key}: checkpoint signing key (mode 0600; keep it where the daemon's user cannot read it)")
    print(f"{public}: verifier key: {signer.verifier}")
    return 0


def _audit_repair(args: argparse.Namespace) -> int:
    import logging

    from edge.errors import StorageError

    desk = _desk(args)
    try:
        record = desk.audit.repair(by=desk.actor)
    except StorageError as exc:
        print(f"not repaired: {exc}", file=sys.stderr)
        return 1
    if record is None:
        print(f"{desk.audit.path}: no torn record; nothing to repair")
    else:
        data = record["data"]
        logging.getLogger(__name__).warning("audit repair: record %s, %s torn byte(s) kept in %s", record["seq"],
                                            data["torn_bytes"], data["kept"])
        print(f"{desk.audit.path}: {data['torn_bytes']} torn byte(s) after record {data['after_record']} moved to "
              f"{desk.audit.dir / data['kept']} (sha256 {data['torn_sha256']}); repair recorded as record "
              f"{record['seq']}")
    ok, message = desk.verify_audit()
    print(message, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def _audit_show(args: argparse.Namespace) -> int:
    from edge.config_load import load_config
    from edge.footage.audit import LOG_NAME

    config = load_config(args.config)
    path = Path(config.state_dir) / "audit" / LOG_NAME
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    if args.json:
        sys.stdout.write(text)
        return 0
    if not text:
        print(f"no audit records ({path} does not exist yet)")
        return 0
    from edge.cli.common import human_time

    lines = text.splitlines()
    width = len(str(len(lines)))
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            data = record["data"]
            print(f"#{record['seq']:<{width}}  {human_time(record['ts'])}  {record['kind']:<15} "
                  f"{data.get('request') or '-':<12} {_audit_details(data)}".rstrip())
        except (ValueError, KeyError, TypeError, AttributeError):
            print(f"line {number}: not a readable record (run `doorbell-edge audit verify`)")
    print(f"{len(lines)} record(s) in {path}; `doorbell-edge audit verify` checks the chain")
    return 0


def _audit_details(data: dict[str, Any]) -> str:
    """A record's data on one line: short values as key=value, lists as counts, hashes shortened."""
    parts = []
    for key, value in data.items():
        if key in ("request", "policy_hash") or value is None or value == [] or value == "":
            continue
        if isinstance(value, list) and len(value) <= 3 and all(isinstance(v, str) and len(v) <= 20 for v in value):
            parts.append(f"{key}={','.join(value)}")  # a few short words (data kinds), not ids
        elif isinstance(value, list):
            parts.append(f"{key}={len(value)}")
        elif isinstance(value, dict):
            parts.append(f"{key}={{{len(value)}}}")
        elif isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            parts.append(f"{key}={value[:12]}...")
        elif isinstance(value, str) and len(value) > 60:
            parts.append(f"{key}={value[:57]!r}...")
        else:
            parts.append(f"{key}={value}")
    return " ".join(parts)
