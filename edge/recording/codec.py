"""The one adapter for video and snapshot encoding (PyAV for video, OpenCV for JPEG); nothing else imports av."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, cast

import cv2
import numpy as np

from edge.errors import StorageError
from edge.fsutil import fsync_file
from edge.recording.rawstream import RawFrame, framing
from edge.types import Image

log = logging.getLogger(__name__)

# Microsecond timestamps are what the clip store keeps; the muxer gets them at 90 kHz (MPEG's clock).
_MUX_TB = Fraction(1, 90_000)


@dataclass(frozen=True)
class CodecChoice:
    """A video codec the installed PyAV can encode, with the raw streaming format used while recording
    (append-only, so a SIGKILL leaves every complete frame readable) and the browser-playable container
    the finished clip is remuxed into."""

    name: str  # "h264", "vp9", "vp8"
    encoder: str  # the libav encoder, e.g. "libx264"
    raw_format: str  # "h264" (Annex B) or "ivf"
    container: str  # "mp4" or "webm"
    suffix: str  # ".mp4" or ".webm"
    mime: str


_CANDIDATES: dict[str, tuple[tuple[str, str, str, str, str], ...]] = {
    # (encoder, raw format, container, suffix, mime); h264_v4l2m2m is the Raspberry Pi 4's hardware encoder.
    "h264": (
        ("h264_v4l2m2m", "h264", "mp4", ".mp4", "video/mp4"),
        ("libx264", "h264", "mp4", ".mp4", "video/mp4"),
        ("libopenh264", "h264", "mp4", ".mp4", "video/mp4"),
    ),
    "vp9": (("libvpx-vp9", "ivf", "webm", ".webm", "video/webm"),),
    "vp8": (("libvpx", "ivf", "webm", ".webm", "video/webm"),),
}
_AUTO_ORDER = ("h264", "vp9", "vp8")
_V4L2_ENCODER_DEVICE = Path("/dev/video11")


def _can_encode(encoder: str) -> bool:
    import av

    if encoder == "h264_v4l2m2m" and not _V4L2_ENCODER_DEVICE.exists():
        return False  # the wrapper is compiled into most FFmpeg builds; the hardware rarely is there
    try:
        av.codec.Codec(encoder, "w")
    except Exception:
        return False
    return True


def choose_codec(preference: str = "auto") -> CodecChoice:
    """The best codec this machine can encode: H.264 MP4 first, else VP9/VP8 WebM (all play in browsers)."""
    names = _AUTO_ORDER if preference == "auto" else (preference,)
    if preference != "auto" and preference not in _CANDIDATES:
        raise StorageError(f"unknown video codec {preference!r}; choose one of auto, {', '.join(_CANDIDATES)}")
    for name in names:
        for encoder, raw, container, suffix, mime in _CANDIDATES[name]:
            if _can_encode(encoder):
                return CodecChoice(name, encoder, raw, container, suffix, mime)
    raise StorageError(f"no usable video encoder for {preference!r} in this PyAV build (need libx264 or libvpx)")


@dataclass(frozen=True)
class EncodedFrame:
    """One compressed frame (an H.264 access unit with in-band headers on keyframes, or a VPx frame)."""

    data: bytes
    keyframe: bool
    ts: datetime
    mono: float


class FrameEncoder(Protocol):
    """Turns masked BGR frames into compressed frames, one out per frame in (no B-frames, no lookahead)."""

    codec: CodecChoice
    width: int
    height: int

    def encode(self, image: Image, ts: datetime, mono: float) -> list[EncodedFrame]: ...
    def request_keyframe(self) -> None: ...
    def close(self) -> None: ...


_QUALITY = {
    # (x264 crf, vpx crf, vpx bitrate cap in bit/s per pixel-per-second)
    "low": (30, 45),
    "medium": (25, 37),
    "high": (21, 30),
}


class PyAVEncoder:
    """Software (or V4L2 hardware) encoding through PyAV, zero-latency so each frame comes out at once."""

    def __init__(
        self, codec: CodecChoice, width: int, height: int, fps: float, keyframe_interval_s: float, quality: str
    ) -> None:
        import av

        if width % 2 or height % 2:
            raise StorageError(f"video size {width}x{height} must be even in both dimensions for 4:2:0 encoding")
        self.codec = codec
        self.width = width
        self.height = height
        self._gop = max(1, round(fps * keyframe_interval_s))
        self._av = av
        ctx: Any = av.CodecContext.create(codec.encoder, "w")
        ctx.width = width
        ctx.height = height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 1000)
        ctx.framerate = Fraction(fps).limit_denominator(1001)
        ctx.gop_size = self._gop
        crf, vpx_crf = _QUALITY[quality]
        if codec.encoder == "libx264":
            ctx.options = {
                "preset": "veryfast",
                "tune": "zerolatency",
                "crf": str(crf),
                # repeat-headers puts SPS/PPS in every keyframe: a clip may start at any keyframe of the ring.
                "x264-params": f"repeat-headers=1:keyint={self._gop}:min-keyint={self._gop}:scenecut=0:bframes=0",
            }
        elif codec.encoder in ("libvpx", "libvpx-vp9"):
            ctx.bit_rate = int(width * height * fps * 0.2)
            ctx.options = {
                "deadline": "realtime",
                "cpu-used": "8",
                "lag-in-frames": "0",
                "auto-alt-ref": "0",
                "crf": str(vpx_crf),
                "keyint_min": str(self._gop),
            }
        else:
            ctx.bit_rate = int(width * height * fps * 0.15)
            ctx.max_b_frames = 0
        ctx.thread_count = 1  # leave the second core to analysis
        try:
            ctx.open()
        except Exception as exc:
            raise StorageError(f"cannot open video encoder {codec.encoder}: {exc}") from exc
        self._ctx = ctx
        self._pts = 0
        self._pending: dict[int, tuple[datetime, float]] = {}
        self._force_key = False

    def request_keyframe(self) -> None:
        self._force_key = True

    def encode(self, image: Image, ts: datetime, mono: float) -> list[EncodedFrame]:
        if image.shape[0] != self.height or image.shape[1] != self.width:
            raise StorageError(
                f"frame size {image.shape[1]}x{image.shape[0]} differs from the encoder's {self.width}x{self.height}"
            )
        # Converted to the encoder's pixel format here, on this thread (threads=1): left to the codec, PyAV 18.1.1
        # converts with a swscale thread pool, which is one more pool per encoder and not fork-safe.
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24").reformat(
            format=self._ctx.pix_fmt, threads=1)
        frame.pts = self._pts
        if self._force_key:
            frame.pict_type = self._av.video.frame.PictureType.I
            self._force_key = False
        self._pending[self._pts] = (ts, mono)
        self._pts += 1
        return self._collect(self._ctx.encode(frame))

    def _collect(self, packets: Sequence[Any]) -> list[EncodedFrame]:
        out = []
        for packet in packets:
            meta = self._pending.pop(int(packet.pts), None)
            if meta is None:
                log.warning("encoder returned a packet for an unknown frame (pts %s); dropped", packet.pts)
                continue
            out.append(EncodedFrame(bytes(packet), bool(packet.is_keyframe), meta[0], meta[1]))
        return out

    def close(self) -> None:
        try:
            self._collect(self._ctx.encode(None))
        except Exception:  # flushing a broken encoder must not stop shutdown
            log.debug("encoder flush failed", exc_info=True)
        self._pending.clear()


def make_encoder(
    codec: CodecChoice, width: int, height: int, fps: float, keyframe_interval_s: float, quality: str
) -> FrameEncoder:
    return PyAVEncoder(codec, width, height, fps, keyframe_interval_s, quality)


# ----------------------------------------------------------------------------------------------------------
# The raw stream written while a clip records, and its sidecar of frame times.
#
# The sidecar line for a frame is written only after the frame's bytes are in the raw file, so after a SIGKILL
# every frame listed in the sidecar is complete on disk; anything after the last listed frame is cut off.


def codec_by_name(name: str) -> CodecChoice:
    """The container facts for a codec name found in a sidecar (the encoder itself is not needed to remux)."""
    encoder, raw, container, suffix, mime = _CANDIDATES[name][-1]
    return CodecChoice(name, encoder, raw, container, suffix, mime)


START_TAG = "doorbell-edge start_us="  # container comment: the first frame's capture time (UTC microseconds)


def remux(raw_path: Path, frames: Sequence[RawFrame], out_path: Path, codec: CodecChoice) -> int:
    """Copy the first len(frames) complete frames of a raw stream into a browser-playable container, each at
    its exact capture time; returns how many frames were written. Bytes after the last listed frame (a torn
    frame from a kill) are ignored. The output is fsync'd."""
    import av

    if not frames:
        raise StorageError(f"{raw_path}: no complete frames to remux")
    # Start at the first keyframe: a decoder cannot use frames before it.
    first_key = next((i for i, f in enumerate(frames) if f.keyframe), None)
    if first_key is None:
        raise StorageError(f"{raw_path}: no keyframe among {len(frames)} frames")
    if first_key:
        log.warning("%s: skipping %d frames before the first keyframe", raw_path, first_key)
    header, per_frame = framing(codec)
    complete = header + sum(f.size + per_frame for f in frames)
    if raw_path.stat().st_size < complete:
        raise StorageError(f"{raw_path}: shorter ({raw_path.stat().st_size} bytes) than its frame list ({complete})")
    if raw_path.stat().st_size > complete:
        with open(raw_path, "r+b") as handle:  # drop a torn tail so the demuxer never sees half a frame
            handle.truncate(complete)
    ticks = _ticks([f.ts_us for f in frames[first_key:]])
    written = 0
    try:
        # The demuxer only supplies the stream's parameters (SPS/PPS, size); the frames themselves are cut
        # from the raw file at the byte sizes the sidecar recorded, so none can be split or merged.
        with av.open(str(raw_path), format=codec.raw_format) as src, open(raw_path, "rb") as raw:
            stream = src.streams.video[0]
            options = {"movflags": "+faststart"} if codec.container == "mp4" else {}
            with av.open(str(out_path), "w", format=codec.container, options=options) as dst:
                # The first frame's time to the microsecond: a clip indexed again from its file after the index
                # was lost keeps its exact times (the file name has whole seconds only; edge.recording.store).
                dst.metadata["comment"] = f"{START_TAG}{frames[first_key].ts_us}"
                out_stream: Any = dst.add_stream_from_template(stream)
                out_stream.time_base = _MUX_TB
                raw.seek(header)
                for index, frame in enumerate(frames):
                    raw.seek(per_frame, os.SEEK_CUR)
                    data = raw.read(frame.size)
                    if index < first_key:
                        continue
                    pts, duration = ticks[index - first_key]
                    packet = av.Packet(data)
                    packet.pts = pts
                    packet.dts = pts
                    packet.duration = duration
                    packet.time_base = _MUX_TB
                    packet.is_keyframe = frame.keyframe
                    packet.stream = out_stream
                    dst.mux(packet)
                    written += 1
    except av.FFmpegError as exc:
        raise StorageError(f"{raw_path}: cannot remux: {exc}") from exc
    fsync_file(out_path)
    return written


