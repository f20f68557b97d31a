"""The export bundle format (doorbell-edge-export/2): an age-encrypted tar that standard tools open and check.

    NAME.bundle = age (X25519 recipient: the agency's key) of an uncompressed POSIX tar holding, in this order:
      manifest.json          canonical JSON (RFC 8785): format, export, device, request, decision, files + sha256
      manifest.json.minisig  minisign signature (prehashed, "ED") by the device key
      SHA256SUMS             `sha256sum -c` input for every other file: the same hashes the manifest lists
      SHA256SUMS.minisig     minisign signature by the device key
      video/CAMERA/...mp4, snapshots/CAMERA/...jpg, event_metadata.json

Written as a stream (tar headers made here, file bodies read in chunks, pyrage encrypting chunk by chunk), and
read as one: memory stays bounded whatever the clip length (docs/formats.md, "Export bundles").

The device key is Ed25519 (edge.footage.keys); as a minisign key its key id is the 8 bytes of its fingerprint, so
the minisign public key (`RW...`) follows from the raw key alone. Signatures are made with the `cryptography`
Ed25519 primitive in minisign's documented format and checked with py-minisign (and Debian's minisign in tests).

This module is imported by the agency tool: it must stay free of OpenCV, numpy, PyNaCl and the daemon."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import minisign
import pyrage
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

FORMAT = "doorbell-edge-export/2"
KNOWN_FORMATS = (FORMAT,)
MANIFEST = "manifest.json"
MANIFEST_SIG = "manifest.json.minisig"
SUMS = "SHA256SUMS"
SUMS_SIG = "SHA256SUMS.minisig"
CONTROL = (MANIFEST, MANIFEST_SIG, SUMS, SUMS_SIG)
CHUNK = 1 << 16
_BLOCK = 512
_RECORD = 20 * _BLOCK  # what tar and Python's tarfile pad an archive to

NO_DEVICE_KEY = (
    "no device key given: a bundle's manifest names the key that signed it, so checking it against that key "
    "proves only that someone signed it, not that this doorbell did; pass the device's public key as the owner "
    "gave it to you (--device-key KEY or FILE, from `doorbell-edge keys show` on the device) or at least its "
    "fingerprint (--device-fingerprint HEX)"
)


class BundleError(Exception):
    """A bundle that cannot be opened or checked; the message says what is wrong."""


# --- keys and minisign --------------------------------------------------------------------------------------


def _fingerprint(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def key_id(raw_public: bytes) -> bytes:
    """The minisign key id of the device key: the 8 bytes of its fingerprint (first 8 of SHA-256 of the key)."""
    return hashlib.sha256(raw_public).digest()[:8]


def minisign_public(raw_public: bytes) -> str:
    """The device key as a minisign public key (`RW...`: base64 of "Ed" + key id + the raw 32-byte key)."""
    if len(raw_public) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw_public)}")
    return base64.b64encode(b"Ed" + key_id(raw_public) + raw_public).decode()


def minisign_public_file(raw_public: bytes) -> str:
    """The two-line .pub file `minisign -V -p FILE` reads."""
    return f"untrusted comment: doorbell-edge device key {_fingerprint(raw_public)}\n{minisign_public(raw_public)}\n"


def minisign_sign(key: Ed25519PrivateKey, data: bytes, trusted_comment: str) -> bytes:
    """A minisign signature file over `data`: prehashed (BLAKE2b-512, algorithm "ED", minisign 0.11's default),
    with the global signature over the signature and the trusted comment, as minisign documents it."""
    if "\n" in trusted_comment or "\r" in trusted_comment:
        raise ValueError("a trusted comment is one line")
    from edge.footage.keys import public_raw

    raw = public_raw(key)
    signature = key.sign(hashlib.blake2b(data, digest_size=64).digest())
    global_signature = key.sign(signature + trusted_comment.encode())
    lines = (
        f"untrusted comment: signature from doorbell-edge device {_fingerprint(raw)}",
        base64.b64encode(b"ED" + key_id(raw) + signature).decode(),
        f"trusted comment: {trusted_comment}",
        base64.b64encode(global_signature).decode(),
    )
    return ("\n".join(lines) + "\n").encode()


def minisign_verify(raw_public: bytes, data: bytes, signature: bytes, name: str) -> str:
    """Check a minisign signature with py-minisign; returns the trusted comment, raises BundleError."""
    try:
        public = minisign.PublicKey.from_base64(minisign_public(raw_public))
        parsed = minisign.Signature.from_bytes(signature)
        public.verify(data, parsed)
    except (minisign.Error, ValueError) as exc:
        raise BundleError(f"{name}: the signature does not verify with the device key {_fingerprint(raw_public)} "
                          f"({exc})") from exc
    return str(parsed.trusted_comment)


# --- writing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One file of the tar: its bytes, or a file on disk read in chunks when the tar is streamed."""

    name: str
    data: bytes | None = field(default=None, repr=False)
    path: Path | None = None

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else Path(str(self.path)).stat().st_size

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        with open(str(self.path), "rb") as fh:
            while block := fh.read(CHUNK):
                yield block


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _header(member: Member, size: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(member.name)
    info.size, info.mtime, info.mode, info.type = size, mtime, 0o644, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT)


def _tar_blocks(members: Sequence[Member], mtime: int) -> Iterator[bytes]:
    """The tar archive of `members`, piece by piece: header, body in chunks, padding; two zero blocks and the
    record padding at the end (as `tar` and tarfile write it)."""
    total = 0
    for member in members:
        size = member.size
        head = _header(member, size, mtime)
        total += len(head)
        yield head
        written = 0
        for chunk in member.chunks():
            written += len(chunk)
            if written > size:
                raise BundleError(f"{member.name} grew while it was being bundled")
            yield chunk
        if written != size:
            raise BundleError(f"{member.name} changed size while it was being bundled ({size} -> {written})")
        pad = -size % _BLOCK
        total += size + pad
        yield b"\0" * pad
    end = 2 * _BLOCK
    end += -(total + end) % _RECORD
    yield b"\0" * end


class _Stream(io.RawIOBase):
    """A read-only file over an iterator of byte strings (what pyrage.encrypt_io pulls from)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            piece = next(self._pieces, None)
            if piece is None:
                return 0
            self._buffer = piece
        count = min(len(target), len(self._buffer))
        target[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        return count


class _HashingWriter:
    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self._fh.write(data)
        return len(data)

    def flush(self) -> None:
        self._fh.flush()


def sums_text(entries: Sequence[dict[str, Any]]) -> bytes:
    """SHA256SUMS as `sha256sum` writes it (text mode: two spaces), one line per file, in manifest order."""
    for entry in entries:
        _check_name(str(entry["path"]))
    return "".join(f"{e['sha256']}  {e['path']}\n" for e in entries).encode()


def control_members(manifest: dict[str, Any], key: Ed25519PrivateKey, comment: str) -> list[Member]:
    """manifest.json, SHA256SUMS and their signatures (the trusted comment names the file it belongs to)."""
    manifest_bytes = bytes(rfc8785.dumps(manifest))
    sums = sums_text(manifest["files"])
    return [
        Member(MANIFEST, manifest_bytes),
        Member(MANIFEST_SIG, minisign_sign(key, manifest_bytes, f"{comment}\tfile:{MANIFEST}")),
        Member(SUMS, sums),
        Member(SUMS_SIG, minisign_sign(key, sums, f"{comment}\tfile:{SUMS}")),
    ]


def recipient_of(encryption_key: str) -> pyrage.x25519.Recipient:
    """The agency's X25519 key as the config stores it (base64 of the raw 32 bytes) or an age1... recipient."""
    text = encryption_key.strip()
    if not text.startswith("age1"):
        raw = base64.b64decode(text, validate=True)
        if len(raw) != 32:
            raise ValueError(f"an X25519 public key is 32 bytes, not {len(raw)}")
        text = _bech32("age", raw)
    return pyrage.x25519.Recipient.from_str(text)


def write_bundle(out: IO[bytes], members: Sequence[Member], recipient: pyrage.x25519.Recipient,
                 mtime: int) -> tuple[str, int]:
    """Stream the encrypted tar of `members` into `out`; returns the sha256 and size of what was written."""
    writer = _HashingWriter(out)
    try:
        pyrage.encrypt_io(_Stream(_tar_blocks(members, mtime)), writer, [recipient])
    except pyrage.EncryptError as exc:
        raise BundleError(f"cannot encrypt the bundle: {exc}") from exc
    return writer.sha256.hexdigest(), writer.size


# --- reading and checking ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """A bundle that passed every check: its manifest, and where each file was written."""

    manifest: dict[str, Any]
    files: dict[str, Path]
    signed_by: str  # the fingerprint of the device key the signatures verify with
    trusted_comment: str


def identity_of(text: str) -> pyrage.x25519.Identity:
    """An agency identity: an age identity file (AGE-SECRET-KEY-1..., comments allowed, as `age-keygen` and
    `doorbell-edge-agency keygen` write it) or base64 of a raw 32-byte X25519 private key (older key files)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(lines) != 1:
        raise BundleError(f"an identity file holds one key (AGE-SECRET-KEY-1...), found {len(lines)} lines")
    line = lines[0]
    if not line.upper().startswith("AGE-SECRET-KEY-1"):
        try:
            raw = base64.b64decode(line, validate=True)
        except ValueError as exc:
            raise BundleError("the identity is neither an age identity (AGE-SECRET-KEY-1...) nor base64") from exc
        if len(raw) != 32:
            raise BundleError(f"the identity must be an age identity or a 32-byte X25519 private key, not {len(raw)} "
                              "bytes")
        line = _bech32("age-secret-key-", raw).upper()
    try:
        return pyrage.x25519.Identity.from_str(line)
    except pyrage.IdentityError as exc:
        raise BundleError(f"not a valid age identity: {exc}") from exc


def _bech32(hrp: str, raw: bytes) -> str:
    import bech32

    words = bech32.convertbits(raw, 8, 5)
    assert words is not None
    return str(bech32.bech32_encode(hrp, words))


def _check_name(name: str) -> None:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or any(ord(c) < 32 for c in name):
        raise BundleError(f"unsafe file name in the bundle: {name!r}")


def expected_key(device_key: bytes | None, device_fingerprint: str | None, named: Any) -> bytes:
    """The key the signatures must verify with: the one the agency holds in advance, or (given only its
    fingerprint) the key the manifest names when it has that fingerprint. Never the named key on its own."""
    if device_key is None and device_fingerprint is None:
        raise BundleError(NO_DEVICE_KEY)
    try:
        named_raw = base64.b64decode(str(named), validate=True)
    except ValueError:
        named_raw = b""
    shown = _fingerprint(named_raw) if len(named_raw) == 32 else "<not an Ed25519 key>"
    if device_key is not None:
        if named_raw != device_key:
            raise BundleError(f"signed by key {shown}, not by the device key {_fingerprint(device_key)} you gave: "
                              "not from that doorbell")
        return device_key
    if len(named_raw) != 32 or _fingerprint(named_raw) != device_fingerprint:
        raise BundleError(f"signed by key {shown}, not by the device with fingerprint {device_fingerprint}: not from "
                          "that doorbell")
    return named_raw


def decrypt_to(bundle: Path, identity: pyrage.x25519.Identity, out: IO[bytes]) -> None:
    with open(bundle, "rb") as src:
        if src.read(len(b"age-encryption.org/")) != b"age-encryption.org/":
            raise BundleError(f"{bundle} is not an age-encrypted file, so not a {FORMAT} bundle (a bundle from "
                              "doorbell-edge before format 2 is a NaCl sealed zip: open it with that version)")
        src.seek(0)
        try:
            pyrage.decrypt_io(src, out, [identity])
        except (pyrage.DecryptError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise  # a real I/O error (a full disk while writing), not a bad bundle
            raise BundleError(f"cannot decrypt {bundle}: not encrypted to this identity, or altered on the way "
                              f"({exc})") from exc


def open_bundle(bundle: Path, identity: pyrage.x25519.Identity, out_dir: Path, *, device_key: bytes | None = None,
                device_fingerprint: str | None = None) -> Opened:
    """Decrypt, check everything, extract into `out_dir` (created; it must not exist or be empty). Nothing is
    left in `out_dir` unless every check passed: files go to a hidden sibling folder renamed at the end."""
    if device_key is None and device_fingerprint is None:
        raise BundleError(NO_DEVICE_KEY)  # before decrypting anything
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise BundleError(f"{out_dir} exists and is not an empty folder; give a new folder for the opened bundle")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.opening-", dir=out_dir.parent))
    try:
        os.chmod(work, 0o700)
        opened = _open_into(bundle, identity, work, device_key, device_fingerprint)
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return Opened(opened.manifest, {n: out_dir / n for n in opened.files}, opened.signed_by, opened.trusted_comment)


def _open_into(bundle: Path, identity: pyrage.x25519.Identity, work: Path, device_key: bytes | None,
               device_fingerprint: str | None) -> Opened:
    plain = work / ".bundle.tar"
    with open(plain, "wb") as fh:
        decrypt_to(bundle, identity, fh)
    control: dict[str, bytes] = {}
    hashes: dict[str, tuple[str, int]] = {}
    try:
        with tarfile.open(plain, "r:") as archive:
            for info in archive:
                _check_name(info.name)
                if info.name in control or info.name in hashes:
                    raise BundleError(f"{info.name} is in the bundle twice")
                if not info.isfile():
                    raise BundleError(f"{info.name}: not a regular file (links and devices are never in a bundle)")
                source = archive.extractfile(info)
                assert source is not None
                if info.name in CONTROL:
                    if info.size > 16 << 20:
                        raise BundleError(f"{info.name} is {info.size} bytes: not a bundle this tool reads")
                    control[info.name] = source.read()
                    continue
                target = work / info.name
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with open(target, "wb") as dst:
                    while block := source.read(CHUNK):
                        digest.update(block)
                        dst.write(block)
                hashes[info.name] = (digest.hexdigest(), info.size)
    except tarfile.TarError as exc:
        raise BundleError(f"the decrypted bundle is not a readable tar archive ({exc})") from exc
    finally:
        plain.unlink(missing_ok=True)
    missing = [n for n in CONTROL if n not in control]
    if missing:
        raise BundleError(f"{', '.join(missing)} missing from the bundle")
    manifest, signer, comment = check_control(control, device_key, device_fingerprint)
    problems = check_files(manifest, hashes)
    if problems:
        raise BundleError("; ".join(problems))
    for name, body in control.items():
        (work / name).write_bytes(body)
    return Opened(manifest, {n: work / n for n in hashes}, signer, comment)


def check_control(control: dict[str, bytes], device_key: bytes | None,
                  device_fingerprint: str | None) -> tuple[dict[str, Any], str, str]:
    """The manifest's format, signer and signatures, and that SHA256SUMS says what the manifest says."""
    try:
        manifest = json.loads(control[MANIFEST])
        if not isinstance(manifest, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        raise BundleError(f"{MANIFEST} is not readable JSON ({exc})") from exc
    version = manifest.get("format")
    if version not in KNOWN_FORMATS:
        raise BundleError(f"unknown bundle format {version!r}: this tool reads {', '.join(KNOWN_FORMATS)}; a newer "
                          "doorbell-edge-agency may read it (nothing was extracted)")
    key = expected_key(device_key, device_fingerprint, (manifest.get("device") or {}).get("signing_key"))
    comment = minisign_verify(key, control[MANIFEST], control[MANIFEST_SIG], MANIFEST)
    minisign_verify(key, control[SUMS], control[SUMS_SIG], SUMS)
    if control[MANIFEST] != bytes(rfc8785.dumps(manifest)):
        raise BundleError(f"{MANIFEST} is not in canonical form")
    entries = manifest.get("files")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "path" in e for e in entries):
        raise BundleError(f"{MANIFEST}: files is not a list of files")
    if control[SUMS] != sums_text(entries):
        raise BundleError(f"{SUMS} does not list exactly the files and hashes of {MANIFEST}")
    return manifest, _fingerprint(key), comment


def check_files(manifest: dict[str, Any], hashes: dict[str, tuple[str, int]]) -> list[str]:
    """Every listed file present with its hash and size, nothing unlisted, every file of a released kind and
    inside a released segment."""
    problems: list[str] = []
    listed = {str(e["path"]): e for e in manifest["files"]}
    for extra in sorted(set(hashes) - set(listed)):
        problems.append(f"{extra}: in the bundle but not in the manifest")
    decision = manifest.get("decision") or {}
    segments = decision.get("clips") or []
    allowed = set(decision.get("data") or [])
    for name, entry in listed.items():
        if name not in hashes:
            problems.append(f"{name}: listed but missing")
            continue
        digest, size = hashes[name]
        if digest != entry.get("sha256") or size != entry.get("size"):
            problems.append(f"{name}: sha256 or size does not match the manifest")
        if entry.get("kind") not in allowed or entry.get("kind") == "face_data":
            problems.append(f"{name}: kind {entry.get('kind')!r} was not released")
        if entry.get("clip") is not None and not any(
            s.get("clip") == entry.get("clip")
            and s.get("camera") == entry.get("camera")
            and str(s.get("start")) <= str(entry.get("start"))
            and str(entry.get("end")) <= str(s.get("end"))
            for s in segments
        ):
            problems.append(f"{name}: its time range is outside the released segments")
    return problems


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """What an opened bundle holds, for people: request, decision, cameras, windows, files."""
    request = manifest.get("request") or {}
    decision = manifest.get("decision") or {}
    device = manifest.get("device") or {}
    lines = [
        f"export:     {manifest.get('export_id')} made {manifest.get('created_at')} by device {device.get('id')}",
        f"request:    {request.get('request_id')} ({request.get('legal_basis')}, case {request.get('case_number')}) "
        f"from agency {request.get('agency')}; device's id {request.get('id')}",
        f"decision:   {decision.get('decision')} ("
        + ", ".join(str(r.get("code")) for r in manifest.get("reasons") or []) + ")",
        f"cameras:    {', '.join(request.get('cameras') or []) or '-'}",
    ]
    for window in request.get("windows") or []:
        lines.append(f"window:     {window.get('start')} .. {window.get('end')}")
    approval = manifest.get("approval")
    if approval:
        lines.append(f"approval:   #{approval.get('seq')} at {approval.get('at')}"
                     + (f", unblurred: {', '.join(approval['unblurred'])}" if approval.get("unblurred") else ""))
    for entry in manifest.get("files") or []:
        blur = "faces blurred" if entry.get("faces_blurred") else "FACES NOT BLURRED (owner's decision)"
        what = f"{entry.get('frames')} frame(s), {blur}" if entry.get("kind") in ("video", "snapshots") else "metadata"
        lines.append(f"file:       {entry.get('path')}  {entry.get('camera') or '-'}  {entry.get('start')} .. "
                     f"{entry.get('end')}  {what}")
    for note in manifest.get("notes") or []:
        lines.append(f"note:       {note}")
    return lines
