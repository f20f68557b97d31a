"""YAML -> Config, remembering where every key sits so errors read `file:line:col: dotted.key: message`."""

from __future__ import annotations

import difflib
import logging
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from edge.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_PATH,
    STATE_DIR_ENV,
    Config,
    apply_environment,
    builtin_demo_data,
    resolve_relative_paths,
)
from edge.errors import ConfigError

PathKey = tuple[str | int, ...]
Positions = dict[PathKey, tuple[int, int]]  # 1-based line, column of the key (or list item)


def resolve_config_path(
    cli_path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """Which file to read, and whether the user asked for it explicitly (then it must exist)."""
    env = os.environ if environ is None else environ
    if cli_path is not None:
        return Path(cli_path), True
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), True
    return DEFAULT_CONFIG_PATH, False


def load_config(cli_path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration; raise ConfigError with every problem at once."""
    env = dict(os.environ if environ is None else environ)
    path, explicit = resolve_config_path(cli_path, env)
    if not path.exists():
        if explicit:
            raise ConfigError(f"{path}:1:1: (file): config file not found")
        # No config file: the developer's demo, which leaves nothing retained on a broker (edge.config.BUILTIN_DEMO)
        return _demo_state_dir(parse_config(builtin_demo_data(), {}, str(path), env), env)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}:1:1: (file): cannot read config file: {exc}") from exc
    # Relative paths in the file are taken from its folder (the daemon's working directory is / under systemd).
    return resolve_relative_paths(load_config_text(text, str(path), env), path.absolute().parent, env)


def load_config_text(text: str, filename: str = "<config>", environ: Mapping[str, str] | None = None) -> Config:
    data, positions, problems = parse_yaml(text, filename)
    return parse_config(data, positions, filename, dict(os.environ if environ is None else environ), problems)


def parse_config(
    data: dict[str, Any],
    positions: Positions,
    filename: str,
    environ: dict[str, str],
    problems: list[tuple[tuple[int, int], str]] | None = None,
) -> Config:
    """Validate; structural problems found while reading (duplicates) are reported with the rest, in file order."""
    found = list(problems or [])
    data = apply_environment(data, environ)
    config = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        found.extend(validation_problems(exc, positions))
    if found:
        found.sort(key=lambda item: item[0])
        raise ConfigError([f"{filename}:{line}:{col}: {text}" for (line, col), text in found])
    assert config is not None
    return config


_warned_fallback: set[Path] = set()


def _demo_state_dir(config: Config, environ: Mapping[str, str]) -> Config:
    """The developer's demo only (no config file given or found, no DOORBELL_EDGE_STATE_DIR): when the default
    /var/lib/doorbell-edge does not exist and cannot be created, use ~/.local/state/doorbell-edge instead.

    Nothing else falls back: a configured state dir, or a default one that exists, is used as it is, and one
    this user cannot read and write is a "permission denied ...; run as <owner>" error (edge/service/owner.py),
    never a silent second state next to the service's.
    """
    default = config.storage.state_dir
    if environ.get(STATE_DIR_ENV) or os.path.exists(default) or os.access(default.parent, os.W_OK | os.X_OK):
        return config
    base = Path(environ.get("XDG_STATE_HOME") or Path(environ.get("HOME") or Path.home()) / ".local" / "state")
    fallback = base / "doorbell-edge"
    if fallback not in _warned_fallback:  # once per process: owner commands load the config twice
        _warned_fallback.add(fallback)
        logging.getLogger(__name__).warning(
            "no config file and %s cannot be created: the demo keeps its state in %s "
            "(a config file's storage.state_dir or DOORBELL_EDGE_STATE_DIR chooses; no fall-back then)",
            default,
            fallback,
        )
    return config.model_copy(update={"storage": config.storage.model_copy(update={"state_dir": fallback})})


# --- YAML with positions -------------------------------------------------------------------------------


Problem = tuple[tuple[int, int], str]  # (line, col), "dotted.key: message"


def parse_yaml(text: str, filename: str) -> tuple[dict[str, Any], Positions, list[Problem]]:
    """Parse YAML into plain data, the 1-based position of every key, and structural problems.

    A duplicate key is a problem (the second one is ignored, so validation still sees the first);
    YAML syntax errors raise at once because nothing after them can be trusted.
    """
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ConfigError(f"{filename}:{line}:{col}: (yaml): {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{filename}:1:1: (yaml): {exc}") from None
    finally:
        loader.dispose()
    if root is None:
        return {}, {}, []
    positions: Positions = {}
    problems: list[Problem] = []
    data = _to_data(loader, root, (), positions, problems)
    if not isinstance(data, dict):
        line, col = root.start_mark.line + 1, root.start_mark.column + 1
        raise ConfigError(f"{filename}:{line}:{col}: (root): the config file must be a mapping of sections")
    return data, positions, problems


def _to_data(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: PathKey,
    positions: Positions,
    problems: list[Problem],
) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if not isinstance(key, str | int):
                problems.append(((line, col), f"{_dotted(path) or '(root)'}: keys must be strings"))
                continue
            key = str(key)
            child = (*path, key)
            if key in out:
                first = positions[child]
                problems.append(
                    (
                        (line, col),
                        f"{_dotted(child)}: duplicate key (first defined at line {first[0]}, column {first[1]})",
                    )
                )
                continue
            positions[child] = (line, col)
            out[key] = _to_data(loader, value_node, child, positions, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            positions[child] = (item.start_mark.line + 1, item.start_mark.column + 1)
            items.append(_to_data(loader, item, child, positions, problems))
        return items
    return loader.construct_object(node, deep=True)


# --- pydantic errors -> compiler-style lines -------------------------------------------------------------


def _dotted(path: PathKey) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_problems(exc: ValidationError, positions: Positions) -> list[Problem]:
    grouped: dict[PathKey, list[str]] = {}
    order: list[PathKey] = []
    for err in exc.errors(include_url=False):
        loc: PathKey = tuple(p for p in err["loc"] if isinstance(p, str | int))
        if err["type"] == "extra_forbidden":
            known = loc
            message = f"unknown key '{loc[-1]}'" + _did_you_mean(loc)
        else:
            known = _trim_to_data(loc, positions)
            message = _message(err)
            if message.startswith("@") and ": " in message:
                target, message = message[1:].split(": ", 1)
                known = tuple(int(p) if p.isdigit() else p for p in target.split("."))
        if known not in grouped:
            grouped[known] = []
            order.append(known)
        if message not in grouped[known]:
            grouped[known].append(message)
    return [
        (position_of(path, positions), f"{_dotted(path) or '(root)'}: {'; or '.join(grouped[path])}") for path in order
    ]


def _trim_to_data(loc: PathKey, positions: Positions) -> PathKey:
    """Union members and dict-key validators add loc parts that are not in the file: trim to the data.

    A top-level section keeps its name even when the file leaves it out (it was built from defaults).
    """
    known = loc
    while len(known) > 1 and known not in positions:
        known = known[:-1]
    return known


def position_of(path: PathKey, positions: Positions) -> tuple[int, int]:
    """Where `path` (or its nearest written parent) stands in the file; (1, 1) when nothing of it does."""
    probe = path
    while probe:
        if probe in positions:
            return positions[probe]
        probe = probe[:-1]
    return (1, 1)


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "missing":
        return "required key is missing"
    if "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict | list):
        msg += f" (got {err['input']!r})"
    return msg


def _did_you_mean(loc: PathKey) -> str:
    valid = _valid_keys(loc[:-1])
    if not valid:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; expected one of: {', '.join(sorted(valid))}"


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tp = models[0] if models else members[0]
        else:
            return tp


def _valid_keys(path: PathKey) -> list[str]:
    tp: Any = Config
    for part in path:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


# --- showing the resolved config -------------------------------------------------------------------------

SECRET_MARK = "secret"


def masked_dump(config: Config) -> dict[str, Any]:
    """The resolved config as plain data, every field marked secret replaced by '***'."""
    return _mask(config, config.model_dump(mode="json"))


def _mask(model: BaseModel, data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name, field in type(model).model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        value = getattr(model, name)
        if extra.get(SECRET_MARK) and out.get(name) is not None:
            out[name] = "***"
        elif isinstance(value, BaseModel):
            out[name] = _mask(value, out[name])
        elif isinstance(value, dict):
            out[name] = {
                k: _mask(v, out[name][k]) if isinstance(v, BaseModel) else out[name][k] for k, v in value.items()
            }
    return out
