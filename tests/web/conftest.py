from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.clock import FakeClock

from .helpers import Site, make_config

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def site(tmp_path: Path, clock: FakeClock) -> Site:
    return Site(make_config(tmp_path), clock)
