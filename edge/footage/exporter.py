"""Export bundles: in-scope segments cut to the windows, faces blurred, a signed manifest, encrypted to the agency.

The bundle format itself (an age-encrypted tar with a minisign-signed manifest and SHA256SUMS) is in
edge.footage.bundle, which the agency tool imports too; this module builds the files and streams them into it."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pyrage
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.clock import parse_rfc3339, rfc3339
from edge.errors import RequestError, StorageError
from edge.footage import bundle as fmt
from edge.footage.bundle import FORMAT, MANIFEST, NO_DEVICE_KEY, BundleError  # noqa: F401 (re-exported)
from edge.footage.policy import Decision, Segment
from edge.footage.redact import FaceLeak, FindFaces, Redactor, check_frame, redact_stream
from edge.types import Image

log = logging.getLogger(__name__)

AUDIO_NOTE = "audio: this device records no audio, so none is exported"


class ClipSource(Protocol):
    """The part of edge.recording.store.ClipStore an export reads."""

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
    data: bytes | None = field(default=None, repr=False)  # small files; a video is a file on disk (`path`)
    frames: int = 0
    faces_blurred: bool = True
    path: Path | None = None

    def member(self) -> fmt.Member:
        return fmt.Member(self.name, self.data, self.path)

    def read(self) -> bytes:
        return self.data if self.data is not None else Path(str(self.path)).read_bytes()

    def entry(self) -> dict[str, Any]:
        if self.data is not None:
            size, digest = len(self.data), hashlib.sha256(self.data).hexdigest()
        else:
            size, digest = Path(str(self.path)).stat().st_size, fmt.sha256_file(Path(str(self.path)))
        return {
            "path": self.name,
            "kind": self.kind,
            "camera": self.camera,
            "clip": self.clip,
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "frames": self.frames,
            "faces_blurred": self.faces_blurred,
            "size": size,
            "sha256": digest,
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
    from edge.recording.codec import probe

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
    from edge.recording.codec import decode_frames

    wanted, last = set(picked), picked[-1]
    index = -1
    # Not enumerate(), and the frame dropped after its yield: enumerate keeps its last tuple, and either would keep
    # a frame alive while the next one decodes (issue 15: each frame held is 2.7 MB at 1280x720).
    for _, image in decode_frames(path):
        index += 1
        if index > last:
            return
        if index in wanted:
            yield image
        del image


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
    # Two passes over the clip, one decoder at a time: the finder runs over every picked frame first (only its boxes
    # are kept), then the clip is decoded again and each frame blurred, checked and handed on; no decoded frame is
    # held for the carry window (issue 15, bounded memory).
    replay = _picked_images(path, picked)
    index = 0  # not enumerate(): it keeps its last (index, frame) tuple, and with it the recorded frame
    for out in redact_stream(_picked_images(path, picked), redactor, fps, replay=replay):
        leaked = check_frame(out.image, redactor, out.original)
        if leaked:
            boxes = ", ".join(f"{x},{y},{w},{h}" for x, y, w, h in leaked[:5])
            raise FaceLeak(
                f"export refused: after redaction the check detector ({redactor.names[1]}) still finds "
                f"{len(leaked)} face(s) in the {kind} of clip {clip}, frame {index} (x,y,w,h: {boxes}); nothing "
                "was exported. Export again with --keep-region x,y,w,h to pixelate everything outside a region "
                "you keep, or unblur the clip explicitly (requests approve --unblur) if that is intended",
                clip=clip, frame=index, kind=kind, boxes=leaked,
            )
        image = out.image
        del out  # the recorded frame goes now, not when the next one is ready
        yield image
        index += 1  # noqa: SIM113 (enumerate would keep the recorded frame: see above)


def _encode_video(images: Iterable[Image], times: Sequence[datetime], workdir: Path, stem: str) -> Path:
    """Encode frames (streamed) at their capture times into a finished, browser-playable file in `workdir`
    (never read into memory: the bundle streams it)."""
    from edge.recording.codec import choose_codec, make_encoder, remux
    from edge.recording.rawstream import RawStreamWriter, read_sidecar

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
    raw.unlink(missing_ok=True)
    side.unlink(missing_ok=True)
    return out


def _jpeg(image: Image) -> bytes:
    from edge.recording.codec import encode_jpeg

    return encode_jpeg(image, 90)


def build_files(
    decision: Decision,
    clips: ClipSource,
    find_faces: FindFaces | Redactor | None,
    workdir: Path,
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
    decision = _trusted_only(decision, clips, include_untrusted, notes)
    for segment in decision.segments:
        if not wants_images:
            break
        files.extend(_segment_files(decision, segment, clips, redactor, workdir, notes))
    if "event_metadata" in decision.data and decision.segments:
        files.append(_event_metadata(decision, clips))
    return files, notes


def _trusted_only(decision: Decision, clips: ClipSource, include_untrusted: bool, notes: list[str]) -> Decision:
    """The decision without the clips recorded while the clock was not trusted (unless the owner included them),
    with a note for each."""
    untrusted = {s.clip_id for s in decision.segments if not getattr(clips.get(s.clip_id), "trusted", True)}
    if untrusted and not include_untrusted:
        notes.extend(untrusted_note(clip_id) for clip_id in sorted(untrusted))
        return replace(decision, segments=tuple(s for s in decision.segments if s.clip_id not in untrusted))
    if untrusted:
        notes.extend(f"{c}: recorded while the device clock was not trusted; included by the owner"
                     for c in sorted(untrusted))
    return decision


def _segment_files(decision: Decision, segment: Segment, clips: ClipSource, redactor: Redactor | None,
                   workdir: Path, notes: list[str]) -> list[ExportFile]:
    """One segment's video (its frames inside the window, redacted and checked) and snapshot."""
    path, times = _clip_times(clips, segment)
    picked = select_frames(times, segment.start, segment.end)
    if not picked:
        span = f"{rfc3339(segment.start)}..{rfc3339(segment.end)}"
        notes.append(f"{segment.clip_id}: no frame captured inside {span}")
        return []
    files: list[ExportFile] = []
    blur = segment.clip_id not in decision.unblur
    kept_times = [times[i] for i in picked]
    redact = redactor if blur else None
    start, end = covered_range(times, picked, segment)
    stem = _stem(segment)
    fps = _fps(kept_times)
    wants_snapshot = "snapshots" in decision.data
    snapshot: bytes | None = None  # the video's first redacted (and checked) frame as a JPEG, never as a frame
    if "video" in decision.data:
        shown = _redacted(path, picked, redact, fps, segment.clip_id, "video")

        def keep_first(images: Iterator[Image]) -> Iterator[Image]:
            nonlocal snapshot
            for image in images:
                if snapshot is None and wants_snapshot:  # encoded at once: a JPEG, not a 2.7 MB frame, is kept
                    snapshot = _jpeg(image)
                yield image

        encoded = _encode_video(keep_first(shown), kept_times, workdir, stem)
        with open(encoded, "rb") as fh:
            suffix = ".mp4" if fh.read(8)[4:8] == b"ftyp" else ".webm"
        files.append(ExportFile(f"video/{stem}{suffix}", "video", segment.camera, segment.clip_id, start, end,
                                None, len(kept_times), blur, encoded))
    if wants_snapshot:
        if snapshot is None:  # no video: the first frame, redacted with the frames after it in view (carry)
            ahead = redact.carry_frames(fps) if redact is not None else 0
            snapshot = _jpeg(next(_redacted(path, picked[: 1 + ahead], redact, fps, segment.clip_id, "snapshot")))
        first_end = times[picked[0] + 1] if picked[0] + 1 < len(times) else segment.end
        files.append(ExportFile(f"snapshots/{stem}.jpg", "snapshots", segment.camera, segment.clip_id,
                                kept_times[0], min(first_end, segment.end), snapshot, 1, blur))
    return files


