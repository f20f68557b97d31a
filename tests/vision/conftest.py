"""Shared fixtures for the vision tests: the shipped models (which must exist) and ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.vision import runtime
from edge.vision.engine import FaceEngine

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".." / "shared" / "data"
MODELS = REPO / "edge" / "models"


def data_dir() -> Path:
    if not DATA.is_dir():  # fail loudly: CI lays shared/data beside the checkout
        raise AssertionError(f"test data missing: {DATA.resolve()}")
    return DATA


@pytest.fixture(scope="session")
def data() -> Path:
    return data_dir()


@pytest.fixture(scope="session")
def engine_int8() -> FaceEngine:
    return FaceEngine.load(model="int8", threads=2)


@pytest.fixture(scope="session")
def engine_float() -> FaceEngine:
    return FaceEngine.load(model="float", threads=2)


__all__ = ["DATA", "MODELS", "REPO", "runtime"]
