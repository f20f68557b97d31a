"""Config loading: compiler-style errors with exact positions, did-you-mean, defaults, example and schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from edge.config import Config, json_schema
from edge.config_load import load_config, load_config_text, masked_dump
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "cfg.yaml", environ={})
    return info.value.messages


def test_wrong_type_points_at_the_key() -> None:
    text = "cameras:\n  front:\n    source: demo\n    fps: fast\n"
    assert errors_of(text) == [
        "cfg.yaml:4:5: cameras.front.fps: Input should be a valid number, unable to parse string as a number "
        "(got 'fast')"
    ]


def test_unknown_key_suggests_the_close_one() -> None:
    (line,) = errors_of("mqtt:\n  host: broker\n  prot: 1884\n")
    assert line == "cfg.yaml:3:3: mqtt.prot: unknown key 'prot'; did you mean 'port'?"


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    (line,) = errors_of("motion:\n  zzz: 1\n")
    assert line.startswith("cfg.yaml:2:3: motion.zzz: unknown key 'zzz'; expected one of: ")
    assert "threshold" in line


def test_unknown_section_suggests_the_section() -> None:
    (line,) = errors_of("camera:\n  x: {}\n")
    assert line == "cfg.yaml:1:1: camera: unknown key 'camera'; did you mean 'cameras'?"


def test_duplicate_key_is_an_error_naming_both_places() -> None:
    (line,) = errors_of("motion:\n  threshold: 30\n  threshold: 40\n")
    assert line == "cfg.yaml:3:3: motion.threshold: duplicate key (first defined at line 2, column 3)"


def test_all_errors_at_once_in_file_order() -> None:
    text = (
        "device:\n"
        "  name: Front\n"
        "cameras:\n"
        "  front_door:\n"
        "    source: demo\n"
        "    fps: fast\n"
        "mqtt:\n"
        "  host: localhost\n"
        "  prot: 1883\n"
        "motion:\n"
        "  threshold: 30\n"
        "  threshold: 40\n"
    )
    lines = errors_of(text)
    assert [line.split(": ")[0] for line in lines] == ["cfg.yaml:6:5", "cfg.yaml:9:3", "cfg.yaml:12:3"]
    assert [line.split(": ")[1] for line in lines] == ["cameras.front_door.fps", "mqtt.prot", "motion.threshold"]


def test_list_items_point_at_the_value() -> None:
    text = "cameras:\n  gate:\n    source: demo\n    privacy_masks:\n      - [[0, 0], [1.5, 0], [1, 1]]\n"
    assert errors_of(text) == [
        "cfg.yaml:5:19: cameras.gate.privacy_masks[0][1][0]: Input should be less than or equal to 1 (got 1.5)"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cameras:\n  gate:\n    source: opencv\n", "cfg.yaml:2:3: cameras.gate: source 'opencv' needs a url"),
        ("cameras:\n  bad name:\n    source: demo\n", "cfg.yaml:2:3: cameras.bad name: camera name may only use"),
        ("button:\n  camera: nope\n", "cfg.yaml:2:3: button.camera: 'nope' is not one of the cameras"),
    ],
)
def test_cross_field_errors_point_at_the_key(text: str, expected: str) -> None:
    (line,) = errors_of(text)
    assert line.startswith(expected)


def test_yaml_syntax_error_has_a_position() -> None:
    (line,) = errors_of("motion:\n  threshold: [1, 2\n")
    assert line.startswith("cfg.yaml:")
    assert "(yaml)" in line


def test_no_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(None, environ={"DOORBELL_EDGE_STATE_DIR": str(tmp_path)})
    assert list(config.cameras) == ["front_door"]
    assert config.cameras["front_door"].source == "demo"
    assert config.mqtt.host == "localhost" and config.mqtt.port == 1883
    assert config.state_dir == tmp_path
    assert config.topic_prefix == f"doorbell-edge/{config.device.id}"


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", environ={})
    assert "config file not found" in str(info.value)


def test_environment_chooses_the_file_and_state_dir(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("device:\n  id: porch\n")
    config = load_config(None, environ={"DOORBELL_EDGE_CONFIG": str(path), "DOORBELL_EDGE_STATE_DIR": "/srv/x"})
    assert config.device.id == "porch"
    assert config.state_dir == Path("/srv/x")


def test_check_config_exits_78_with_three_positioned_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mqtt:\n  port: many\n  hots: x\nmotion:\n  blur: 5\n  blur: 7\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"{path}:2:3: mqtt.port: Input should be a valid integer, unable to parse string as an integer (got 'many')",
        f"{path}:3:3: mqtt.hots: unknown key 'hots'; did you mean 'host'?",
        f"{path}:6:3: motion.blur: duplicate key (first defined at line 5, column 3)",
    ]
    assert proc.stdout == ""


def test_check_config_prints_the_resolved_config(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("device:\n  id: porch\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["device"]["id"] == "porch"
    assert resolved["motion"]["threshold"] == 25


def _walk_secrets(model: type[BaseModel], prefix: str = "") -> list[str]:
    found = []
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if extra.get("secret"):
            found.append(prefix + name)
    return found


def test_masked_dump_hides_fields_marked_secret() -> None:
    class Inner(BaseModel):
        token: str | None = None
        plain: str = "x"

    from pydantic import Field

    class Outer(BaseModel):
        inner: Inner = Inner()
        key: str | None = Field(None, json_schema_extra={"secret": True})

    Inner.model_fields["token"].json_schema_extra = {"secret": True}
    Inner.model_rebuild(force=True)
    dumped = masked_dump(Outer(inner=Inner(token="hunter2"), key="k"))  # type: ignore[arg-type]
    assert dumped == {"inner": {"token": "***", "plain": "x"}, "key": "***"}


def _missing_keys(model: BaseModel, data: Any, path: str) -> list[str]:
    """Every field of every model in the tree must be spelled out in the example."""
    missing = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        where = f"{path}.{name}" if path else name
        if not isinstance(data, dict) or name not in data:
            missing.append(where)
            continue
        if isinstance(value, BaseModel):
            missing += _missing_keys(value, data[name], where)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    missing += _missing_keys(item, data[name][key], f"{where}.{key}")
    return missing


def test_example_config_loads_and_documents_every_option() -> None:
    path = REPO / "config" / "example.yaml"
    config = load_config(path, environ={})
    data = yaml.safe_load(path.read_text())
    assert _missing_keys(config, data, "") == []
    assert len(config.cameras) >= 2


def test_json_schema_is_current() -> None:
    on_disk = json.loads((REPO / "config" / "config.schema.json").read_text())
    assert on_disk == json.loads(json.dumps(json_schema())), (
        "config/config.schema.json is stale: run `python -m edge.config > config/config.schema.json`"
    )


def test_defaults_validate_against_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(Config().model_dump(mode="json"), json_schema())


def test_configuration_reference_is_current() -> None:
    from edge.config import markdown_reference

    on_disk = (REPO / "docs" / "configuration.md").read_text()
    assert on_disk.strip() == markdown_reference().strip(), (
        "docs/configuration.md is stale: run `python -m edge.config --markdown > docs/configuration.md`"
    )
