"""Shared fixtures: the read-only data folder beside the checkout, and an isolated state directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# CI sets this so a missing data folder fails the run instead of skipping the tests that need it.
REQUIRE_DATA = os.environ.get("DOORBELL_EDGE_REQUIRE_DATA") == "1"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "MANIFEST.md").exists():
        message = f"test data folder {SHARED_DATA} is missing"
        if REQUIRE_DATA:
            pytest.fail(message + " (DOORBELL_EDGE_REQUIRE_DATA=1)")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    monkeypatch.setenv("DOORBELL_EDGE_STATE_DIR", str(path))
    monkeypatch.delenv("DOORBELL_EDGE_CONFIG", raising=False)
    return path