def _event_metadata(decision: Decision, clips: ClipSource) -> ExportFile:
    """event_metadata.json: the released segments and the events of the clips wholly inside them."""
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
    return ExportFile("event_metadata.json", "event_metadata", None, None, min(starts), max(ends), body, 0, True)


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
        "device": {"id": device_id, "signing_key": device_public,
                   "fingerprint": hashlib.sha256(base64.b64decode(device_public)).hexdigest()[:16]},
        "request": request,
        "decision": decision.to_dict(),
        "reasons": [{"code": r.code, "detail": r.detail} for r in decision.reasons],
        "policy_hash": decision.policy_hash,
        "approval": approval,
        "files": [f.entry() for f in files],
        "notes": list(notes),
    }


def _comment(manifest: dict[str, Any]) -> str:
    """minisign's trusted comment (signed, printed by `minisign -V`): when, which export, which device."""
    device = manifest["device"]
    stamp = int(parse_rfc3339(manifest["created_at"]).timestamp())
    text = f"timestamp:{stamp}\tdoorbell-edge export {manifest['export_id']}\tdevice:{device['id']}"
    return "".join(ch if ch.isprintable() or ch == "\t" else "?" for ch in text)


def _members(manifest: dict[str, Any], files: Sequence[ExportFile], device_key: Ed25519PrivateKey) -> list[fmt.Member]:
    return [*fmt.control_members(manifest, device_key, _comment(manifest)), *[f.member() for f in files]]


