"""Config of the live flow: the device, its cameras, the motion gate, faces, the button, the control socket,
stage queues and output."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.config_base import Polygon, Section


class DeviceConfig(Section):
    id: str = Field(
        default_factory=lambda: _slug(socket.gethostname()) or "doorbell",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Stable device id used in MQTT topics and Home Assistant unique ids (default: hostname).",
    )
    name: str = Field("Doorbell", min_length=1, description="Human-readable device name shown in Home Assistant.")


class CameraConfig(Section):
    source: Literal["demo", "opencv", "picamera2"] = Field(
        "demo", description="Frame source: demo (generated scene, no camera), opencv (V4L2/RTSP/HTTP/file), picamera2."
    )
    url: int | str | None = Field(
        None,
        description="opencv only: a V4L2 device index (0), an rtsp:// or http:// URL, or a video file path "
        "(relative: from the config file's folder).",
    )
    loop: bool = Field(False, description="opencv file sources only: restart the file at its end.")
    width: int = Field(640, ge=64, le=4096, description="Main (recording) stream width in pixels.")
    height: int = Field(480, ge=64, le=4096, description="Main (recording) stream height in pixels.")
    fps: float = Field(10.0, gt=0, le=60, description="Target frames per second (files are paced to this rate).")
    analysis_width: int = Field(
        320, ge=32, le=1920, description="Width of the low-resolution analysis stream used by the motion gate."
    )
    rotate: Literal[0, 90, 180, 270] = Field(0, description="Rotate frames clockwise by this many degrees.")
    privacy_masks: list[Polygon] = Field(
        default_factory=list,
        description="Polygons (normalised 0..1 [x, y] points) blacked out before analysis and storage "
        "(a neighbour's window, the public footpath).",
    )
    motion_zones: list[Polygon] = Field(
        default_factory=list,
        description="Polygons in which motion counts; empty means the whole frame (minus privacy masks).",
    )
    reconnect_initial_s: float = Field(1.0, gt=0, description="First back-off delay after the camera is lost.")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest back-off delay between reconnect attempts.")

    @model_validator(mode="after")
    def _check_source(self) -> CameraConfig:
        if self.source == "opencv" and self.url is None:
            raise ValueError("source 'opencv' needs a url (device index, stream URL or file path)")
        if self.source != "opencv" and self.url is not None:
            raise ValueError(f"url is only used by source 'opencv', not {self.source!r}")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be >= reconnect_initial_s")
        return self


class MotionConfig(Section):
    threshold: int = Field(25, ge=1, le=255, description="Luma difference (0-255) for a pixel to count as changed.")
    min_area: float = Field(
        0.01, gt=0, le=1, description="Share of the watched area that must change for a frame to count as motion."
    )
    blur: int = Field(5, ge=1, le=31, description="Gaussian blur kernel (odd) applied before differencing.")
    background_alpha: float = Field(
        0.05, gt=0, le=1, description="How fast the background model follows slow changes (light, shadows)."
    )
    end_after_s: float = Field(3.0, gt=0, description="Seconds without motion before a motion_end event is emitted.")

    @field_validator("blur")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError("blur must be an odd number")
        return value


class ButtonConfig(Section):
    gpio_pin: int | None = Field(
        None, ge=0, le=27, description="BCM GPIO pin of the doorbell button (Pi only); null disables the GPIO input."
    )
    pull_up: bool = Field(True, description="Use the internal pull-up (button connects the pin to ground).")
    debounce_ms: int = Field(50, ge=0, le=2000, description="Ignore further edges for this long after a press.")
    camera: str | None = Field(None, description="Camera the ring belongs to (default: the first camera).")
    ring_interval_s: float = Field(
        3.0,
        ge=0,
        le=60,
        description="A camera rings at most once per this many seconds however it is pressed (GPIO button, "
        "`doorbell-edge ring`, the control socket); further presses are refused as rate limited (logged). "
        "0 turns the limit off.",
    )


class ControlConfig(Section):
    max_clients: int = Field(
        16, ge=1, le=256,
        description="Control-socket clients served at once (each on its own thread); one more is told "
        "'busy' and closed.",
    )
    timeout_s: float = Field(
        5.0, gt=0, le=60,
        description="A control-socket client must send its request line within this many seconds, or is told "
        "'timed out' and closed; an idle client never blocks another.",
    )


class OutputConfig(Section):
    stdout_events: bool = Field(True, description="Print every event as one JSON line on stdout.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="stderr log level.")


class PipelineConfig(Section):
    queue_size: int = Field(
        4, ge=1, le=64, description="Frames each stage queue holds; when full the oldest frame is dropped."
    )
    stall_after_s: float = Field(
        10.0, gt=0, description="A stage silent for this long is stalled: the systemd watchdog stops being fed."
    )


class FacesConfig(Section):
    """On-device face detection and recognition (edge/vision)."""

    enabled: bool = Field(True, description="Detect faces in motion frames and emit person/face events.")
    model: Literal["int8", "float"] = Field(
        "int8", description="Model precision: int8 (shipped default, fast) or float (reference, ~3x slower)."
    )
    threads: int = Field(2, ge=1, le=8, description="TFLite (XNNPACK) threads per model.")
    detector_score: float = Field(0.5, gt=0, lt=1, description="Minimum BlazeFace score for a face detection.")
    recognise_distance: float = Field(
        0.55, gt=0, le=2, description="Embedding distance at or below which a face is named as an enrolled person."
    )
    unknown_distance: float = Field(
        0.62, gt=0, le=2, description="Distance above which a face is unknown; between the two no vote is cast."
    )
    min_face_px: int = Field(40, ge=8, description="Smallest face (box width, frame pixels) that is embedded.")
    min_sharpness: float = Field(
        15.0, ge=0, description="Smallest variance of the Laplacian of the face chip; blurrier faces are skipped."
    )
    vote_frames: int = Field(3, ge=1, le=20, description="Faces embedded per visit before deciding on a name.")
    vote_min: int = Field(
        2, ge=1, le=20, description="Agreeing frames needed to name a visitor (or call them unknown)."
    )
    visit_end_s: float = Field(2.0, gt=0, le=60, description="A face unseen this long ends its visit (IoU track).")
    stranger_ttl_s: float = Field(
        30.0,
        ge=0,
        le=60,
        description="Embeddings of unknown visitors are kept in memory only, at most this long "
        "after their visit ends (never written to disk).",
    )
    max_faces: int = Field(4, ge=1, le=16, description="Most faces embedded per frame (largest first).")

    @model_validator(mode="after")
    def _check_thresholds(self) -> FacesConfig:
        if self.unknown_distance < self.recognise_distance:
            raise ValueError("@faces.unknown_distance: must be >= recognise_distance")
        if self.vote_min > self.vote_frames:
            raise ValueError("@faces.vote_min: must be <= vote_frames")
        return self


def _slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
    return out[:64]
