"""The shared table (tests/agency/cases.py) run on both sides: the device's decide() denies each case with the
code, and the agency's check refuses it with the same code at the named field (file:line:col). The checks are
one code path (edge.footage.policy.static_checks), so the two cannot drift; this table proves it stays so."""

from __future__ import annotations

import pytest
import yaml

from edge.agency.check import check_request
from edge.footage.policy import decide
from tests.footage.factory import NOW, document, intake, policy

from .cases import CASES, Case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_device_denies_it(case: Case) -> None:
    decision = decide(intake(case.build()), policy(), [], [], NOW)
    assert decision.decision == "deny", decision
    assert case.code in decision.codes, decision.codes
    if case.code == "INCOMPLETE":  # the device's detail names the field too
        assert case.field.split("[")[0].split(".")[0] in decision.reasons[0].detail


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_agency_tool_refuses_it_naming_the_field(case: Case) -> None:
    raw = yaml.safe_dump(case.build(), sort_keys=False).encode()
    findings = [f for f in check_request(raw, NOW) if f.severity == "error"]
    assert any(f.code == case.code and f.field == case.field for f in findings), \
        [f.render("request.yaml") for f in findings]
    lines = raw.decode().splitlines()
    for finding in findings:  # the position points at the field's line (a missing one: at the start, or at
        # legal_basis, for which a warrant needs issued_by)
        if finding.field != "(document)" and "missing" not in finding.message and finding.field != "issued_by":
            leaf = finding.field.rsplit(".", 1)[-1].split("[")[0]
            assert leaf in lines[finding.line - 1] or lines[finding.line - 1].lstrip().startswith("-"), finding


@pytest.mark.parametrize("basis", ["warrant", "consent_request", "preservation", "subpoena_meta", "court_order"])
def test_what_the_device_accepts_the_agency_tool_accepts(basis: str) -> None:
    doc = document("subpoena", scope={**document("subpoena")["scope"], "data": ["event_metadata"]}) \
        if basis == "subpoena_meta" else document(basis)
    decision = decide(intake(doc), policy(), [], [], NOW)
    assert decision.decision != "deny", decision
    raw = yaml.safe_dump(doc, sort_keys=False).encode()
    assert [f for f in check_request(raw, NOW) if f.severity == "error"] == []


def test_an_emergency_request_is_a_warning_not_a_refusal() -> None:
    """Whether emergencies are accepted is the owner's setting (default deny): the agency is told, not stopped."""
    findings = check_request(yaml.safe_dump(document("exigent")).encode(), NOW)
    assert [(f.code, f.severity, f.field) for f in findings] == [("EXIGENT_DISABLED", "warning", "legal_basis")]
    assert decide(intake(document("exigent")), policy(), [], [], NOW).codes == ("EXIGENT_DISABLED",)


def test_an_unbound_request_is_a_warning() -> None:
    findings = check_request(yaml.safe_dump(document("consent_request", device=None)).encode(), NOW)
    assert [(f.code, f.severity) for f in findings] == [("UNBOUND_DEVICE", "warning")]
