"""`doorbell-edge-agency bundle open`: decrypt an export bundle, check it against the device key the agency was
given in advance, extract the files and say what is in them.

The same checks can be done with Debian's age, tar, minisign and sha256sum alone (docs/agency-guide.md); this
command does them in one step and refuses a bundle when any fails. The format is edge/footage/bundle.py
(docs/formats.md, "Export bundles"); this module, like the rest of the agency tool, imports nothing heavy."""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any

from edge.footage.bundle import NO_DEVICE_KEY, BundleError, identity_of, minisign_public, open_bundle, summary_lines


def register(sub: Any) -> None:
    bundle = sub.add_parser("bundle", help="open an export bundle a doorbell sent you")
    bsub = bundle.add_subparsers(dest="bundle_command", metavar="ACTION")
    bsub.required = True
    p = bsub.add_parser(
        "open", help="decrypt, check the signatures against the device key you hold and every file's sha256, "
                     "extract the videos and print what the bundle holds")
    p.add_argument("bundle", metavar="BUNDLE", help="the .bundle file (an age-encrypted tar)")
    p.add_argument("--identity", required=True, metavar="KEY",
                   help="your age identity file (DIR/encryption.key from keygen, or one `age-keygen` made)")
    p.add_argument("--device-key", metavar="KEY",
                   help="the doorbell's signing key as its owner gave it to you before (RW... minisign, base64 of "
                        "the raw 32 bytes, PEM, or a file holding one): the bundle must be signed by it")
    p.add_argument("--device-fingerprint", metavar="FP",
                   help="only the doorbell's 16-hex-digit fingerprint, when that is all you hold (weaker)")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder for the checked files; "
                   "nothing is written there unless every check passes")
    p.set_defaults(func=_open)


def _device_key(value: str) -> bytes:
    from edge.agency.encodings import KeyFormatError, signing_key_raw

    text = value
    path = Path(value)
    if not value.strip().startswith(("-----BEGIN", "RW")) and path.is_file():
        try:
            text = path.read_text()
        except OSError as exc:
            raise BundleError(f"--device-key: cannot read {value}: {exc.strerror or exc}") from exc
    try:
        return signing_key_raw(text)
    except KeyFormatError as exc:
        raise BundleError(f"--device-key: {exc}") from exc


def _open(args: argparse.Namespace) -> int:
    from edge.agency.cli import AgencyError

    try:
        if args.device_key is None and args.device_fingerprint is None:
            raise BundleError(NO_DEVICE_KEY)
        device = _device_key(args.device_key) if args.device_key is not None else None
        fingerprint = None
        if args.device_fingerprint is not None:
            from edge.errors import RequestError
            from edge.footage.keys import parse_fingerprint

            try:
                fingerprint = parse_fingerprint(args.device_fingerprint)
            except RequestError as exc:
                raise BundleError(f"--device-fingerprint: {exc}") from exc
        try:
            identity = identity_of(Path(args.identity).read_text())
        except OSError as exc:
            raise BundleError(f"--identity: cannot read {args.identity}: {exc.strerror or exc}") from exc
        if not Path(args.bundle).is_file():
            raise BundleError(f"{args.bundle}: no such file")
        opened = open_bundle(Path(args.bundle), identity, Path(args.out), device_key=device,
                             device_fingerprint=fingerprint)
    except BundleError as exc:
        raise AgencyError(f"{args.bundle}: refused: {exc}") from exc
    print(f"{args.bundle}: OK: signed by the doorbell key {opened.signed_by} you hold, every file's sha256 "
          f"matches the signed manifest; extracted into {args.out}")
    print(f"signed:     {opened.trusted_comment}")
    for line in summary_lines(opened.manifest):
        print(line)
    key = minisign_public(base64.b64decode(opened.manifest["device"]["signing_key"]))
    print(f"Check again with standard tools: cd {args.out} && minisign -V -P {key} -m manifest.json && "
          f"minisign -V -P {key} -m SHA256SUMS && sha256sum -c SHA256SUMS")
    sys.stdout.flush()
    return 0
