"""The encoder adapter: codec choice, raw streams that survive a kill, exact remux timing, browser formats."""

from __future__ import annotations

import itertools
import os
from datetime import timedelta
from pathlib import Path

import av
import numpy as np
import pytest

from edge.errors import StorageError
from edge.recording.codec import EncodedFrame, choose_codec, decode_frames, make_encoder, probe, remux
from edge.recording.rawstream import RawStreamWriter, frames_in_stream, from_us, read_sidecar, to_us
from tests.recording.helpers import T0


def _images(n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        image = np.zeros((96, 128, 3), np.uint8)
        image[:, :, 1] = 60
        image[10:50, (3 * i) % 80 : (3 * i) % 80 + 40] = (40, 200, 250)
        out.append(image)
    return out


def _record(tmp_path: Path, name: str, n: int, gaps_ms: list[int]) -> tuple[Path, list, object]:
    codec = choose_codec(name)
    encoder = make_encoder(codec, 128, 96, 10, 0.5, "medium")
    raw, side = tmp_path / f"{name}.raw", tmp_path / f"{name}.frames"
    writer = RawStreamWriter(raw, side, codec, 128, 96)
    ts = T0
    for i, image in enumerate(_images(n)):
        for packet in encoder.encode(image, ts, i * 0.1):
            writer.write(packet)
        ts += timedelta(milliseconds=gaps_ms[i % len(gaps_ms)])
    writer.close()
    encoder.close()
    return raw, read_sidecar(side), codec


def test_auto_prefers_h264_mp4_when_the_build_has_it() -> None:
    codec = choose_codec("auto")
    has_h264 = any(_has(e) for e in ("libx264", "libopenh264"))
    assert (codec.name, codec.container, codec.mime) == (
        ("h264", "mp4", "video/mp4") if has_h264 else (codec.name, "webm", "video/webm")
    )


def _has(encoder: str) -> bool:
    try:
        av.codec.Codec(encoder, "w")
    except Exception:
        return False
    return True


def test_unknown_codec_is_named() -> None:
    with pytest.raises(StorageError, match="unknown video codec 'h265'"):
        choose_codec("h265")


@pytest.mark.parametrize("name", ["h264", "vp9", "vp8"])
def test_remux_places_every_frame_at_its_capture_time(tmp_path: Path, name: str) -> None:
    if not any(_has(e) for e in {"h264": ("libx264", "libopenh264"), "vp9": ("libvpx-vp9",), "vp8": ("libvpx",)}[name]):
        pytest.skip(f"this PyAV build cannot encode {name}")
    raw, frames, codec = _record(tmp_path, name, 30, [100, 100, 133])  # variable frame rate
    assert len(frames) == 30 and frames[0].keyframe and sum(f.keyframe for f in frames) == 6
    out = tmp_path / f"clip{codec.suffix}"
    assert remux(raw, frames, out, codec) == 30
    times = [t for t, _ in decode_frames(out)]
    expected = [(f.ts_us - frames[0].ts_us) / 1e6 for f in frames]
    assert times == pytest.approx(expected, abs=0.002)
    assert probe(out)[0] == 30
    with av.open(str(out)) as container:
        assert container.format.name.split(",")[0] in ("mov", "matroska")


def test_a_wall_clock_step_backwards_still_gives_a_playable_clip(tmp_path: Path) -> None:
    # NTP steps the clock back 5 s after frame 10: the container stays monotonic, the index keeps true times.
    gaps = [100] * 9 + [-5000] + [100] * 10
    raw, frames, codec = _record(tmp_path, "auto", 20, gaps)
    assert frames[10].ts_us < frames[9].ts_us
    out = tmp_path / f"clip{codec.suffix}"
    assert remux(raw, frames, out, codec) == 20
    times = [t for t, _ in decode_frames(out)]
    assert len(times) == 20 and all(b > a for a, b in itertools.pairwise(times))
    assert times[10] - times[9] == pytest.approx(0.1, abs=0.002)


def test_a_torn_tail_is_cut_at_the_last_complete_frame(tmp_path: Path) -> None:
    raw, frames, codec = _record(tmp_path, "auto", 12, [100])
    raw.write_bytes(raw.read_bytes() + b"\x00\x00\x00\x01\x41\x9a")  # half a frame written when killed
    out = tmp_path / "clip.out"
    assert remux(raw, frames, out, codec) == 12
    assert probe(out)[0] == 12


def test_a_raw_file_shorter_than_its_frame_list_is_refused(tmp_path: Path) -> None:
    raw, frames, codec = _record(tmp_path, "auto", 5, [100])
    raw.write_bytes(raw.read_bytes()[:-3])
    with pytest.raises(StorageError, match="shorter"):
        remux(raw, frames, tmp_path / "x.mp4", codec)


def test_a_clip_in_progress_is_fsynced_about_every_second_stream_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = choose_codec("auto")
    writer = RawStreamWriter(tmp_path / "c.raw", tmp_path / "c.frames", codec, 64, 48)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr("edge.recording.codec.os.fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    raw_fd, side_fd = writer._raw.fileno(), writer._side.fileno()
    for i in range(35):  # 3.5 s at 10 fps, a keyframe every 0.5 s
        writer.write(EncodedFrame(b"\x00\x00\x00\x01" + bytes([i]), i % 5 == 0, T0 + timedelta(seconds=i / 10), i / 10))
    writer.close()
    assert writer.syncs == 3  # at 1.0, 2.0 and 3.0 s: keyframes a second or more after the last sync
    assert synced == [raw_fd, side_fd] * 3  # the stream before the list that points into it
    listed = read_sidecar(tmp_path / "c.frames")
    assert len(listed) == 35 and frames_in_stream(tmp_path / "c.raw", listed, codec) == listed


def test_frame_size_mismatch_and_odd_sizes_are_named() -> None:
    codec = choose_codec("auto")
    with pytest.raises(StorageError, match="must be even"):
        make_encoder(codec, 101, 96, 10, 1.0, "medium")
    encoder = make_encoder(codec, 128, 96, 10, 1.0, "medium")
    with pytest.raises(StorageError, match="differs from the encoder's 128x96"):
        encoder.encode(np.zeros((64, 64, 3), np.uint8), T0, 0.0)


def test_one_packet_per_frame_and_keyframes_on_request() -> None:
    encoder = make_encoder(choose_codec("auto"), 128, 96, 10, 10.0, "medium")
    keys = []
    for i, image in enumerate(_images(8)):
        if i == 5:
            encoder.request_keyframe()
        packets = encoder.encode(image, T0 + timedelta(seconds=i), 0.0)
        assert len(packets) == 1 and packets[0].ts == T0 + timedelta(seconds=i)
        keys.append(packets[0].keyframe)
    assert keys == [True, False, False, False, False, True, False, False]


def test_microsecond_times_round_trip() -> None:
    ts = T0 + timedelta(microseconds=123_457)
    assert from_us(to_us(ts)) == ts
    with pytest.raises(ValueError, match="aware"):
        to_us(ts.replace(tzinfo=None))