def _typical_gap(gaps: Sequence[int]) -> int:
    positive = [g for g in gaps if g > 0]
    return int(np.median(positive)) if positive else 100_000


def _ticks(ts_us: Sequence[int]) -> list[tuple[int, int]]:
    """(pts, duration) at 90 kHz from the first frame. Strictly increasing even when the wall clock stepped
    back mid-clip (NTP): the step is closed to one typical frame gap; the index keeps the true times."""
    typical = max(1, round(_typical_gap([b - a for a, b in itertools.pairwise(ts_us)]) * 90_000 / 1_000_000))
    pts: list[int] = []
    offset = 0
    for t in ts_us:
        tick = round((t - ts_us[0]) * 90_000 / 1_000_000) + offset
        if pts and tick <= pts[-1]:
            log.warning(
                "frame times go backwards by %d us (clock stepped); the clip plays them in order", pts[-1] - tick
            )
            offset += pts[-1] + typical - tick
            tick = pts[-1] + typical
        pts.append(tick)
    return [(p, (q - p) if q is not None else typical) for p, q in zip(pts, [*pts[1:], None], strict=True)]


def last_duration_us(ts_us: Sequence[int]) -> int:
    return _typical_gap([b - a for a, b in itertools.pairwise(ts_us)]) if ts_us else 0


