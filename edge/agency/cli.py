"""`doorbell-edge-agency`: the agency's command line (keygen, request new/check/sign, court sign).

A request is signed the standard way: a detached minisign signature over the exact bytes of the file
(FILE.minisig; a court's co-signature FILE.court.minisig), which `minisign -S` from Debian makes just the same.
Every signing refuses a request the device would refuse for its form or rules (edge/agency/check.py)."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from edge.agency.check import check_request, template
from edge.agency.encodings import spaced
from edge.agency.keygen import KeygenError, keygen, load_secret_key
from edge.clock import parse_rfc3339
from edge.footage.request import COURT_MINISIG_SUFFIX, MINISIG_SUFFIX

PROG = "doorbell-edge-agency"
EXTENSIONS = ("bundle",)


class AgencyError(Exception):
    """One line for the user, exit 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The agency's side of doorbell-edge footage requests: make keys, write, check and sign a "
        "request (docs/agency-guide.md). Needs none of the doorbell's camera or vision libraries.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("keygen", help="make the agency's signing key (minisign) and encryption key (age) in DIR; "
                                      "prints both public keys and their fingerprints")
    p.add_argument("dir", metavar="DIR", help="a new (or empty) folder; private key files are created mode 0600")
    p.set_defaults(func=_keygen)

    request = sub.add_parser("request", help="write, check and sign a footage request")
    rsub = request.add_subparsers(dest="request_command", metavar="ACTION")
    rsub.required = True
    p = rsub.add_parser("new", help="print the commented YAML template of a request")
    p.add_argument("--template", action="store_true", required=True,
                   help="print the template (the only form for now; redirect it to a file and fill it in)")
    p.add_argument("--device", metavar="FINGERPRINT", help="the doorbell's key fingerprint, filled in for you")
    p.add_argument("--agency", metavar="ID", help="your agency id as the owner listed it, filled in for you")
    p.set_defaults(func=_new)
    for name, helptext in (
        ("check", "check a request against the device's schema and rules; every finding as file:line:col"),
        ("sign", "check, then write FILE.minisig: a minisign signature over the file's exact bytes"),
    ):
        p = rsub.add_parser(name, help=helptext)
        p.add_argument("file", metavar="FILE", help="the request (YAML or JSON)")
        if name == "sign":
            p.add_argument("--key", required=True, metavar="KEY",
                           help="your minisign secret key (DIR/signing.key from keygen, or one `minisign -G` made)")
        p.add_argument("--now", metavar="TIME", help="check as of this RFC 3339 time (default: now)")
        p.set_defaults(func=_check if name == "check" else _sign)

    court = sub.add_parser("court", help="a court's co-signature on a warrant or court order")
    csub = court.add_subparsers(dest="court_command", metavar="ACTION")
    csub.required = True
    p = csub.add_parser("sign", help="check, then write FILE.court.minisig: the court's minisign signature over "
                                     "the file's exact bytes")
    p.add_argument("file", metavar="FILE", help="the request (YAML or JSON) the agency wrote")
    p.add_argument("--key", required=True, metavar="KEY", help="the court's minisign secret key")
    p.add_argument("--now", metavar="TIME", help="check as of this RFC 3339 time (default: now)")
    p.set_defaults(func=_court_sign)

    # Other commands live in their own modules of this package, each with register(subparsers): e.g.
    # edge/agency/bundle.py (`bundle open`). Listed here so the import graph stays explicit and light.
    for name in EXTENSIONS:
        if importlib.util.find_spec(f"edge.agency.{name}") is not None:
            importlib.import_module(f"edge.agency.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except (AgencyError, KeygenError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"{PROG}: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1


def _now(args: argparse.Namespace) -> datetime:
    if getattr(args, "now", None) is None:
        return datetime.now(UTC)
    try:
        return parse_rfc3339(args.now)
    except ValueError as exc:
        raise AgencyError(f"--now: {exc}") from exc


def _keygen(args: argparse.Namespace) -> int:
    keys = keygen(Path(args.dir))
    folder = Path(args.dir)
    print(f"wrote {folder}/signing.key and {folder}/encryption.key (mode 0600: keep them secret), "
          f"{folder}/signing.pub and {folder}/encryption.pub")
    print(f"signing key (minisign):  {keys.signing_public}")
    print(f"  fingerprint:           {keys.signing_fingerprint}   ({spaced(keys.signing_fingerprint)})")
    print(f"encryption key (age):    {keys.encryption_public}")
    print(f"  fingerprint:           {keys.encryption_fingerprint}   ({spaced(keys.encryption_fingerprint)})")
    print("Give both public keys (signing.pub, encryption.pub) to the doorbell's owner; the owner calls your "
          "published number and you read both fingerprints aloud (docs/agency-guide.md).")
    return 0


def _new(args: argparse.Namespace) -> int:
    if args.device is not None:
        from edge.footage.keys import parse_fingerprint

        try:
            args.device = parse_fingerprint(args.device)
        except Exception as exc:
            raise AgencyError(f"--device: {exc}") from exc
    sys.stdout.write(template(datetime.now(UTC), args.device, args.agency))
    return 0


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AgencyError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _report(path: str, raw: bytes, now: datetime) -> bool:
    """Print every finding; True when nothing would make the device refuse the request."""
    findings = check_request(raw, now)
    for finding in findings:
        print(finding.render(path), file=sys.stderr)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        print(f"{path}: {len(errors)} problem(s); a doorbell would refuse this request", file=sys.stderr)
    return not errors


def _check(args: argparse.Namespace) -> int:
    raw = _read(args.file)
    if not _report(args.file, raw, _now(args)):
        return 1
    print(f"{args.file}: OK (the schema and rules a doorbell checks by itself, against its default limits)")
    return 0


def _write_signature(target: Path, data: bytes) -> None:
    """Temp file, fsync, rename: a kill or a full disk leaves the old signature or none, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sign_bytes(raw: bytes, key_path: Path, name: str, timestamp: int | None = None) -> bytes:
    """The text of a minisign signature (prehashed, as minisign 0.11 makes by default) over `raw`."""
    key = load_secret_key(key_path)
    stamp = int(time.time()) if timestamp is None else timestamp
    signature = key.sign(raw, prehash=True, untrusted_comment="signature from doorbell-edge-agency",
                         trusted_comment=f"timestamp:{stamp}\tfile:{name}\thashed")
    return bytes(signature) + b"\n"


def _sign_as(args: argparse.Namespace, suffix: str, who: str) -> int:
    path = Path(args.file)
    raw = _read(args.file)
    if not _report(args.file, raw, _now(args)):
        raise AgencyError(f"not signed: fix the problems above first ({who} signature)")
    from edge.footage.request import load_document

    if "signatures" in load_document(raw):
        raise AgencyError(f"{path} carries embedded signatures; the detached signature would be refused with "
                          "them: remove the `signatures` field")
    target = path.with_name(path.name + suffix)
    _write_signature(target, sign_bytes(raw, Path(args.key), path.name))
    print(f"wrote {target} ({who} signature over the exact bytes of {path.name}; change nothing in it now)")
    return 0


def _sign(args: argparse.Namespace) -> int:
    return _sign_as(args, MINISIG_SUFFIX, "agency")


def _court_sign(args: argparse.Namespace) -> int:
    return _sign_as(args, COURT_MINISIG_SUFFIX, "court")


if __name__ == "__main__":
    raise SystemExit(main())
