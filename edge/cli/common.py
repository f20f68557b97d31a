"""What every command module shares: the `--config` option, the one way to load config, output for people."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from edge.clock import parse_rfc3339

if TYPE_CHECKING:
    from edge.config import Config

_LOADED = "_loaded_config"  # where load_config_for keeps the config it loaded, on the parsed arguments


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    """The one `--config` every command takes, spelt and explained the same everywhere."""
    parser.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="FILE",
        help="config file (default: $DOORBELL_EDGE_CONFIG, else /etc/doorbell-edge/config.yaml, else built-in "
        "defaults)",
    )


def load_config_for(args: argparse.Namespace) -> Config:
    """The config a command runs with: `--config`, else $DOORBELL_EDGE_CONFIG, else the default file, else the
    built-in demo. Loaded once per command (the state-owner check and the command itself share it); a problem
    is a ConfigError naming file, line and key (exit 78)."""
    loaded = getattr(args, _LOADED, None)
    if loaded is None:
        from edge.config_load import load_config

        loaded = load_config(getattr(args, "config", None))
        setattr(args, _LOADED, loaded)
    return loaded


# --- output for people (the `show` commands); --json output stays machine-shaped ---------------------------


def human_time(value: datetime | str | None) -> str:
    """Local time with UTC in brackets: `2026-03-01 13:00:05 CET (12:00:05 UTC)`; the UTC date is added when it
    differs, and the bracket is left out where local time is UTC. Accepts aware datetimes or RFC 3339 text."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        text = value
        try:
            value = parse_rfc3339(text)
        except ValueError:
            return text
    if value.tzinfo is None:
        return value.isoformat(sep=" ")
    local = value.astimezone()
    utc = value.astimezone(UTC)
    text = f"{local:%Y-%m-%d %H:%M:%S} {local.tzname() or ''}".rstrip()
    if local.utcoffset() == utc.utcoffset():
        return f"{utc:%Y-%m-%d %H:%M:%S} UTC"
    same_day = local.date() == utc.date()
    return f"{text} ({utc:%H:%M:%S} UTC)" if same_day else f"{text} ({utc:%Y-%m-%d %H:%M:%S} UTC)"


def print_fields(rows: Iterable[tuple[str, object]]) -> None:
    """Aligned `field: value` lines; a value with several lines continues under the first."""
    rows = list(rows)
    width = max((len(name) for name, _ in rows), default=0) + 1
    for name, value in rows:
        lines = str(value).splitlines() or [""]
        print(f"{name + ':':<{width}} {lines[0]}".rstrip())
        for line in lines[1:]:
            print(f"{'':<{width}} {line}".rstrip())
