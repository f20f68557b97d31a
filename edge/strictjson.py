"""Strict JSON for untrusted input: duplicate keys and NaN/Infinity are errors, not silently accepted."""

from __future__ import annotations

import json
from typing import Any


class StrictJSONError(ValueError):
    """The text is JSON that a lenient parser would accept but we refuse (duplicates, NaN, Infinity)."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJSONError(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON number")


def loads(text: str) -> Any:
    """json.loads, refusing duplicate keys and NaN/Infinity; raises ValueError (RecursionError if too deep)."""
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
