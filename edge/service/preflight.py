"""Before the daemon starts: every optional module the config needs is importable, or one clear error (exit 78)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from edge.config import Config
from edge.errors import ConfigError


@dataclass(frozen=True)
class Requirement:
    module: str  # the import name
    needed_by: str  # the config setting that asks for it
    install: str  # how to get it, as a command the user can paste


def requirements(config: Config) -> list[Requirement]:
    """The optional modules this config needs at run time, in the order the daemon would meet them."""
    needs: list[Requirement] = []
    for name, camera in config.cameras.items():
        if camera.source == "picamera2":
            needs.append(Requirement(
                "picamera2", f"cameras.{name}.source: picamera2",
                "on Raspberry Pi OS: sudo apt install python3-picamera2, and create the venv with "
                "--system-site-packages (deploy/install.sh does both)"))
    if config.recording.enabled:
        needs.append(Requirement(
            "av", "recording.enabled: true",
            "pip install av (it is a dependency of doorbell-edge: reinstall with pip install doorbell-edge), "
            "or set recording.enabled: false"))
    if config.button.gpio_pin is not None:
        needs.append(Requirement(
            "gpiozero", f"button.gpio_pin: {config.button.gpio_pin}",
            "sudo apt install python3-gpiozero (or pip install 'doorbell-edge[pi]'), or set button.gpio_pin: null"))
    return needs


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_modules(config: Config, importable: Callable[[str], bool] = _importable) -> list[str]:
    """One line per missing module: what asked for it, the module, and how to install it."""
    return [
        f"{r.needed_by}: needs the Python module {r.module!r}, which is not installed; {r.install}"
        for r in requirements(config) if not importable(r.module)
    ]


def check_modules(config: Config, importable: Callable[[str], bool] = _importable) -> None:
    """Raise ConfigError naming every missing module, what asked for it and how to install it."""
    missing = missing_modules(config, importable)
    if missing:
        raise ConfigError(missing)
