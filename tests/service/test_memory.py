"""malloc tuning applies on glibc (this project's targets: Debian and Raspberry Pi OS)."""

from __future__ import annotations

import hashlib
import mmap
import platform
import re
from pathlib import Path

import numpy as np
import pytest

from edge.service.memory import release_mapped_file, tune_malloc


def test_tune_malloc_applies_on_glibc() -> None:
    libc, _ = platform.libc_ver()
    assert tune_malloc() is (libc == "glibc")


def _mapping_rss_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path`, from /proc/self/smaps."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.split(maxsplit=5)[-1] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_release_mapped_file_drops_resident_pages_and_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    data = np.random.default_rng(3).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert hashlib.sha256(m).digest() == hashlib.sha256(data).digest()  # touches every page
        assert _mapping_rss_kb(path) >= 4000
        assert release_mapped_file(path) == len(data)
        assert _mapping_rss_kb(path) < 100
        assert m[: 1 << 20] == data[: 1 << 20]  # still readable: pages come back from the page cache


def test_release_mapped_file_ignores_writable_and_unmapped_files(tmp_path: Path) -> None:
    path = tmp_path / "rw.bin"
    path.write_bytes(b"\1" * 65536)
    with path.open("r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        m[0] = 7
        assert release_mapped_file(path) == 0  # a writable mapping could hold changes: left alone
        assert m[0] == 7
    assert release_mapped_file(tmp_path / "never-mapped.bin") == 0
