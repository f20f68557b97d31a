"""A stand-in for picamera2 with the calls our backend and the Pi encoder adapter make, shaped like the real API.

Real picamera2: `Picamera2(camera_num=0)`; `create_video_configuration(main={"size", "format"}, lores={...},
controls={...})` returns a configuration dict; `configure()`; `start()`; `capture_array(stream)` gives "RGB888"
as HxWx3 (BGR byte order) and "YUV420" as a (H*3/2)xW plane stack; `stop()`; `close()`.
`Picamera2.pre_callback(request)` runs before a request reaches any encoder or capture; `MappedArray(request,
"main")` is a context manager whose `.array` is the stream buffer (rows may be padded to the stride);
`start_encoder(encoder, output)` / `stop_encoder()`; `encoders.H264Encoder(bitrate, repeat, iperiod)`;
`outputs.Output.outputframe(frame, keyframe=True, timestamp=None, packet=None, audio=False)` with timestamps in
microseconds. Here the H.264 is real (libx264 through PyAV), produced synchronously.

A camera built with `frames=` is a running camera replaying those frames; otherwise it draws a moving disc and
must be configured and started first, as the real one must.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from fractions import Fraction
from typing import Any, ClassVar

import av
import cv2
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
    instances: ClassVar[list[Picamera2]] = []
    fail_after: ClassVar[int | None] = None  # capture_array("main") raises after this many captures

    def __init__(self, camera_num: int = 0, frames: Iterator[np.ndarray] | None = None, fps: float = 10.0) -> None:
        self.frames = frames
        self.fps = fps
        self.config: dict[str, Any] | None = None
        self.started = frames is not None
        self.closed = False
        self.captures = 0
        self.pre_callback: Any = None
        self.encoders: list[H264Encoder] = []
        Picamera2.instances.append(self)

    def create_video_configuration(
        self, main: dict | None = None, lores: dict | None = None, controls: dict | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        return {
            "use_case": "video",
            "main": dict(main or {}),
            "lores": dict(lores) if lores else None,
            "controls": dict(controls or {}),
            **kwargs,
        }

    def configure(self, config: dict[str, Any]) -> None:
        if config["lores"] is not None:
            lw, lh = config["lores"]["size"]
            if lw % 2 or lh % 2:
                raise RuntimeError("lores size must be even")
        self.config = config

    def start(self) -> None:
        if self.config is None:
            raise RuntimeError("Camera must be configured before starting")
        self.started = True

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

    def _next_image(self) -> np.ndarray:
        if self.frames is not None:
            return next(self.frames)
        assert self.config is not None
        w, h = self.config["main"]["size"]
        img = np.zeros((h, w, 3), np.uint8)
        cv2.circle(img, ((self.captures * 7) % w, h // 2), h // 6, (0, 255, 0), -1)
        return img

    def capture_array(self, name: str = "main") -> np.ndarray:
        if not self.started:
            raise RuntimeError("Camera not started")
        if name == "lores":
            assert self.config is not None
            w, h = self.config["lores"]["size"]
            return cv2.cvtColor(np.full((h, w, 3), 128, np.uint8), cv2.COLOR_BGR2YUV_I420)
        if name != "main":
            raise KeyError(name)
        if Picamera2.fail_after is not None and self.captures >= Picamera2.fail_after:
            raise RuntimeError("Camera frontend has timed out!")
        image = self._next_image()
        height, width = image.shape[:2]
        buffer = np.zeros((height, width + STRIDE_PAD, 3), np.uint8)
        buffer[:, :width] = image
        request = Request(buffer)
        if self.pre_callback is not None:
            self.pre_callback(request)
        for encoder in self.encoders:
            encoder.encode(width, height, request, round(self.captures * 1_000_000 / self.fps))
        self.captures += 1
        return buffer[:, :width].copy()

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True


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
