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


# The start of a `python -c` script that runs the agency tool as installed by `pip install --no-deps doorbell-edge`
# plus its small libraries (docs/agency-guide.md): the daemon's other dependencies are made unimportable, so a stray
# import fails instead of passing unseen.
WITHOUT_HEAVY_MODULES = r"""
import json, sys, contextlib, io
class Absent:
    BLOCKED = {"cv2", "numpy", "matplotlib", "ai_edge_litert", "tflite_runtime", "av", "PIL", "paho", "nacl",
               "segno", "jsonschema", "gpiozero", "picamera2"}
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.BLOCKED:
            raise ImportError(f"{name} is not installed here")
        return None
sys.meta_path.insert(0, Absent())
"""
