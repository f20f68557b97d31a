"""The command line: `doorbell-edge run | check-config | ring | ...`; feature packages add their own commands."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence

import yaml

from edge import __version__
from edge.errors import EdgeError

log = logging.getLogger(__name__)

# Feature packages register their subcommands here: each module exposes register(subparsers), and every
# parser it adds sets `func(args) -> int`. Add one line per module.
COMMAND_MODULES: list[str] = [
    "edge.footage.cli",
    "edge.vision.cli",
    "edge.clips_cli",
    "edge.mqtt.cli",
]


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=None,
        help="config file (default: $DOORBELL_EDGE_CONFIG or /etc/doorbell-edge/config.yaml; built-in defaults "
        "when neither exists)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="doorbell-edge",
        description="Privacy-first doorbell camera: on-device faces, MQTT events, warrant-checked footage.",
    )
    parser.add_argument("--version", action="version", version=f"doorbell-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run the daemon (demo camera and no broker needed by default)")
    add_config_arg(run)
    run.add_argument("--for", dest="duration", type=float, default=None, help="stop after this many seconds")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate the config and print it resolved, secrets masked")
    add_config_arg(check)
    check.add_argument("--quiet", "-q", action="store_true", help="print nothing when the config is valid")
    check.set_defaults(func=_cmd_check_config)

    ring = sub.add_parser("ring", help="press the doorbell: the running daemon emits a ring event")
    add_config_arg(ring)
    ring.add_argument("--camera", default=None, help="camera the ring belongs to (default: the first camera)")
    ring.set_defaults(func=_cmd_ring)

    schema = sub.add_parser("config-schema", help="print the JSON schema of the config file")
    schema.set_defaults(func=_cmd_schema)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.app import run_daemon
    from edge.config_load import load_config

    config = load_config(args.config)
    return run_daemon(config, duration=args.duration)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from edge.config_load import load_config, masked_dump

    config = load_config(args.config)
    if not args.quiet:
        sys.stdout.write(yaml.safe_dump(masked_dump(config), sort_keys=False))
    return 0


def _cmd_ring(args: argparse.Namespace) -> int:
    from edge.config_load import load_config
    from edge.service.control import send_command

    config = load_config(args.config)
    camera = args.camera or next(iter(config.cameras))
    if camera not in config.cameras:
        raise EdgeError(f"no camera named {camera!r}; cameras: {', '.join(config.cameras)}")
    reply = send_command(config.state_dir, {"cmd": "ring", "camera": camera})
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


def _cmd_schema(args: argparse.Namespace) -> int:
    from edge.config import json_schema

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except EdgeError as exc:
        print(f"doorbell-edge: {exc}" if exc.exit_code != 78 else str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
