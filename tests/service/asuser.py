"""Helpers for the tests that act as other users (throwaway users, nobody): root only, and paths any user can reach."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest


def require_root(reason: str) -> None:
    """Skip without root, but fail under CI=true (CI runs the suite as root: a skip there would hide the test)."""
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true, so this is a failure, not a skip")
        pytest.skip(reason)


def reachable_by_anyone(path: Path) -> bool:
    """Whether any user can reach `path`: every folder above it searchable by others, the path readable by them."""
    path = path.resolve()
    dirs = [*reversed(path.parents), path] if path.is_dir() else list(reversed(path.parents))
    return all(os.stat(d).st_mode & stat.S_IXOTH for d in dirs) and bool(os.stat(path).st_mode & stat.S_IROTH)
