"""Typed configuration: the root model of the YAML file (one pydantic model per section, strict, with a description
on every field), the built-in demo, path and environment resolution, and the generated schema and reference.

The sections live beside it, one module per flow: config_base (shared base), config_capture, config_mqtt,
config_recording, config_footage; every name is re-exported here (`from edge.config import CameraConfig`).

Regenerate after changing a model:  python -m edge.config > config/config.schema.json
                                    python -m edge.config --markdown > docs/configuration.md
"""

from __future__ import annotations

import json
import os
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator

from edge.config_base import CONFIG_ENV, DEFAULT_CONFIG_PATH, DEFAULT_STATE_DIR, STATE_DIR_ENV, Point, Polygon, Section
from edge.config_capture import (
    ButtonConfig,
    CameraConfig,
    ControlConfig,
    DeviceConfig,
    FacesConfig,
    MotionConfig,
    OutputConfig,
    PipelineConfig,
)
from edge.config_footage import AgencyConfig, CourtConfig, FootageRequestsConfig, MaxWindowHours
from edge.config_mqtt import EventsConfig, MqttConfig, MqttTlsConfig
from edge.config_recording import RecordingConfig, RecordingTrigger, RetentionConfig, StorageConfig

__all__ = [
    "BUILTIN_DEMO",
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_STATE_DIR",
    "STATE_DIR_ENV",
    "AgencyConfig",
    "ButtonConfig",
    "CameraConfig",
    "Config",
    "ControlConfig",
    "CourtConfig",
    "DeviceConfig",
    "EventsConfig",
    "FacesConfig",
    "FootageRequestsConfig",
    "MaxWindowHours",
    "MotionConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "OutputConfig",
    "PipelineConfig",
    "Point",
    "Polygon",
    "RecordingConfig",
    "RecordingTrigger",
    "RetentionConfig",
    "Section",
    "StorageConfig",
    "apply_environment",
    "builtin_demo_data",
    "json_schema",
    "markdown_reference",
    "resolve_relative_paths",
    "video_file",
]


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
    idle_timeout_min: float = Field(
        30, ge=1, le=24 * 60, description="A session unused this long is ended (at least 1 minute: the page warns "
        "2 minutes before, or half the timeout when shorter, and offers to stay logged in)."
    )
    absolute_timeout_h: float = Field(12, gt=0, le=24 * 30, description="Any session ends this long after login.")
    login_max_failures: int = Field(
        10, ge=1, le=100, description="Failed logins per client within login_window_s before it must wait (429)."
    )
    login_window_s: float = Field(300, gt=0, le=86400, description="Window over which failed logins are counted.")
    argon2_memory_kib: int = Field(
        65536, ge=19456, le=262144, description="argon2id memory per password hash, KiB (OWASP minimum 19456)."
    )
    argon2_time_cost: int = Field(3, ge=2, le=20, description="argon2id passes per password hash (OWASP minimum 2).")
    max_connections_per_client: int = Field(
        12, ge=2, le=256, description="Open connections one client address may hold (a browser opens up to 6 to "
        "a site); more are closed as they arrive, before TLS."
    )
    max_connections: int = Field(
        128, ge=8, le=512, description="Open connections the page holds in all; more are closed as they arrive. "
        "Each costs about 0.3 MB while open and one open file (the daemon's limit is 1024)."
    )
    handshake_timeout_s: float = Field(
        10, gt=0, le=60, description="A connection that has not finished its TLS handshake this long after it "
        "opened is closed."
    )
    header_timeout_s: float = Field(
        10, gt=0, le=300, description="A connection that has not sent a whole request head this long after its "
        "TLS handshake (or after its last response) is closed."
    )
    body_timeout_s: float = Field(
        10, gt=0, le=300, description="While the page reads a request body, the client must send at least "
        "body_min_rate bytes/s over every window of this many seconds, or the connection is closed."
    )
    body_min_rate: int = Field(
        500, ge=1, le=1_000_000, description="Slowest request body the page waits for, bytes/s, averaged over "
        "body_timeout_s."
    )

    @model_validator(mode="after")
    def _check_connections(self) -> WebConfig:
        if self.max_connections_per_client > self.max_connections:
            raise ValueError("@web.max_connections_per_client: more than web.max_connections")
        return self

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