def decode_frames(path: Path) -> Iterator[tuple[float, Image]]:
    """Every frame of a finished clip as (seconds from its start, BGR image); raises on a broken stream."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # One thread: PyAV's default (slice threads, one per core) took the second core from analysis and, on
            # a busy machine, added ~2.5 MB to an export's peak memory (issue 15, bench/export_memory.py).
            stream.thread_type = "NONE"
            stream.thread_count = 1
            for frame in container.decode(stream):
                # threads=1: swscale's thread pool (PyAV 18.1.1 default) is not needed for one frame at a time and
                # deadlocks a process forked after it started (the crash-point tests fork mid-export).
                yield float(frame.time or 0.0), cast(Image, frame.to_ndarray(format="bgr24", threads=1))
    except av.FFmpegError as exc:
        raise StorageError(f"{path}: cannot decode: {exc}") from exc


def probe(path: Path) -> tuple[int, float]:
    """(decodable frames, seconds from the first frame's start to the last frame's end) of a finished clip."""
    import av

    count = 0
    last_end = 0.0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                for frame in packet.decode():
                    count += 1
                    duration = float(packet.duration * packet.time_base) if packet.duration else 0.0
                    last_end = max(last_end, float(frame.time or 0.0) + duration)
            for frame in stream.codec_context.decode(None):
                count += 1
                last_end = max(last_end, float(frame.time or 0.0))
    except av.FFmpegError as exc:
        raise StorageError(f"{path}: cannot decode: {exc}") from exc
    return count, last_end


def encode_jpeg(image: Image, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise StorageError("JPEG encoding failed")
    return bytes(buf.tobytes())


def frame_offsets_us(path: Path) -> tuple[list[int], int | None]:
    """Each frame's time from the first, in microseconds, read from the container (no decoding), and the first
    frame's capture time the recorder tagged the container with (None in files from before the tag)."""
    import av

    try:
        with av.open(str(path)) as container:
            tags = {str(k).lower(): str(v) for k, v in container.metadata.items()}
            stream = container.streams.video[0]
            pts = sorted(
                int(packet.pts * packet.time_base * 1_000_000)
                for packet in container.demux(stream)
                if packet.size and packet.pts is not None and packet.time_base is not None
            )
    except (av.FFmpegError, IndexError) as exc:
        raise StorageError(f"{path}: cannot read the stream: {exc}") from exc
    comment = tags.get("comment", "")
    tagged = int(comment[len(START_TAG):]) if comment.startswith(START_TAG) and comment[len(START_TAG):].isdigit() \
        else None
    return ([p - pts[0] for p in pts] if pts else []), tagged
