"""Typed configuration: one pydantic model per YAML section, strict, with a description on every field.

Regenerate after changing a model:  python -m edge.config > config/config.schema.json
                                    python -m edge.config --markdown > docs/configuration.md
"""

from __future__ import annotations

import json
import os
import re
import socket
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_CONFIG_PATH = Path("/etc/doorbell-edge/config.yaml")
DEFAULT_STATE_DIR = Path("/var/lib/doorbell-edge")
CONFIG_ENV = "DOORBELL_EDGE_CONFIG"
STATE_DIR_ENV = "DOORBELL_EDGE_STATE_DIR"


# Validators that check one key from a parent model start their message with "@dotted.key: " so the
# loader can point at that key instead of the parent.


class Section(BaseModel):
    """Base for every section: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


# A polygon in normalised image coordinates: [[x, y], ...] with 0 <= x, y <= 1, at least three points.
Point = Annotated[list[Annotated[float, Field(ge=0.0, le=1.0)]], Field(min_length=2, max_length=2)]
Polygon = Annotated[list[Point], Field(min_length=3)]


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


class MqttTlsConfig(Section):
    enabled: bool = Field(False, description="Connect to the broker over TLS (port 8883 is usual).")
    ca_file: Path | None = Field(
        None,
        description="PEM CA certificate(s) that signed the broker certificate; default: the system trust store. "
        "A relative path is taken from the config file's folder.",
    )
    cert_file: Path | None = Field(
        None, description="PEM client certificate for brokers that require one (relative: from the config's folder)."
    )
    key_file: Path | None = Field(
        None, description="PEM private key of cert_file, mode 0600 (relative: from the config's folder)."
    )
    insecure: bool = Field(
        False,
        description="DANGEROUS: skip broker certificate and host name verification; anyone on the path "
        "can read and forge events. Logged as a warning on every connection. Testing only.",
    )

    @model_validator(mode="after")
    def _check_tls(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.enabled and (self.ca_file or self.cert_file or self.insecure):
            raise ValueError("TLS files or insecure are set but tls.enabled is false")
        return self


class MqttConfig(Section):
    enabled: bool = Field(True, description="Publish events over MQTT. A broker that is down never stops the daemon.")
    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    topic_prefix: str | None = Field(None, description="Prefix of every topic; default doorbell-edge/<device.id>.")
    client_id: str | None = Field(None, description="MQTT client id; default doorbell-edge-<device.id>.")
    protocol: Literal["mqttv5", "mqttv311"] = Field(
        "mqttv5", description="MQTT protocol version: mqttv5 or mqttv311 (3.1.1, for older brokers)."
    )
    keepalive_s: int = Field(60, ge=5, le=3600, description="Seconds between keep-alive pings when idle.")
    username: str | None = Field(None, min_length=1, description="Broker user name; null connects anonymously.")
    password_file: Path | None = Field(
        None,
        description="File holding the broker password (one line, mode 0600, readable by the service user; "
        "relative: from the config file's folder); never put the password in YAML.",
    )
    password_credential: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Name of a systemd credential (LoadCredential=) holding the password, read from "
        "$CREDENTIALS_DIRECTORY/<name>; alternative to password_file.",
    )
    tls: MqttTlsConfig = Field(default_factory=lambda: MqttTlsConfig(), description="TLS to the broker.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First back-off delay after a failed or lost connection.")
    reconnect_max_s: float = Field(60.0, gt=0, description="Longest back-off delay between connection attempts.")
    outbox_max_events: int = Field(
        10000,
        ge=10,
        description="Most events the durable outbox holds while the broker is away; beyond it "
        "motion events are dropped first (logged and counted), ring/face/footage events last.",
    )
    outbox_reserved_events: int = Field(
        1000,
        ge=1,
        description="Room in the outbox (at most outbox_max_events) kept for footage_request and system events: "
        "no volume of other kinds evicts them; only more than this many of their own drops the oldest "
        "(system first).",
    )
    outbox_max_age_h: float = Field(
        72.0,
        gt=0,
        description="Motion, person and system events older than this are dropped from the outbox "
        "(logged and counted); ring, face and footage_request events are never dropped for age.",
    )
    state_interval_s: float = Field(
        60.0, ge=1, description="Seconds between republishing the retained .../state summary."
    )
    snapshot: bool = Field(
        False,
        description="Publish JPEG snapshots on .../snapshot (owner consent: frames leave the device "
        "to the broker). Off by default.",
    )
    snapshot_interval_s: float = Field(
        5.0, ge=0, le=3600,
        description="At most one snapshot command per this many seconds; more are rejected as rate limited "
        "(logged, counted). 0 turns the limit off.",
    )
    command_interval_s: float = Field(
        1.0, ge=0, le=3600,
        description="At most one discovery or state command (each) per this many seconds; more are rejected "
        "as rate limited (logged, counted). 0 turns the limit off.",
    )
    discovery: bool = Field(
        True,
        description="Publish Home Assistant MQTT discovery payloads. Without a config file (the built-in "
        "demo) this is false.",
    )
    retain: bool = Field(
        True,
        description="Publish discovery, the .../state summary, .../availability and the last will retained, so "
        "Home Assistant knows them after a restart. Without a config file (the built-in demo) this is false: "
        "nothing is left behind on a broker found by chance on localhost. Events are never retained.",
    )
    discovery_prefix: str = Field(
        "homeassistant",
        pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
        description="Home Assistant discovery prefix (its status topic is <prefix>/status).",
    )

    @field_validator("topic_prefix")
    @classmethod
    def _topic_prefix(cls, value: str | None) -> str | None:
        if value is not None and (
            not value or any(ch in value for ch in "+#\0") or value.startswith("/") or value.endswith("/")
        ):
            raise ValueError("topic_prefix must be non-empty, without '+', '#', NUL, or a leading/trailing '/'")
        return value

    @model_validator(mode="after")
    def _check_auth(self) -> MqttConfig:
        if self.password_file is not None and self.password_credential is not None:
            raise ValueError("set password_file or password_credential, not both")
        if (self.password_file or self.password_credential) and self.username is None:
            raise ValueError("a password needs a username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class StorageConfig(Section):
    state_dir: Path = Field(
        DEFAULT_STATE_DIR,
        description=f"Where clips, databases, the gallery and the audit log live (env {STATE_DIR_ENV} overrides; "
        "relative: from the config file's folder).",
    )


class EventsConfig(Section):
    keep_days: float = Field(
        30.0,
        gt=0,
        le=3650,
        description="Days the event journal (<state_dir>/events.sqlite3) keeps every event as the device's own "
        "history (`doorbell-edge events list`), whether or not MQTT delivered it; an event a consumer still waits "
        "for is kept until delivered or dropped by that consumer's limits (mqtt.outbox_*). Aged only while the "
        "wall clock is synchronised.",
    )
    max_events: int = Field(
        100000,
        ge=100,
        le=10_000_000,
        description="The journal's size cap: at most this many of the newest events are kept (about 300 bytes each "
        "on disk: 100000 take ~30 MB), however young; older ones go first.",
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


def _key32(value: str, what: str) -> str:
    """A base64 32-byte public key (Ed25519 or X25519); the error names what is wrong."""
    import base64
    import binascii

    if value.strip().startswith(("-----BEGIN", "age1", "AGE-SECRET-KEY-")):
        raise ValueError(f"{what} must be base64 of the raw 32-byte key, not a PEM block or an age key: "
                         "`doorbell-edge agencies add` converts those (docs/formats.md, \"Key encodings\")")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not valid base64") from exc
    if len(raw) != 32:
        # Say which form was given and how to get the raw one (docs/formats.md, "Key encodings").
        hint = {
            44: "; 44 bytes is the DER form openssl prints (`openssl pkey -pubout -outform DER | base64`): the raw key "
                "is its last 32 bytes (`... -outform DER | tail -c 32 | base64`)",
            42: "; 42 bytes is a minisign public key (RW...): `doorbell-edge agencies add` converts it",
            48: "; 48 bytes looks like a DER private key: give the public key",
        }.get(len(raw), "")
        raise ValueError(f"{what} must be base64 of the raw 32-byte key, but decodes to {len(raw)} bytes{hint}")
    return value


class AgencyConfig(Section):
    name: str = Field(min_length=1, description="The agency's name as the owner knows it.")
    signing_key: str = Field(description="Base64 Ed25519 public key that signs the agency's requests.")
    encryption_key: str = Field(description="Base64 X25519 public key export bundles are encrypted to.")

    @field_validator("signing_key")
    @classmethod
    def _signing(cls, value: str) -> str:
        return _key32(value, "signing_key (Ed25519 public key)")

    @field_validator("encryption_key")
    @classmethod
    def _encryption(cls, value: str) -> str:
        return _key32(value, "encryption_key (X25519 public key)")


class CourtConfig(Section):
    name: str = Field(min_length=1, description="The court's name.")
    signing_key: str = Field(description="Base64 Ed25519 public key the court signs warrants and orders with.")

    @field_validator("signing_key")
    @classmethod
    def _signing(cls, value: str) -> str:
        return _key32(value, "signing_key (Ed25519 public key)")


class MaxWindowHours(Section):
    warrant: float = Field(12, gt=0, le=24 * 31, description="Total hours of footage a warrant may cover.")
    court_order: float = Field(12, gt=0, le=24 * 31, description="Total hours a court order may cover.")
    subpoena: float = Field(12, gt=0, le=24 * 31, description="Total hours a subpoena (event metadata only) may cover.")
    consent_request: float = Field(1, gt=0, le=24 * 31, description="Total hours a request for consent may cover.")
    exigent: float = Field(1, gt=0, le=24 * 31, description="Total hours an emergency request may cover.")
    preservation: float = Field(72, gt=0, le=24 * 31, description="Total hours a preservation request may cover.")


class FootageRequestsConfig(Section):
    agencies: dict[str, AgencyConfig] = Field(
        default_factory=dict,
        description="Agencies whose signed requests are considered, by the id they use in requests; others are denied.",
    )
    trusted_courts: dict[str, CourtConfig] = Field(
        default_factory=dict,
        description="Courts whose signature on a warrant or court order counts as verified, by court id.",
    )
    auto_release_verified_warrants: bool = Field(
        False, description="Release a court-signed warrant without asking the owner (default: the owner decides)."
    )
    exigent: Literal["deny", "owner"] = Field(
        "deny", description="Emergency requests without a warrant: deny, or let the owner decide (notified at once)."
    )
    max_window_hours: MaxWindowHours = Field(
        default_factory=MaxWindowHours, description="Most hours of footage one request may cover, per legal basis."
    )
    warrant_max_age_days: int = Field(
        14, ge=1, le=365, description="A warrant or court order issued longer ago than this is stale and denied."
    )
    approval_valid_hours: float = Field(
        72, gt=0, le=24 * 90, description="An owner approval not used for an export within this many hours lapses."
    )
    max_active_holds_per_agency: int = Field(
        10,
        ge=1,
        le=1000,
        description="Most preservation holds one agency may have in force at once; one more is denied (HOLD_LIMIT) "
        "until a hold expires or the owner lifts one (`requests release-hold`).",
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


class WebConfig(Section):
    """The owner's page (edge/web): HTTPS served by the daemon itself, off unless enabled."""

    enabled: bool = Field(False, description="Serve the owner's page (HTTPS) from the daemon.")
    listen: str = Field("0.0.0.0", min_length=1, description="Address the page listens on (0.0.0.0: every interface).")
    port: int = Field(8443, ge=1, le=65535, description="TCP port of the page (HTTPS).")
    hostname: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$",
        description="Name the owner types (default: this machine's host name); the generated certificate names "
        "it, <hostname>.local and the device's addresses.",
    )
    extra_names: list[str] = Field(
        default_factory=list, description="More DNS names or IP addresses for the generated certificate."
    )
    cert_file: Path | None = Field(
        None, description="The owner's own PEM certificate (chain) instead of the generated one (relative: from "
        "the config's folder)."
    )
    key_file: Path | None = Field(None, description="PEM private key of cert_file, mode 0600.")
    setup_code_ttl_min: float = Field(
        30, gt=0, le=24 * 60, description="Minutes a setup code from `doorbell-edge web setup-code` stays valid."
    )
    idle_timeout_min: float = Field(30, gt=0, le=24 * 60, description="A session unused this long is ended.")
    absolute_timeout_h: float = Field(12, gt=0, le=24 * 30, description="Any session ends this long after login.")
    login_max_failures: int = Field(
        10, ge=1, le=100, description="Failed logins per client within login_window_s before it must wait (429)."
    )
    login_window_s: float = Field(300, gt=0, le=86400, description="Window over which failed logins are counted.")
    argon2_memory_kib: int = Field(
        65536, ge=19456, le=262144, description="argon2id memory per password hash, KiB (OWASP minimum 19456)."
    )
    argon2_time_cost: int = Field(3, ge=2, le=20, description="argon2id passes per password hash (OWASP minimum 2).")

    @model_validator(mode="after")
    def _check_cert(self) -> WebConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("@web.cert_file: cert_file and key_file go together")
        return self


