"""A stand-in for the parts of picamera2 the Pi encoder adapter uses, shaped like the real API.

Real picamera2: `Picamera2.pre_callback(request)` runs before a request reaches any encoder or capture;
`MappedArray(request, "main")` is a context manager whose `.array` is the stream buffer (rows may be padded
to the stride); `start_encoder(encoder, output)` / `stop_encoder()`; `encoders.H264Encoder(bitrate, repeat,
iperiod)`; `outputs.Output.outputframe(frame, keyframe=True, timestamp=None, packet=None, audio=False)` with
timestamps in microseconds. Here the H.264 is real (libx264 through PyAV), produced synchronously.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av
import numpy as np

STRIDE_PAD = 8  # extra pixels per row, as a real stride would add


class Request:
    def __init__(self, main: np.ndarray) -> None:
        self.buffers = {"main": main}


class MappedArray:
    def __init__(self, request: Request, stream: str, reshape: bool = True, write: bool = True) -> None:
        self.request = request
        self.stream = stream

    def __enter__(self) -> MappedArray:
        self.array = self.request.buffers[self.stream]
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Output:
    def __init__(self, pts: Any = None) -> None:
        self.recording = False

    def start(self) -> None:
        self.recording = True

    def stop(self) -> None:
        self.recording = False

    def outputframe(
        self, frame: bytes, keyframe: bool = True, timestamp: int | None = None, packet: Any = None, audio: bool = False
    ) -> None:
        pass


class H264Encoder:
    def __init__(self, bitrate: int | None = None, repeat: bool = True, iperiod: int | None = None, **kw: Any) -> None:
        self.bitrate, self.repeat, self.iperiod = bitrate, repeat, iperiod or 30
        self.output: Output | None = None
        self._ctx: Any = None

    def encode(self, width: int, height: int, request: Request, timestamp_us: int) -> None:
        if self._ctx is None:
            ctx: Any = av.CodecContext.create("libx264", "w")
            ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
            ctx.time_base = Fraction(1, 1_000_000)
            ctx.options = {
                "tune": "zerolatency",
                "preset": "ultrafast",
                "x264-params": f"repeat-headers=1:keyint={self.iperiod}:min-keyint={self.iperiod}:scenecut=0",
            }
            ctx.open()
            self._ctx = ctx
        image = np.ascontiguousarray(request.buffers["main"][:, :width])
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = timestamp_us
        for packet in self._ctx.encode(frame):
            assert self.output is not None
            self.output.outputframe(bytes(packet), packet.is_keyframe, int(packet.pts))


class Picamera2:
    def __init__(self, frames: Iterator[np.ndarray], fps: float) -> None:
        self.frames = frames
        self.fps = fps
        self.pre_callback: Any = None
        self.encoders: list[H264Encoder] = []
        self.captured = 0

    def start_encoder(self, encoder: H264Encoder, output: Output | None = None, **kw: Any) -> None:
        if output is None:
            raise RuntimeError("an output is needed")
        encoder.output = output
        output.start()
        self.encoders.append(encoder)

    def stop_encoder(self, encoders: Any = None) -> None:
        for encoder in self.encoders:
            assert encoder.output is not None
            encoder.output.stop()
        self.encoders = []

    def capture_array(self, name: str = "main") -> np.ndarray:
        image = next(self.frames)
        height, width = image.shape[:2]
        buffer = np.zeros((height, width + STRIDE_PAD, 3), np.uint8)
        buffer[:, :width] = image
        request = Request(buffer)
        if self.pre_callback is not None:
            self.pre_callback(request)
        for encoder in self.encoders:
            encoder.encode(width, height, request, round(self.captured * 1_000_000 / self.fps))
        self.captured += 1
        return buffer[:, :width].copy()


def install(monkeypatch: Any) -> None:
    """Make `import picamera2`, `picamera2.encoders` and `picamera2.outputs` find this fake."""
    root = types.ModuleType("picamera2")
    root.Picamera2 = Picamera2  # type: ignore[attr-defined]
    root.MappedArray = MappedArray  # type: ignore[attr-defined]
    encoders = types.ModuleType("picamera2.encoders")
    encoders.H264Encoder = H264Encoder  # type: ignore[attr-defined]
    outputs = types.ModuleType("picamera2.outputs")
    outputs.Output = Output  # type: ignore[attr-defined]
    for name, module in (("picamera2", root), ("picamera2.encoders", encoders), ("picamera2.outputs", outputs)):
        monkeypatch.setitem(sys.modules, name, module)
    assert "picamera2" in sys.modules
