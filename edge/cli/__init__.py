"""The command line: `doorbell-edge run | check-config | ring | ...`; feature packages add their own commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from types import ModuleType

import yaml

from edge import __version__
from edge.cli import clips, events, footage, mqtt, vision, web
from edge.cli.common import add_config_arg, human_time, load_config_for, print_fields
from edge.errors import EdgeError
from edge.service.owner import act_as_state_owner

__all__ = ["add_config_arg", "build_parser", "human_time", "load_config_for", "main", "print_fields"]

log = logging.getLogger(__name__)


# Every command group's module: each exposes register(subparsers), and every parser it adds sets
# `func(args) -> int`. Add one line per module (and its import above).
COMMAND_MODULES: tuple[ModuleType, ...] = (footage, vision, clips, mqtt, events, web)


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
    run.add_argument("--for", dest="duration", type=float, default=None, metavar="SECONDS",
                     help="stop after this many seconds (exit 0), e.g. for a first look or a CI run")
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

    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.app import run_daemon

    config = load_config_for(args)
    return run_daemon(config, duration=args.duration)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from edge.config_check import check_files, pointed_files, service_user
    from edge.config_load import masked_dump, resolve_config_path
    from edge.errors import ConfigError

    config = load_config_for(args)
    path, _explicit = resolve_config_path(args.config)
    # Then what it points at (video, password and TLS files), as the user the daemon will run as.
    problems = check_files(config, path if path.exists() else None)
    if problems:
        raise ConfigError(problems)
    # A module missing on this machine (picamera2 off a Pi) is said here, but not fatal: the config may be meant
    # for another machine (install.sh checks the Pi config on plain Debian too); `run` refuses with exit 78.
    from edge.service.preflight import missing_modules

    for line in missing_modules(config):
        print(f"check-config: warning: {line}; `doorbell-edge run` will refuse to start (exit 78)", file=sys.stderr)
    if not args.quiet:
        if pointed_files(config):
            sys.stdout.write(f"# files checked as the service user {service_user(config)}\n")
        sys.stdout.write(yaml.safe_dump(masked_dump(config), sort_keys=False))
    return 0


def _cmd_ring(args: argparse.Namespace) -> int:
    from edge.service.control import send_command

    config = load_config_for(args)
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
    try:
        args = parser.parse_args(argv)
        # As root: become the state dir's owner first (edge/service/owner.py).
        act_as_state_owner(args, lambda: load_config_for(args).state_dir, argv)
        _provide_export_finders()
        code = int(args.func(args))
        sys.stdout.flush()  # a reader that went away (`| head`) shows up here, inside the handlers below
        return code
    except EdgeError as exc:
        print(f"doorbell-edge: {exc}" if exc.exit_code != 78 else str(exc), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _stdout_gone()
    except OSError as exc:  # permission denied, disk full, a file gone: one line naming the file, no traceback
        log.debug("command failed", exc_info=True)
        print(f"doorbell-edge: {_os_error_line(exc)}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # a state database that is read-only, locked or damaged
        log.debug("command failed", exc_info=True)
        print(f"doorbell-edge: state database: {exc}", file=sys.stderr)
        return 1


def _provide_export_finders() -> None:
    """The shell joins the footage export to the vision package's face finders (footage never imports vision);
    the models load only when an export needs them."""
    from edge.footage import redact

    def shipped() -> redact.ExportFinders:
        from edge.vision import redaction_finders as finders

        return redact.ExportFinders(finders.find_faces(), finders.check_faces(), finders.NAMES)

    redact.provide_finders(shipped)


def _os_error_line(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    where = f"{exc.filename}: " if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{exc.filename} -> {exc.filename2}: "
    hint = ""
    if isinstance(exc, PermissionError):
        hint = " (run as a user that may use it; for the service's state: sudo -u doorbell-edge doorbell-edge ...)"
    return f"{where}{what}{hint}"


def _stdout_gone() -> int:
    """The reader of stdout closed it (`doorbell-edge ... | head`): one line on stderr, then stop.

    Whatever is still buffered goes to /dev/null instead of failing again when Python flushes at exit (as
    CPython's docs recommend); the exit status is the one a shell shows for a command stopped by SIGPIPE."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (captured in tests): nothing left to redirect
        pass
    with contextlib.suppress(OSError, ValueError):
        print("doorbell-edge: output closed early (broken pipe); the rest was not printed", file=sys.stderr)
    return 141


if __name__ == "__main__":
    raise SystemExit(main())