def seal_bundle_file(
    target: Path, manifest: dict[str, Any], files: Sequence[ExportFile], device_key: Ed25519PrivateKey,
    agency_public: str,
) -> tuple[str, int]:
    """Stream the bundle into `target` (created 0600, never over an existing file; fsynced with its folder):
    the files are read from disk in chunks and encrypted chunk by chunk, so memory stays bounded. Returns the
    bundle's sha256 and size. On any failure `target` is removed; a kill leaves it for _clean_partials."""
    from edge.fsutil import fsync_dir

    members = _members(manifest, files, device_key)
    recipient = fmt.recipient_of(agency_public)
    mtime = int(parse_rfc3339(manifest["created_at"]).timestamp())
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = fmt.write_bundle(out, members, recipient, mtime)
            out.flush()
            os.fsync(out.fileno())
        fsync_dir(target.parent)
    except BundleError as exc:
        target.unlink(missing_ok=True)
        raise StorageError(f"cannot write the bundle {target}: {exc}") from exc
    except Exception:
        target.unlink(missing_ok=True)
        raise
    return digest, size


def seal_bundle(
    manifest: dict[str, Any], files: Sequence[ExportFile], device_key: Ed25519PrivateKey, agency_public: str
) -> bytes:
    """The bundle in memory (tests and small bundles; the service streams with seal_bundle_file)."""
    out = io.BytesIO()
    fmt.write_bundle(out, _members(manifest, files, device_key), fmt.recipient_of(agency_public), 0)
    return out.getvalue()


# --- verifying (what the agency runs; `doorbell-edge-agency bundle open` uses edge.footage.bundle directly) ------


@dataclass(frozen=True)
class BundleCheck:
    ok: bool
    problems: tuple[str, ...]
    manifest: dict[str, Any] | None = None
    files: dict[str, bytes] = field(default_factory=dict, repr=False)


def load_identity(text: str) -> pyrage.x25519.Identity:
    """An agency identity: an age identity (AGE-SECRET-KEY-1...) or base64 of a raw X25519 private key."""
    try:
        return fmt.identity_of(text)
    except BundleError as exc:
        raise RequestError(str(exc)) from exc


def verify_bundle(
    data: bytes | Path,
    identity: Any = None,
    device_key: str | None = None,
    *,
    device_fingerprint: str | None = None,
    extract: Path | None = None,
) -> BundleCheck:
    """Decrypt with the agency identity (an age identity, or a raw X25519 private key in any object bytes()
    gives the 32 bytes of), check both minisign signatures against the device key the agency holds in advance
    (`device_key`: base64 raw, RW... minisign or PEM; or its `device_fingerprint`), every file's hash and size,
    that nothing unlisted is inside and that each file lies inside its released segment. Without a key or
    fingerprint the bundle fails: the key named in the manifest is the forger's choice. `extract`: a new
    folder the checked files are left in (else they are read into `files`, for small bundles)."""
    from edge.footage.keys import parse_fingerprint, parse_public_key

    try:
        expected = parse_public_key(_raw_key_text(device_key)) if device_key is not None else None
        expected_fp = parse_fingerprint(device_fingerprint) if device_fingerprint is not None else None
    except RequestError as exc:
        return BundleCheck(False, (str(exc),))
    if expected is None and expected_fp is None:
        return BundleCheck(False, (NO_DEVICE_KEY,))
    if identity is None:
        return BundleCheck(False, ("a bundle is encrypted to the agency: give its identity (--identity, the "
                                   "agency's age key file)",))
    if not isinstance(identity, pyrage.x25519.Identity):
        text = identity if isinstance(identity, str) else base64.b64encode(bytes(identity)).decode()
        try:
            identity = fmt.identity_of(text)
        except BundleError as exc:
            return BundleCheck(False, (str(exc),))
    scratch = Path(tempfile.mkdtemp(prefix="doorbell-bundle-"))
    try:
        source = data if isinstance(data, Path) else scratch / "in.bundle"
        if not isinstance(data, Path):
            source.write_bytes(data)
        target = extract if extract is not None else scratch / "out"
        try:
            opened = fmt.open_bundle(source, identity, target, device_key=expected, device_fingerprint=expected_fp)
        except BundleError as exc:
            return BundleCheck(False, (str(exc),))
        files = {} if extract is not None else {n: p.read_bytes() for n, p in opened.files.items()}
        return BundleCheck(True, (), opened.manifest, files)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _raw_key_text(text: str) -> str:
    """A device key given as a minisign public key (RW..., or its .pub file) as base64 of the raw key."""
    lines = [line.strip() for line in text.strip().splitlines() if not line.startswith("untrusted comment:")]
    if len(lines) == 1 and not lines[0].startswith("-----"):
        try:
            raw = base64.b64decode(lines[0], validate=True)
        except ValueError:
            return text
        if len(raw) == 42 and raw[:2] == b"Ed":
            return base64.b64encode(raw[10:]).decode()
    return text
