"""`doorbell-edge exports | keys | agencies`: bundles checked as the agency does, the device key, agency entries."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

from edge.cli.common import load_config_for
from edge.errors import RequestError


def register(subparsers: Any) -> None:
    from edge.cli.common import add_config_arg

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
    from edge.footage.bundle import minisign_public
    from edge.footage.keys import device_key, key_fingerprint, key_path, public_key_b64, public_key_pem, public_raw

    config = load_config_for(args)
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
