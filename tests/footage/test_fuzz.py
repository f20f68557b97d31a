"""Fuzzed request documents: random bytes, deep nesting, huge strings, wrong types, bad base64, impossible
timestamps. Every one is denied with INCOMPLETE or BAD_SIGNATURE, nothing crashes, and the audit verifies."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.clock import FakeClock
from edge.footage.desk import FootageDesk
from edge.footage.policy import decide
from edge.footage.request import MAX_DOCUMENT_BYTES, parse_request, sign_document

from .factory import AGENCY_KEY, NOW, config, document, policy, signed

DENIED = {"INCOMPLETE", "BAD_SIGNATURE"}
POLICY = policy(exigent="owner")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def judge(raw: bytes) -> set[str]:
    decision = decide(parse_request(raw), POLICY, [], [], NOW)
    assert decision.decision == "deny", (raw[:200], decision)
    assert decision.segments == () and decision.data == ()
    return set(decision.codes)


@SETTINGS
@given(st.binary(max_size=2000))
def test_random_bytes(raw: bytes) -> None:
    assert judge(raw) <= DENIED


@SETTINGS
@given(st.text(max_size=500))
def test_random_text(text: str) -> None:
    assert judge(text.encode()) <= DENIED


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
PATHS = [
    ("request_id",), ("agency",), ("agency", "name"), ("agency", "contact"), ("officer",), ("officer", "badge"),
    ("legal_basis",), ("case_number",), ("incident",), ("incident", "time"), ("issued_by",), ("issued_by", "court_id"),
    ("issued_at",), ("expires_at",), ("scope",), ("scope", "cameras"), ("scope", "windows"), ("scope", "data"),
    ("scope", "windows", 0), ("scope", "windows", 0, "start"), ("emergency",), ("signatures",),
    ("signatures", "agency"), ("signatures", "court"), ("photo",), ("scope", "watch_list"),
]


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@SETTINGS
@given(st.sampled_from(PATHS), JSON, st.booleans())
def test_wrong_types_after_signing(path: tuple[Any, ...], value: Any, resign: bool) -> None:
    """A field replaced by anything. Left unsigned: denied INCOMPLETE or BAD_SIGNATURE. Re-signed by the agency:
    denied INCOMPLETE unless the new value happens to be valid (then it is judged like any request)."""
    doc = json.loads(signed(document("warrant")))
    original = copy.deepcopy(doc)
    _set(doc, path, value)
    if doc == original or (path == ("signatures", "court") and value is None):
        return  # unchanged, or merely without the optional court signature
    if resign and path[0] != "signatures":
        try:
            doc = sign_document(doc, AGENCY_KEY)
        except Exception:
            resign = False  # not canonicalisable: no agency could sign it either
    raw = json.dumps(doc).encode()
    intake = parse_request(raw)
    decision = decide(intake, POLICY, [], [], NOW)
    if resign and intake.document is not None and path[0] != "signatures":
        return
    assert decision.decision == "deny", (path, value, decision)
    assert set(decision.codes) <= DENIED, (path, value, decision.codes)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b"{\"a\":" * 50_000,
        ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 3000))).encode(),
        b"- " * 20_000 + b"x",
        json.dumps(json.loads("[" * 40 + "]" * 40)).encode(),
        b"x" * (MAX_DOCUMENT_BYTES + 1),
        b"{\"request_id\": \"" + b"A" * (MAX_DOCUMENT_BYTES - 100) + b"\"}",
        b"a: &x [1, 2]\nb: *x\n",
        b"a: 1\na: 2\n",
        b"{\"a\": 1, \"a\": 2}",
        b"{\"a\": NaN}",
        b"{\"a\": 1e400}",
        b"{\"a\": 123456789012345678901234567890}",
        b"\xff\xfe\x00",
        b"",
        b"null",
        b"[]",
        b"!!python/object/apply:os.system ['true']",
        b"a: !!binary aGVsbG8=",
    ],
)
def test_hostile_shapes(raw: bytes) -> None:
    assert judge(raw) <= DENIED


def _with(**fields: Any) -> dict[str, Any]:
    doc = document("warrant")
    doc.update(fields)
    return doc


@pytest.mark.parametrize(
    "stamp",
    ["2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "2026-03-01T24:00:00Z", "2026-03-01T23:59:60Z",
     "2026-03-01T12:00:00", "2026-03-01", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59-23:59",
     "0001-01-01T00:00:00+23:59", "2026-03-01T12:00:00+24:00", "tomorrow", "", "2026-03-01T12:00:00.Z"],
)
def test_impossible_timestamps(stamp: str) -> None:
    for field in ("issued_at", "expires_at"):
        assert judge(signed(_with(**{field: stamp}))) == {"INCOMPLETE"}, (field, stamp)
    doc = document("warrant")
    doc["scope"]["windows"][0]["start"] = stamp
    assert judge(signed(doc)) == {"INCOMPLETE"}


@pytest.mark.parametrize("sig", ["", "!!!", "AAAA", "a" * 199, base64.b64encode(b"x" * 63).decode(),
                                 base64.b64encode(b"x" * 64).decode(), "====", "Zm9v\n"])
def test_bad_base64_signatures(sig: str) -> None:
    doc = json.loads(signed(document("warrant")))
    doc["signatures"]["agency"] = sig
    assert judge(json.dumps(doc).encode()) <= DENIED
    doc = json.loads(signed(document("warrant")))
    doc["signatures"]["court"] = sig
    assert judge(json.dumps(doc).encode()) <= DENIED


def test_huge_strings_in_fields() -> None:
    for path in [("agency", "name"), ("incident", "description"), ("request_id",), ("scope", "cameras")]:
        doc = document("warrant")
        _set(doc, path, ["x" * 100_000] if path[-1] == "cameras" else "x" * 100_000)
        assert judge(signed(doc)) == {"INCOMPLETE"}, path


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300) | st.sampled_from([b"[" * 5000, b"{}", b"a: b"]), min_size=1, max_size=4))
def test_submitting_fuzz_keeps_audit_intact(tmp_path_factory: pytest.TempPathFactory, docs: list[bytes]) -> None:
    state: Path = tmp_path_factory.mktemp("fuzz")
    desk = FootageDesk(config(state), FakeClock(NOW), clips=[], emit=lambda event: None)
    for raw in docs:
        _, decision = desk.submit(raw)
        assert decision.decision == "deny" and set(decision.codes) <= DENIED
    assert desk.audit.verify().ok
    assert [r["kind"] for r in desk.audit.records()] == ["intake", "decision"] * len(docs)
