"""The evaluation tests use the real videos in ../shared/data (the vision tests' fixture: required under CI)."""

from tests.vision.conftest import data  # noqa: F401  (a fixture, used by name)
