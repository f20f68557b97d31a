"""Config of the recording flow: where state lives, how clips are recorded, and how long they are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edge.config_base import DEFAULT_STATE_DIR, STATE_DIR_ENV, Section


class StorageConfig(Section):
    state_dir: Path = Field(
        DEFAULT_STATE_DIR,
        description=f"Where clips, databases, the gallery and the audit log live (env {STATE_DIR_ENV} overrides; "
        "relative: from the config file's folder).",
    )


RecordingTrigger = Literal["motion_start", "person", "face", "ring"]
_ALL_TRIGGERS: tuple[RecordingTrigger, ...] = ("motion_start", "person", "face", "ring")


class RecordingConfig(Section):
    enabled: bool = Field(True, description="Record clips (and event snapshots) under <state_dir>/clips.")
    pre_roll_s: float = Field(
        5.0, ge=0, le=60, description="Seconds of video kept in memory and stored before the event that starts a clip."
    )
    post_roll_s: float = Field(
        5.0, ge=0, le=300, description="Seconds recorded after the last activity (motion end, person, face, ring)."
    )
    max_clip_s: float = Field(
        300.0, ge=10, le=3600, description="Longest clip; continuing activity rolls over into a new clip, no gap."
    )
    triggers: list[RecordingTrigger] = Field(
        default_factory=lambda: list(_ALL_TRIGGERS),
        description="Event types that start or extend a clip.",
    )
    codec: Literal["auto", "h264", "vp9", "vp8"] = Field(
        "auto", description="Video codec: auto picks H.264 MP4 when an encoder exists, else VP9/VP8 WebM."
    )
    quality: Literal["low", "medium", "high"] = Field("medium", description="Encoder quality/size trade-off.")
    pi_encoder: bool = Field(
        True,
        description="picamera2 cameras: record with picamera2's H.264 encoder (masks painted in its "
        "pre_callback); false: encode in software like other cameras.",
    )
    keyframe_interval_s: float = Field(
        0.5, gt=0, le=10, description="Seconds between keyframes; a clip starts on one, so this bounds extra pre-roll."
    )
    queue_size: int = Field(
        16, ge=2, le=256, description="Frames waiting for the recorder thread; when full the oldest is dropped."
    )
    snapshots: bool = Field(True, description="Store one JPEG snapshot per triggering event, beside its clip.")
    snapshot_quality: int = Field(90, ge=10, le=100, description="JPEG quality of event snapshots.")
    mask_margin_px: int = Field(
        8,
        ge=0,
        le=64,
        description="Extra pixels blacked around each privacy mask in stored footage, so codec "
        "ringing cannot carry masked content back in.",
    )
    disk_check_s: float = Field(
        10.0, gt=0, le=3600, description="How often free disk space is checked while recording or paused."
    )
    clock_trust: Literal["sync", "always"] = Field(
        "sync",
        description="When footage times are trusted (docs/time.md): sync = only while the kernel says the clock "
        "is synchronised (NTP); always = a clock you trust without NTP (an RTC, an offline device). Either way "
        "footage stamped behind an earlier time is untrusted.",
    )


class RetentionConfig(Section):
    motion_days: float = Field(7, gt=0, le=3650, description="Days clips with only motion are kept.")
    person_days: float = Field(30, gt=0, le=3650, description="Days clips with a person or face event are kept.")
    ring_days: float = Field(30, gt=0, le=3650, description="Days clips with a doorbell ring are kept.")
    max_usage_mb: int | None = Field(
        None, ge=1, description="Cap on clips plus snapshots in MB; oldest unheld clips go first. null: no cap."
    )
    min_free_mb: int = Field(
        512,
        ge=0,
        description="Free disk space to keep; below it old clips are deleted, and if only held clips "
        "remain, recording pauses (a system event) until space frees.",
    )
    sweep_interval_s: float = Field(
        300.0, gt=0, le=86400, description="Seconds between retention sweeps (and legal-hold expiry)."
    )
    clock_jump_s: float = Field(
        300.0,
        ge=30,
        le=86400,
        description="A wall-clock jump larger than this (either way, against the monotonic clock or the saved "
        "high-water mark) starts a grace period (docs/time.md).",
    )
    clock_grace_hours: float = Field(
        24.0,
        ge=0,
        le=720,
        description="After a clock jump, hours of stable synchronised time during which no clip is deleted and "
        "no hold expires; the owner is told (a system event).",
    )
