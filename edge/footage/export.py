"""Export bundles: in-scope segments cut to the windows, faces blurred, a signed manifest, sealed to the agency."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

from edge.clock import rfc3339
from edge.errors import RequestError, StorageError
from edge.footage.policy import Decision, Segment
from edge.footage.redact import FaceLeak, FindFaces, Redactor, check_frame, redact_stream
from edge.types import Image

log = logging.getLogger(__name__)

FORMAT = "doorbell-edge-export/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
AUDIO_NOTE = "audio: this device records no audio, so none is exported"


class ClipSource(Protocol):
    """The part of edge.clipstore.ClipStore an export reads."""

    def get(self, clip_id: str) -> Any: ...
    def frame_times(self, clip_id: str) -> list[datetime]: ...
    def verify(self, clip_id: str) -> bool: ...


@dataclass(frozen=True)
class ExportFile:
    name: str
    kind: str  # video | snapshots | event_metadata
    camera: str | None
    clip: str | None
    start: datetime
    end: datetime
    data: bytes = field(repr=False)
    frames: int = 0
    faces_blurred: bool = True

    def entry(self) -> dict[str, Any]:
        return {
            "path": self.name,
            "kind": self.kind,
            "camera": self.camera,
            "clip": self.clip,
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "frames": self.frames,
            "faces_blurred": self.faces_blurred,
            "size": len(self.data),
            "sha256": hashlib.sha256(self.data).hexdigest(),
        }


# --- pure cutting ------------------------------------------------------------------------------------------


def select_frames(times: Sequence[datetime], start: datetime, end: datetime) -> list[int]:
    """Indices (ascending) of the frames captured inside [start, end): each frame's time is compared with the
    window, so frame times that are not in order (a clip recorded across a clock step by an older version)
    can never pull a frame from outside the window in."""
    return [i for i, ts in enumerate(times) if start <= ts < end]


def covered_range(times: Sequence[datetime], picked: Sequence[int], segment: Segment) -> tuple[datetime, datetime]:
    """The UTC range the picked frames show: the earliest picked frame to the first frame time after the
    latest picked one (in time, not in list order), never past the segment."""
    chosen = [times[i] for i in picked]
    first, last = min(chosen), max(chosen)
    later = [t for t in times if t > last]
    end = min(later) if later else segment.end
    return first, min(end, segment.end)


def untrusted_note(clip_id: str) -> str:
    return (
        f"{clip_id}: recorded while the device clock was not trusted (docs/time.md); excluded. The owner can "
        "include it explicitly (requests export --include-untrusted-time, recorded in the audit log)"
    )


# --- building ----------------------------------------------------------------------------------------------


def _stem(segment: Segment) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in segment.clip_id)[:80]
    return f"{segment.camera}/{safe}_{segment.start.strftime('%Y%m%dT%H%M%S%fZ')}"


def _clip_times(clips: ClipSource, segment: Segment) -> tuple[Path, list[datetime]]:
    """The segment's clip file and its frames' capture times, after checking the file is the one recorded and
    decodes to exactly that many frames (so frame i of the decoder is frame i of the list)."""
    from edge.encoder import probe

    ref = clips.get(segment.clip_id)
    if not clips.verify(segment.clip_id):
        raise StorageError(f"clip {segment.clip_id} does not match its recorded sha256; not exported")
    times = clips.frame_times(segment.clip_id)
    decodable = probe(Path(ref.path))[0]
    if decodable != len(times):
        raise StorageError(
            f"clip {segment.clip_id}: {decodable} decodable frames but {len(times)} frame times; not exported"
        )
    return Path(ref.path), times


def _picked_images(path: Path, picked: Sequence[int]) -> Iterator[Image]:
    """The decoded frames at the given (ascending) indices, one at a time: a long clip is never held in
    memory whole (five minutes of 640x480 would be 2.7 GB of frames). Frames between picked ones are skipped."""
    from edge.encoder import decode_frames

    wanted, last = set(picked), picked[-1]
    for index, (_, image) in enumerate(decode_frames(path)):
        if index > last:
            return
        if index in wanted:
            yield image


def _fps(times: Sequence[datetime]) -> float:
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
    return (len(times) - 1) / span if span > 0 else 10.0


def _redacted(
    path: Path, picked: Sequence[int], redactor: Redactor | None, fps: float, clip: str, kind: str
) -> Iterator[Image]:
    """The picked frames, faces blurred when a redactor is given (None: the owner released the clip unblurred),
    each redacted frame scanned by the redactor's independent check detector: any face it still finds raises
    FaceLeak, so nothing of that export is written."""
    if redactor is None:
        yield from _picked_images(path, picked)
        return
    for index, out in enumerate(redact_stream(_picked_images(path, picked), redactor, fps)):
        leaked = check_frame(out.image, redactor)
        if leaked:
            boxes = ", ".join(f"{x},{y},{w},{h}" for x, y, w, h in leaked[:5])
            raise FaceLeak(
                f"export refused: after redaction the check detector ({redactor.names[1]}) still finds "
                f"{len(leaked)} face(s) in the {kind} of clip {clip}, frame {index} (x,y,w,h: {boxes}); nothing "
                "was exported. Export again with --keep-region x,y,w,h to pixelate everything outside a region "
                "you keep, or unblur the clip explicitly (requests approve --unblur) if that is intended",
                clip=clip, frame=index, kind=kind, boxes=leaked,
            )
        yield out.image


def _encode_video(images: Iterable[Image], times: Sequence[datetime], workdir: Path, stem: str) -> bytes:
    """Encode frames (streamed) at their capture times into a finished, browser-playable file's bytes."""
    from edge.encoder import RawStreamWriter, choose_codec, make_encoder, read_sidecar, remux

    codec = choose_codec("auto")
    fps = _fps(times)
    base = workdir / stem.replace("/", "_")
    raw, side, out = base.with_suffix(".raw"), base.with_suffix(".frames"), base.with_suffix(codec.suffix)
    for path in (raw, side, out):
        path.unlink(missing_ok=True)
    encoder = writer = None
    count = 0
    try:
        for image, ts in zip(images, times, strict=False):
            if encoder is None or writer is None:
                height, width = image.shape[:2]
                encoder = make_encoder(codec, width, height, fps, 1.0, "medium")
                writer = RawStreamWriter(raw, side, codec, width, height)
                encoder.request_keyframe()
            for packet in encoder.encode(image, ts, 0.0):
                writer.write(packet)
            count += 1
    finally:
        if encoder is not None:
            encoder.close()
        if writer is not None:
            writer.close()
    if count != len(times):
        raise StorageError(f"{stem}: {count} frames decoded for {len(times)} frame times; not exported")
    remux(raw, read_sidecar(side), out, codec)
    return out.read_bytes()


