"""One table of malformed requests that both sides run (tests/agency/test_shared_table.py): the device's decide()
and the agency's `request check` must give the same reason code, and the agency names the field."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tests.footage.factory import NOW, document, z

Doc = dict[str, Any]


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], Doc]
    code: str  # the device's reason code
    field: str  # the field the agency tool names


def _with(doc: Doc, path: str, value: Any) -> Doc:
    """doc with the value at a dotted path replaced (None: removed)."""
    target = doc
    *head, last = path.split(".")
    for part in head:
        target = target[int(part)] if part.isdigit() else target[part]
    if value is None:
        target.pop(last)
    elif last.isdigit():
        target[int(last)] = value
    else:
        target[last] = value
    return doc


def _window(start: timedelta, end: timedelta) -> list[dict[str, str]]:
    return [{"start": z(NOW + start), "end": z(NOW + end)}]


CASES = [
    Case("missing case number", lambda: _with(document("consent_request"), "case_number", None),
         "INCOMPLETE", "case_number"),
    Case("a date that does not exist", lambda: _with(document("consent_request"), "incident.time",
                                                     "2026-02-30T10:00:00Z"), "INCOMPLETE", "incident.time"),
    Case("an extra field (a photo)", lambda: {**document("consent_request"), "photos": ["face.jpg"]},
         "INCOMPLETE", "photos"),
    Case("a warrant without its court", lambda: document("warrant", issued_by=None), "INCOMPLETE", "issued_by"),
    Case("an unknown format version", lambda: {"version": 2, **document("consent_request")}, "INCOMPLETE", "version"),
    Case("a device that is not a fingerprint", lambda: document("consent_request", device="front-porch"),
         "INCOMPLETE", "device"),
    Case("wildcard camera *", lambda: _with(document("warrant"), "scope.cameras", ["*"]),
         "BAD_CAMERA", "scope.cameras[0]"),
    Case("wildcard camera all, second", lambda: _with(document("warrant"), "scope.cameras", ["front_door", "all"]),
         "BAD_CAMERA", "scope.cameras[1]"),
    Case("no cameras", lambda: _with(document("warrant"), "scope.cameras", []), "BAD_CAMERA", "scope.cameras"),
    Case("consent window over the default 1 h",
         lambda: _with(document("consent_request"), "scope.windows", _window(timedelta(hours=-5), timedelta(hours=-3))),
         "SCOPE_TOO_BROAD", "scope.windows"),
    Case("warrant windows over the default 12 h",
         lambda: _with(document("warrant"), "scope.windows",
                       _window(timedelta(hours=-40), timedelta(hours=-20))), "SCOPE_TOO_BROAD", "scope.windows"),
    Case("a window backwards",
         lambda: _with(document("warrant"), "scope.windows", _window(timedelta(hours=-2), timedelta(hours=-3))),
         "SCOPE_TOO_BROAD", "scope.windows[0].start"),
    Case("a window into the future",
         lambda: _with(document("warrant"), "scope.windows", _window(timedelta(minutes=-10), timedelta(minutes=10))),
         "PROSPECTIVE", "scope.windows[0].end"),
    Case("face data", lambda: _with(document("warrant"), "scope.data", ["video", "face_data"]),
         "BIOMETRICS_NEVER_EXPORTED", "scope.data[1]"),
    Case("a subpoena for video", lambda: _with(document("subpoena"), "scope.data", ["video"]),
         "SUBPOENA_NO_CONTENT", "scope.data[0]"),
    Case("audio without a warrant", lambda: _with(document("consent_request"), "scope.data", ["video", "audio"]),
         "AUDIO_REQUIRES_WARRANT", "scope.data[1]"),
    Case("expired", lambda: document("consent_request", issued_at=z(NOW - timedelta(days=3)),
                                     expires_at=z(NOW - timedelta(hours=1))), "EXPIRED", "expires_at"),
    Case("issued in the future", lambda: document("consent_request", issued_at=z(NOW + timedelta(hours=2))),
         "NOT_YET_VALID", "issued_at"),
    Case("a stale warrant", lambda: document("warrant", issued_at=z(NOW - timedelta(days=20))),
         "WARRANT_STALE", "issued_at"),
    Case("an emergency without a callback",
         lambda: document("exigent", emergency={"danger": "a child is missing"}), "EXIGENT_INCOMPLETE", "emergency"),
]
