"""The Debian tools the agency side is documented with (minisign, age): CI installs them (apt-get install
minisign age); elsewhere a test that needs one is skipped, in CI it fails."""

from __future__ import annotations

import os
import shutil

import pytest


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"the Debian tool {name!r} is not installed (apt-get install {name})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def fill_template(text: str, values: dict[str, str]) -> str:
    """The template with each CHANGE-ME line's value replaced by values[its key] (comments left alone)."""
    lines = []
    for line in text.splitlines():
        if "CHANGE-ME" in line and not line.lstrip().startswith("#"):
            key = line.split(":")[0].strip().lstrip("- ")
            line = line.split(":")[0] + ": " + values[key]
        lines.append(line)
    return "\n".join(lines) + "\n"