def build_files(
    decision: Decision,
    clips: ClipSource,
    find_faces: FindFaces | Redactor | None,
    workdir: Path,
    events_for: Any = None,
    include_untrusted: bool = False,
) -> tuple[list[ExportFile], list[str]]:
    """Every file the decision allows, and notes for the manifest. Faces are blurred unless the owner
    unblurred that clip; when blurring is needed and no detector is given, nothing is built. A Redactor's check
    detector scans every redacted frame and snapshot and raises FaceLeak on a face (a bare find_faces callable
    is a Redactor without a check). Clips recorded
    while the clock was not trusted are left out (a note says so) unless `include_untrusted`."""
    files: list[ExportFile] = []
    notes: list[str] = []
    redactor = find_faces if isinstance(find_faces, Redactor) or find_faces is None else Redactor(find_faces)
    wants_images = any(k in decision.data for k in ("video", "snapshots"))
    if wants_images and find_faces is None and any(s.clip_id not in decision.unblur for s in decision.segments):
        raise RequestError("no face detector available: refusing to export footage with faces unblurred")
    if "audio" in decision.data:
        notes.append(AUDIO_NOTE)
    workdir.mkdir(parents=True, exist_ok=True)
    untrusted = {s.clip_id for s in decision.segments if not getattr(clips.get(s.clip_id), "trusted", True)}
    if untrusted and not include_untrusted:
        notes.extend(untrusted_note(clip_id) for clip_id in sorted(untrusted))
        decision = replace(decision, segments=tuple(s for s in decision.segments if s.clip_id not in untrusted))
    elif untrusted:
        notes.extend(f"{c}: recorded while the device clock was not trusted; included by the owner"
                     for c in sorted(untrusted))
    for segment in decision.segments:
        if not wants_images:
            break
        path, times = _clip_times(clips, segment)
        picked = select_frames(times, segment.start, segment.end)
        if not picked:
            span = f"{rfc3339(segment.start)}..{rfc3339(segment.end)}"
            notes.append(f"{segment.clip_id}: no frame captured inside {span}")
            continue
        blur = segment.clip_id not in decision.unblur
        kept_times = [times[i] for i in picked]
        redact = redactor if blur else None
        start, end = covered_range(times, picked, segment)
        stem = _stem(segment)
        fps = _fps(kept_times)
        first: Image | None = None  # the snapshot: the video's first redacted (and checked) frame
        if "video" in decision.data:
            shown = _redacted(path, picked, redact, fps, segment.clip_id, "video")

            def keep_first(images: Iterator[Image]) -> Iterator[Image]:
                nonlocal first
                for image in images:
                    if first is None:
                        first = image
                    yield image

            data = _encode_video(keep_first(shown), kept_times, workdir, stem)
            suffix = ".mp4" if data[4:8] == b"ftyp" else ".webm"
            files.append(ExportFile(f"video/{stem}{suffix}", "video", segment.camera, segment.clip_id, start, end,
                                    data, len(kept_times), blur))
        if "snapshots" in decision.data:
            from edge.encoder import encode_jpeg

            if first is None:  # no video: the first frame, redacted with the frames after it in view (carry)
                ahead = redact.carry_frames(fps) if redact is not None else 0
                first = next(_redacted(path, picked[: 1 + ahead], redact, fps, segment.clip_id, "snapshot"))
            first_end = times[picked[0] + 1] if picked[0] + 1 < len(times) else segment.end
            files.append(ExportFile(f"snapshots/{stem}.jpg", "snapshots", segment.camera, segment.clip_id,
                                    kept_times[0], min(first_end, segment.end), encode_jpeg(first, 90), 1, blur))
    if "event_metadata" in decision.data and decision.segments:
        entries = []
        for segment in decision.segments:
            entry: dict[str, Any] = segment.to_dict()
            ref = clips.get(segment.clip_id)
            # Event ids are only listed when the whole clip lies inside the window: a clip's events carry no
            # times here, so one from a partly covered clip could be from outside the window.
            inside = ref.start >= segment.start and ref.end <= segment.end
            entry["events"] = list(ref.events) if inside else None
            entries.append(entry)
        body = json.dumps({"segments": entries}, indent=2, sort_keys=True).encode()
        starts = [s.start for s in decision.segments]
        ends = [s.end for s in decision.segments]
        files.append(ExportFile("event_metadata.json", "event_metadata", None, None, min(starts), max(ends), body,
                                0, True))
    return files, notes


