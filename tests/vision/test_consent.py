"""The consent record's rules as a table: what a new or renewed consent must give (who, what for, given by today,
an end date after it and not past) and its status on a day, in words: valid, ends in N days (from 14), ended (not
recognised), no end date recorded (a record from an older version)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from edge.errors import StorageError
from edge.vision.consent import DEFAULT_PURPOSE, WARN_DAYS, check_record, checked, new_person_id, status
from edge.vision.gallery import Person

NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)  # 2026-03-10 in every time zone within +-11 h
TODAY = date(2026, 3, 10)


@pytest.mark.parametrize(("by", "given", "until", "purpose", "error"), [
    ("", date(2026, 3, 1), date(2027, 3, 1), DEFAULT_PURPOSE, r"say who gave consent.*\(--consent-by\)"),
    ("Ann", date(2026, 3, 1), date(2027, 3, 1), "  ", r"say what the consent is for.*\(--consent-purpose\)"),
    ("Ann", date(2026, 3, 11), date(2027, 3, 1), DEFAULT_PURPOSE,
     r"consent date 2026-03-11 is in the future \(today is 2026-03-10\).*\(--consent-date\)"),
    ("Ann", date(2026, 3, 1), None, DEFAULT_PURPOSE, r"give the day the consent ends.*\(--consent-until\)"),
    ("Ann", date(2026, 3, 1), date(2026, 3, 1), DEFAULT_PURPOSE,
     r"consent end date 2026-03-01 is not after the consent date 2026-03-01 \(--consent-until\)"),
    ("Ann", date(2026, 3, 1), date(2026, 2, 1), DEFAULT_PURPOSE,
     r"consent end date 2026-02-01 is not after the consent date 2026-03-01"),
    ("Ann", date(2026, 3, 1), date(2026, 3, 9), DEFAULT_PURPOSE,
     r"consent end date 2026-03-09 is in the past \(today is 2026-03-10\) \(--consent-until\)"),
    ("A" * 201, date(2026, 3, 1), date(2027, 3, 1), DEFAULT_PURPOSE, r"at most 200 characters \(--consent-by\)"),
])
def test_a_consent_missing_or_wrong_is_refused_naming_the_field(by: str, given: date, until: date | None,
                                                                 purpose: str, error: str) -> None:
    with pytest.raises(StorageError, match=error):
        checked(by, given, until, purpose, NOON)


def test_a_good_consent_is_kept_as_given() -> None:
    c = checked(" Ann ", date(2026, 3, 1), date(2026, 3, 10), " to be  named\nin events ", NOON)  # last day today
    assert (c.by, c.given, c.until, c.purpose) == ("Ann", date(2026, 3, 1), date(2026, 3, 10), "to be named in events")


def person(until: str | None) -> Person:
    return Person("Ann", "Ann", "2026-01-01", "2026-01-01T10:00:00Z", 1, "m", "chips", DEFAULT_PURPOSE, until, "abc")


@pytest.mark.parametrize(("until", "code", "text", "recognised"), [
    ("2027-03-10", "valid", "valid until 2027-03-10", True),
    ((date(2026, 3, 10 + WARN_DAYS + 1)).isoformat(), "valid", "valid until 2026-03-25", True),
    ((date(2026, 3, 10 + WARN_DAYS)).isoformat(), "ending", "ends in 14 days (last day 2026-03-24)", True),
    ("2026-03-11", "ending", "ends in 1 day (last day 2026-03-11)", True),
    ("2026-03-10", "ending", "ends today (2026-03-10 is its last day)", True),
    ("2026-03-09", "ended", "ended on 2026-03-09 \u2014 not recognised", False),
    (None, "no_end_date", "no end date recorded", True),
])
def test_the_status_in_words(until: str | None, code: str, text: str, recognised: bool) -> None:
    s = status(person(until), TODAY)
    assert (s.code, s.text, s.recognised, s.warning) == (code, text, recognised, code != "valid")


def test_a_damaged_consent_field_is_named() -> None:
    check_record({"consent_until": None, "consent_purpose": None})  # an older version's record: fine
    with pytest.raises(ValueError, match=r"consent_until '2026-13-01' is not a date"):
        check_record({"consent_until": "2026-13-01"})
    with pytest.raises(ValueError, match="person_id must be text"):
        check_record({"person_id": 7})


def test_person_ids_are_random() -> None:
    ids = {new_person_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
