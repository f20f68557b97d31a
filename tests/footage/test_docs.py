"""docs/footage-requests.md explains every reason code."""

from __future__ import annotations

from pathlib import Path

from edge.footage.policy import CODES

DOC = Path(__file__).resolve().parents[2] / "docs" / "footage-requests.md"


def test_every_code_is_explained() -> None:
    text = DOC.read_text()
    for code in CODES:
        assert f"| `{code}` |" in text, code
