"""One clip being written: its raw parts, snapshots beside it, the remux into the final file, the writer lock."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import StorageError
from edge.fsutil import fsync_dir
from edge.permissions import PRIVATE_FILE, private_dir
from edge.recording.codec import CodecChoice, EncodedFrame, last_duration_us, probe, remux
from edge.recording.rawstream import RawStreamWriter, frames_in_stream, read_sidecar

if TYPE_CHECKING:
    from edge.recording.refs import ClipRef
    from edge.recording.store import ClipStore

log = logging.getLogger(__name__)

RAW = ".raw.part"
SIDECAR = ".frames.part"
TMP = ".tmp"


def part(final: Path, suffix: str) -> Path:
    """A clip's work file beside its final name: the raw stream, the frame list, the remux under way."""
    return final.with_name(final.name + suffix)


class ClipWriter:
    """One clip being recorded: append frames, note events and snapshots, then finish()."""

    def __init__(
        self,
        store: ClipStore,
        clip_id: str,
        camera: str,
        final: Path,
        codec: CodecChoice,
        raw: RawStreamWriter,
        trusted: bool = True,
    ) -> None:
        self.store = store
        self.trusted = trusted
        self.id = clip_id
        self.camera = camera
        self.final = final
        self.codec = codec
        self._raw = raw
        self.first_ts: datetime | None = None
        self.last_ts: datetime | None = None
        self.event_ids: set[str] = set()
        self.event_types: list[str] = []

    @property
    def frames(self) -> int:
        return self._raw.frames

    def write(self, frame: EncodedFrame) -> None:
        try:
            self._raw.write(frame)
        except OSError as exc:
            raise StorageError(f"clip {self.id}: cannot write frame: {exc}") from exc
        if self.first_ts is None:
            self.first_ts = frame.ts
        self.last_ts = frame.ts

    def mark_untrusted(self) -> None:
        """A frame of this clip was stamped while the wall clock was not trusted."""
        if self.trusted:
            self.trusted = False
            self.store.mark_untrusted(self.id)

    def add_event(self, event_id: str, event_type: str, ts: datetime) -> None:
        if event_id not in self.event_ids:
            self.event_ids.add(event_id)
            self.event_types.append(event_type)
            self.store.add_event(self.id, event_id, event_type, ts)

    def add_snapshot(self, event_id: str, ts: datetime, jpeg: bytes) -> Path:
        """Write the event's JPEG beside the clip (temp name, fsync, rename) and index it."""
        try:
            path = write_snapshot(self.final, event_id, jpeg)
        except OSError as exc:
            raise StorageError(f"clip {self.id}: cannot write snapshot for event {event_id}: {exc}") from exc
        self.store.add_snapshot(event_id, self.id, self.camera, ts, path, hashlib.sha256(jpeg).hexdigest(), len(jpeg))
        return path

    def finish(self, truncated: bool = False) -> ClipRef | None:
        """Close, remux, fsync, rename and index; None when the clip had no playable frame."""
        self._raw.close()
        return finalize(self.store, self.id, self.final, self.codec, truncated)

    def abandon(self) -> None:
        """Stop writing and leave the parts for recover() (used when the disk refuses even the remux)."""
        self._raw.close()


def begin_clip(
    store: ClipStore, camera: str, start: datetime, codec: CodecChoice, width: int, height: int, trusted: bool
) -> ClipWriter:
    """Index a new clip as being recorded and open its raw parts (ClipStore.begin)."""
    clip_id = f"{start.strftime('%Y%m%dT%H%M%S')}Z-{camera}-{secrets.token_hex(3)}"
    folder = store.root / camera / start.strftime("%Y-%m-%d")
    try:
        private_dir(folder)
    except OSError as exc:
        raise StorageError(f"cannot create {folder}: {exc}") from exc
    final = folder / f"{clip_id}{codec.suffix}"
    store.add_recording(clip_id, camera, start, final, codec.name, trusted)
    try:
        raw = RawStreamWriter(part(final, RAW), part(final, SIDECAR), codec, width, height)
    except OSError as exc:
        raise StorageError(f"cannot create clip {clip_id}: {exc}") from exc
    return ClipWriter(store, clip_id, camera, final, codec, raw, trusted)


def write_snapshot(final: Path, event_id: str, jpeg: bytes) -> Path:
    """`<clip stem>.<event>.jpg` beside the clip file, written durably (0600)."""
    path = final.with_name(f"{final.stem}.{_safe(event_id)}.jpg")
    tmp = part(path, TMP)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb") as handle:
        handle.write(jpeg)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return path


def finalize(store: ClipStore, clip_id: str, final: Path, codec: CodecChoice, truncated: bool) -> ClipRef | None:
    """Remux the parts into the final file (temp name, fsync, rename), then index its frames; a clip
    with no usable frame is removed. Returns None when nothing was kept."""
    raw, side, tmp = part(final, RAW), part(final, SIDECAR), part(final, TMP)
    frames = read_sidecar(side) if side.exists() else []
    if truncated and frames and raw.exists():
        listed = len(frames)
        frames = frames_in_stream(raw, frames, codec)
        if len(frames) < listed:
            log.warning("clip %s: %d listed frames missing from the stream (power cut?)", clip_id, listed - len(frames))
    first_key = next((i for i, f in enumerate(frames) if f.keyframe), None)
    if first_key is None:
        log.warning("clip %s has no complete keyframe; removing it", clip_id)
        store.drop(clip_id, [raw, side, tmp, final])
        return None
    tmp.unlink(missing_ok=True)
    try:
        remux(raw, frames, tmp, codec)
        kept = frames[first_key:]
        if truncated:
            # After a crash, only keep what decodes: a damaged tail is cut at the last decodable frame.
            decodable = probe(tmp)[0]
            if decodable < len(kept):
                log.warning("clip %s: %d of %d frames decode; keeping those", clip_id, decodable, len(kept))
                if decodable == 0:
                    raise StorageError(f"clip {clip_id}: no frame decodes")
                frames = frames[: first_key + decodable]
                kept = frames[first_key:]
                remux(raw, frames, tmp, codec)
                if probe(tmp)[0] != len(kept):
                    raise StorageError(f"clip {clip_id}: still not decodable after cutting the tail")
        digest, size = sha256_file(tmp), tmp.stat().st_size
        os.chmod(tmp, PRIVATE_FILE)  # the muxer created it under the umask
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write clip {clip_id}: {exc}") from exc
    ts = [f.ts_us for f in kept]
    ref = store.complete(clip_id, ts, ts[-1] + last_duration_us(ts), digest, size, truncated or first_key > 0)
    raw.unlink(missing_ok=True)
    side.unlink(missing_ok=True)
    log.info("clip %s stored: %d frames, %d bytes%s", clip_id, len(ts), size, " (truncated)" if truncated else "")
    return ref


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class WriterLock:
    """An exclusive flock: only one process records into a state directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StorageError(f"another recorder is using {self.path.parent} (lock {self.path} is held)") from exc
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)[:80]
