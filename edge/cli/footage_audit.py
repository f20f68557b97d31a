"""`doorbell-edge audit ...`: verify, checkpoint, repair and show the footage audit log (edge.actions.audit)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from edge.cli.common import load_config_for
from edge.cli.footage import _desk
from edge.errors import RequestError
from edge.layout import StateLayout


def register(subparsers: Any) -> None:
    from edge.cli.common import add_config_arg

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


def _audit_verify(args: argparse.Namespace) -> int:
    from edge.actions import audit as actions

    desk = _desk(args)
    heads = [actions.WitnessedHead(*_witnessed_head(spec, args.checkpoint_key, desk.config.device.id))
             for spec in args.against]
    result = actions.verify(desk, heads)
    for check in result.witnessed:
        print(check.message, file=sys.stdout if check.ok else sys.stderr)
    print(result.message, file=sys.stdout if result.ok else sys.stderr)
    if result.torn:
        print("the last record is torn (a power cut while it was written): `doorbell-edge audit repair` moves it "
              "aside and records the repair", file=sys.stderr)
    return 0 if result.ok else 1


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
    from edge.footage import checkpoint
    from edge.footage.audit import AuditLog, verify_log

    config = load_config_for(args)
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
    from edge.footage import checkpoint

    config = load_config_for(args)
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
    config = load_config_for(args)
    path = StateLayout.of(config.state_dir).audit_log
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
