"""The raw stream a clip is recorded into (Annex B or IVF, appended as frames come) and its sidecar frame list,
and the microsecond UTC times the clip store keeps."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from edge.errors import StorageError

if TYPE_CHECKING:
    from edge.recording.codec import CodecChoice, EncodedFrame


@dataclass(frozen=True)
class RawFrame:
    """A frame's entry in the sidecar: capture time (UTC microseconds), byte size, keyframe flag."""

    ts_us: int
    size: int
    keyframe: bool


_IVF_FOURCC = {"vp8": b"VP80", "vp9": b"VP90"}
_IVF_HEADER = 32
_IVF_FRAME_HEADER = 12


def framing(codec: CodecChoice) -> tuple[int, int]:
    """(file header, per-frame header) bytes of a raw stream: IVF has both, Annex B neither."""
    return (_IVF_HEADER, _IVF_FRAME_HEADER) if codec.raw_format == "ivf" else (0, 0)


SYNC_INTERVAL_S = 1.0  # a clip in progress is fsync'd at the first keyframe after this much recorded time


class RawStreamWriter:
    """Appends encoded frames to `<clip>.raw` (Annex B or IVF) and their times to `<clip>.frames`.

    Writes are unbuffered, so a killed process loses nothing written. Against a power cut, both files are
    fsync'd (stream first, then the frame list) at a keyframe about every SYNC_INTERVAL_S of recorded time,
    so a power cut costs at most about that much of the clip's tail.
    """

    def __init__(
        self,
        raw_path: Path,
        sidecar_path: Path,
        codec: CodecChoice,
        width: int,
        height: int,
        sync_interval_s: float = SYNC_INTERVAL_S,
    ) -> None:
        self.codec = codec
        self.frames = 0
        self.bytes = 0
        self.syncs = 0
        self._sync_interval = sync_interval_s
        self._synced_at: float | None = None  # frame.mono of the last sync
        # 0600 at creation, not left to the umask (footage: only the service user reads it; docs: README)
        excl = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        self._raw = os.fdopen(os.open(raw_path, excl, 0o600), "wb", buffering=0)  # closed in close()
        self._side = os.fdopen(os.open(sidecar_path, excl, 0o600), "w", encoding="ascii", buffering=1)
        if codec.raw_format == "ivf":
            header = struct.pack(
                "<4sHH4sHHIIII", b"DKIF", 0, _IVF_HEADER, _IVF_FOURCC[codec.name], width, height, 1_000_000, 1, 0, 0
            )
            self._raw.write(header)
        self._side.write(f"# {codec.name} {codec.raw_format} {width}x{height}\n")

    def write(self, frame: EncodedFrame) -> None:
        ts_us = to_us(frame.ts)
        if self.codec.raw_format == "ivf":
            self._raw.write(struct.pack("<IQ", len(frame.data), ts_us) + frame.data)
        else:
            self._raw.write(frame.data)
        self._side.write(f"{ts_us} {len(frame.data)} {int(frame.keyframe)}\n")
        self.frames += 1
        self.bytes += len(frame.data)
        if self._synced_at is None:
            self._synced_at = frame.mono
        elif frame.keyframe and frame.mono - self._synced_at >= self._sync_interval:
            self.sync()
            self._synced_at = frame.mono

    def sync(self) -> None:
        """fsync the stream, then the frame list (a listed frame is then always on disk after a power cut,
        unless the kernel wrote the list back first: recovery checks the lengths either way)."""
        os.fsync(self._raw.fileno())
        self._side.flush()
        os.fsync(self._side.fileno())
        self.syncs += 1

    def close(self) -> None:
        for handle in (self._raw, self._side):
            if not handle.closed:
                handle.close()


def read_sidecar(sidecar_path: Path) -> list[RawFrame]:
    """Every complete line of a sidecar (a torn last line, from a kill mid-write, is ignored)."""
    frames: list[RawFrame] = []
    text = sidecar_path.read_text(encoding="ascii", errors="replace")
    lines = text.split("\n")
    for line in lines[:-1]:  # the part after the last newline is incomplete by construction
        if not line or line.startswith("#"):
            continue
        parts = line.split(" ")
        if len(parts) != 3:
            raise StorageError(f"{sidecar_path}: malformed frame line {line!r}")
        frames.append(RawFrame(int(parts[0]), int(parts[1]), parts[2] == "1"))
    return frames


def frames_in_stream(raw_path: Path, frames: Sequence[RawFrame], codec: CodecChoice) -> list[RawFrame]:
    """The leading frames of a frame list whose bytes the stream file really holds.

    After a power cut the frame list can be ahead of the stream (the kernel may write either file back
    first); frames past the end of the stream are dropped rather than failing the whole clip.
    """
    size = raw_path.stat().st_size
    end, per_frame = framing(codec)
    kept: list[RawFrame] = []
    for frame in frames:
        end += per_frame + frame.size
        if end > size:
            break
        kept.append(frame)
    return kept


def sidecar_header(sidecar_path: Path) -> tuple[str, str, int, int]:
    """(codec name, raw format, width, height) from a sidecar's first line."""
    with open(sidecar_path, encoding="ascii") as handle:
        first = handle.readline().strip()
    try:
        _, name, raw, size = first.split(" ")
        width, height = (int(v) for v in size.split("x"))
    except ValueError as exc:
        raise StorageError(f"{sidecar_path}: unreadable header {first!r}") from exc
    return name, raw, width, height


def to_us(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError("naive datetime: clip times must be timezone-aware UTC")
    delta = ts.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