def _default_cameras() -> dict[str, CameraConfig]:
    return {"front_door": CameraConfig()}


class Config(Section):
    """The whole configuration file."""

    device: DeviceConfig = Field(default_factory=DeviceConfig, description="Device identity.")
    cameras: dict[str, CameraConfig] = Field(
        default_factory=_default_cameras,
        min_length=1,
        description="Cameras by name, e.g. front_door and side_gate.",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig, description="The motion gate.")
    button: ButtonConfig = Field(default_factory=ButtonConfig, description="The doorbell button.")
    control: ControlConfig = Field(
        default_factory=ControlConfig, description="The local control socket (`doorbell-edge ring`, scripts)."
    )
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT broker connection and topics.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="On-disk state.")
    events: EventsConfig = Field(
        default_factory=EventsConfig, description="The event journal: how long the device keeps its own history."
    )
    output: OutputConfig = Field(default_factory=OutputConfig, description="stdout events and stderr logs.")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="Stage queues and health.")
    recording: RecordingConfig = Field(default_factory=RecordingConfig, description="Clip recording.")
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig, description="How long clips are kept and how much disk they may use."
    )
    footage_requests: FootageRequestsConfig = Field(
        default_factory=FootageRequestsConfig, description="Who may ask for footage and the rules their requests meet."
    )
    faces: FacesConfig = Field(default_factory=FacesConfig, description="Face detection and recognition.")
    web: WebConfig = Field(default_factory=WebConfig, description="The owner's page (HTTPS, off by default).")

    @field_validator("cameras")
    @classmethod
    def _camera_names(cls, cameras: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        for name in cameras:
            if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
                raise ValueError(f"@cameras.{name}: camera name may only use letters, digits, '_' and '-'")
        return cameras

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.button.camera is not None and self.button.camera not in self.cameras:
            raise ValueError(
                f"@button.camera: {self.button.camera!r} is not one of the cameras ({', '.join(self.cameras)})"
            )
        return self

    @property
    def topic_prefix(self) -> str:
        return self.mqtt.topic_prefix or f"doorbell-edge/{self.device.id}"

    @property
    def state_dir(self) -> Path:
        return self.storage.state_dir


# Without any config file the daemon is the developer's demo: it may find a broker on localhost by chance, and
# must leave nothing behind there (no retained discovery, state or availability). A config file that leaves
# these keys out gets the model defaults (true): whoever wrote it chose that broker.
BUILTIN_DEMO: dict[str, Any] = {"mqtt": {"discovery": False, "retain": False}}


def builtin_demo_data() -> dict[str, Any]:
    """The data the daemon validates when there is no config file at all (a fresh copy each time)."""
    return json.loads(json.dumps(BUILTIN_DEMO))


def video_file(camera: CameraConfig) -> Path | None:
    """The video file an opencv camera reads, or None for a device index, a stream URL or another source."""
    url = camera.url
    if camera.source != "opencv" or not isinstance(url, str) or "://" in url or url.isdigit():
        return None
    return Path(url)


def resolve_relative_paths(config: Config, base: Path, environ: typing.Mapping[str, str] | None = None) -> Config:
    """Paths written relative in a config file are taken from that file's folder `base` (not the working
    directory, which is / under systemd). A state dir from the environment is left as given."""
    env = os.environ if environ is None else environ

    def fix(path: Path | None) -> Path | None:
        return path if path is None or path.is_absolute() else base / path

    mqtt = config.mqtt
    tls = mqtt.tls.model_copy(
        update={name: fix(getattr(mqtt.tls, name)) for name in ("ca_file", "cert_file", "key_file")}
    )
    cameras = {}
    for name, camera in config.cameras.items():
        path = video_file(camera)
        if path is not None and not path.is_absolute():
            camera = camera.model_copy(update={"url": str(base / path)})
        cameras[name] = camera
    update: dict[str, Any] = {
        "mqtt": mqtt.model_copy(update={"password_file": fix(mqtt.password_file), "tls": tls}),
        "cameras": cameras,
        "web": config.web.model_copy(update={n: fix(getattr(config.web, n)) for n in ("cert_file", "key_file")}),
    }
    if not env.get(STATE_DIR_ENV):
        update["storage"] = config.storage.model_copy(update={"state_dir": fix(config.storage.state_dir)})
    return config.model_copy(update=update)


def _slug(text: str) -> str:
    out = "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
    return out[:64]


def apply_environment(data: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Environment overrides that beat the file (state dir for tests and systemd's StateDirectory)."""
    env = os.environ if environ is None else environ
    if env.get(STATE_DIR_ENV):
        storage = dict(data.get("storage") or {})
        storage["state_dir"] = env[STATE_DIR_ENV]
        data = {**data, "storage": storage}
    return data


def json_schema() -> dict[str, Any]:
    schema = Config.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "doorbell-edge configuration"
    return schema


def markdown_reference() -> str:
    """docs/configuration.md: every option with its type, default and description, from the models."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config models by `python -m edge.config --markdown`; do not edit by hand.",
        "Every option is also shown, with comments, in `config/example.yaml`.",
        "",
        "Relative paths in a config file (`mqtt.password_file`, `mqtt.tls.*_file`, an opencv camera's video file,",
        "`storage.state_dir`) are taken from the folder of that config file, not from the working directory",
        "(which is `/` under systemd). `doorbell-edge check-config` checks that every file the config names exists,",
        "is a file and can be read by the service user (the owner of the state directory, else the `doorbell-edge`",
        "user, else you); each problem is one `file:line:col: key: message` line, and the exit status is 78.",
        "",
        "Without any config file the daemon runs the built-in demo: the defaults below, except",
        "`mqtt.discovery: false` and `mqtt.retain: false`, so a broker it finds by chance on localhost gets",
        "events but keeps nothing retained.",
        "",
    ]
    for name, field in Config.model_fields.items():
        lines += [f"## `{name}`", "", field.description or "", ""]
        annotation = field.annotation
        model = _section_model(annotation)
        if model is None:
            continue
        prefix = f"{name}.<name>." if typing.get_origin(annotation) is dict else f"{name}."
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for key, sub in model.model_fields.items():
            default = "(computed)" if sub.default_factory is not None else json.dumps(_jsonable(sub.default))
            kind = sub.annotation.__name__ if isinstance(sub.annotation, type) else str(sub.annotation)
            kind = re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", kind).replace("|", "\\|")
            if len(kind) > 40:
                kind = "see schema"
            desc = (sub.description or "").replace("|", "\\|")
            lines.append(f"| `{prefix}{key}` | {kind} | `{default}` | {desc} |")
        lines.append("")
    return "\n".join(lines)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) is dict:
        value = typing.get_args(annotation)[1]
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return value


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--markdown"]:
        print(markdown_reference())
    else:
        print(json.dumps(json_schema(), indent=2, sort_keys=True))