def build_manifest(
    *,
    export_id: str,
    created: datetime,
    device_id: str,
    device_public: str,
    request: dict[str, Any],
    decision: Decision,
    approval: dict[str, Any] | None,
    files: Sequence[ExportFile],
    notes: Sequence[str],
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "export_id": export_id,
        "created_at": rfc3339(created),
        "device": {"id": device_id, "signing_key": device_public},
        "request": request,
        "decision": decision.to_dict(),
        "reasons": [{"code": r.code, "detail": r.detail} for r in decision.reasons],
        "policy_hash": decision.policy_hash,
        "approval": approval,
        "files": [f.entry() for f in files],
        "notes": list(notes),
    }


def _zip(members: Sequence[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def seal_bundle(
    manifest: dict[str, Any], files: Sequence[ExportFile], device_key: Ed25519PrivateKey, agency_public_b64: str
) -> bytes:
    """Zip the manifest, its Ed25519 signature and the files; seal the zip to the agency's X25519 key."""
    manifest_bytes = bytes(rfc8785.dumps(manifest))
    signature = base64.b64encode(device_key.sign(manifest_bytes))
    members = [(MANIFEST, manifest_bytes), (SIGNATURE, signature), *[(f.name, f.data) for f in files]]
    recipient = PublicKey(base64.b64decode(agency_public_b64, validate=True))
    return bytes(SealedBox(recipient).encrypt(_zip(members)))


# --- verifying (what the agency runs) ----------------------------------------------------------------------


@dataclass(frozen=True)
class BundleCheck:
    ok: bool
    problems: tuple[str, ...]
    manifest: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict, repr=False)


def load_identity(text: str) -> PrivateKey:
    """An agency identity: the base64 X25519 private key (32 bytes), as written by `exports keygen`."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError("identity is not base64") from exc
    if len(raw) != 32:
        raise RequestError(f"identity must be a 32-byte X25519 private key, not {len(raw)} bytes")
    return PrivateKey(raw)


NO_DEVICE_KEY = (
    "no device key given: a bundle's manifest names the key that signed it, so checking it against that key "
    "proves only that someone signed it, not that this doorbell did; pass the device's public key as the owner "
    "gave it to you (--device-key KEY or FILE, from `doorbell-edge keys show` on the device) or at least its "
    "fingerprint (--device-fingerprint HEX)"
)


def verify_bundle(
    data: bytes,
    identity: PrivateKey | None = None,
    device_key: str | None = None,
    *,
    device_fingerprint: str | None = None,
) -> BundleCheck:
    """Decrypt (when given the agency identity), then check the manifest signature against the device key the
    agency holds in advance (`device_key`: base64 raw or PEM; or its `device_fingerprint`), every file's hash
    and size, that nothing unlisted is inside, and that each file lies inside its released segment. Without a
    key or fingerprint the bundle fails: the key named in the manifest is the forger's choice."""
    from edge.footage.keys import fingerprint, parse_fingerprint, parse_public_key

    try:
        expected = parse_public_key(device_key) if device_key is not None else None
        expected_fp = parse_fingerprint(device_fingerprint) if device_fingerprint is not None else None
    except RequestError as exc:
        return BundleCheck(False, (str(exc),))
    if expected is None and expected_fp is None:
        return BundleCheck(False, (NO_DEVICE_KEY,))
    if identity is not None:
        try:
            data = SealedBox(identity).decrypt(data)
        except CryptoError:
            return BundleCheck(False, ("cannot decrypt: wrong identity, or the bundle was altered",))
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
    except (zipfile.BadZipFile, ValueError, OSError):
        hint = "" if identity is not None else " (an encrypted bundle needs --identity)"
        return BundleCheck(False, (f"not a bundle archive{hint}",))
    problems: list[str] = []
    if MANIFEST not in members or SIGNATURE not in members:
        return BundleCheck(False, ("manifest.json or manifest.sig missing",))
    try:
        manifest = json.loads(members[MANIFEST])
        named = base64.b64decode(manifest["device"]["signing_key"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        return BundleCheck(False, ("manifest unreadable",))
    trusted: bytes | None = None
    if expected is not None:
        trusted = expected  # the signature is checked with the key held in advance, whatever the manifest says
        if named != expected:
            problems.append(f"signed by key {_fp(named)}, not by the device key {fingerprint(expected)} you gave: "
                            "not from that doorbell")
    elif len(named) == 32 and fingerprint(named) == expected_fp:
        trusted = named
    else:
        problems.append(f"signed by key {_fp(named)}, not by the device with fingerprint {expected_fp}: "
                        "not from that doorbell")
    if trusted is not None:
        try:
            public = Ed25519PublicKey.from_public_bytes(trusted)
            public.verify(base64.b64decode(members[SIGNATURE], validate=True), members[MANIFEST])
        except (InvalidSignature, ValueError, binascii.Error):
            problems.append("manifest signature does not verify")
    if members[MANIFEST] != bytes(rfc8785.dumps(manifest)):
        problems.append("manifest is not in canonical form")
    listed: dict[str, Any] = {
        str(f.get("path")): f for f in manifest.get("files", []) if isinstance(f, dict)
    }
    for extra in sorted(set(members) - {MANIFEST, SIGNATURE} - set(listed)):
        problems.append(f"{extra}: in the bundle but not in the manifest")
    segments = manifest.get("decision", {}).get("clips", [])
    allowed = set(manifest.get("decision", {}).get("data", []))
    for name, entry in listed.items():
        content = members.get(name)
        if content is None:
            problems.append(f"{name}: listed but missing")
            continue
        if hashlib.sha256(content).hexdigest() != entry.get("sha256") or len(content) != entry.get("size"):
            problems.append(f"{name}: sha256 or size does not match the manifest")
        if entry.get("kind") not in allowed or entry.get("kind") == "face_data":
            problems.append(f"{name}: kind {entry.get('kind')!r} was not released")
        if entry.get("clip") is not None and not any(
            s.get("clip") == entry.get("clip")
            and s.get("camera") == entry.get("camera")
            and s.get("start") <= entry.get("start")
            and entry.get("end") <= s.get("end")
            for s in segments
        ):
            problems.append(f"{name}: its time range is outside the released segments")
    files = {n: b for n, b in members.items() if n not in (MANIFEST, SIGNATURE)}
    return BundleCheck(not problems, tuple(problems), manifest, files)


def _fp(raw: bytes) -> str:
    from edge.footage.keys import fingerprint

    return fingerprint(raw) if len(raw) == 32 else f"<{len(raw)} bytes, not an Ed25519 key>"
