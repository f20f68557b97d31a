"""malloc tuning applies on glibc (this project's targets: Debian and Raspberry Pi OS)."""

from __future__ import annotations

import platform

from edge.service.memory import tune_malloc


def test_tune_malloc_applies_on_glibc() -> None:
    libc, _ = platform.libc_ver()
    assert tune_malloc() is (libc == "glibc")
