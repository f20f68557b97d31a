"""A person's consent record (who consented, when, for what, until when), the checks a new or renewed record must
pass, and its status on a given day in words: valid, ending soon, ended (not recognised) or no end date recorded."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Literal

from edge.errors import StorageError

if TYPE_CHECKING:
    from edge.vision.gallery import Gallery, Person

log = logging.getLogger(__name__)
DEFAULT_PURPOSE = "to be named in this doorbell's events"
WARN_DAYS = 14  # "ends in N days" from this many days before the end date
MAX_TEXT = 200  # who consented, and the purpose: a line, not a document

StatusCode = Literal["valid", "ending", "ended", "no_end_date"]


@dataclass(frozen=True)
class Consent:
    """What the owner records when someone agrees: `until` is the last day the consent covers."""

    by: str
    given: date
    purpose: str
    until: date | None  # None only as asked for (refused by `checked`); never in a stored record


@dataclass(frozen=True)
class Status:
    """A person's consent on one day. `recognised` is False only once the end date has passed."""

    code: StatusCode
    text: str  # in words, for the page and `faces list`; never a colour alone
    days_left: int | None  # days from today to the end date (0: today is the last day); None without one

    @property
    def recognised(self) -> bool:
        return self.code != "ended"

    @property
    def warning(self) -> bool:
        return self.code != "valid"


def today_of(now: datetime) -> date:
    """The device's local calendar day at `now` (consent dates are local dates, as the owner writes them)."""
    return now.astimezone().date()


def new_person_id() -> str:
    """A random id for one enrolled person (48 bits; never derived from the name): the audit log names people
    by it, so once they are forgotten nothing on the device links the log to their name."""
    return secrets.token_hex(6)


def checked(by: str, given: date, until: date | None, purpose: str, now: datetime) -> Consent:
    """A new or renewed consent record, or a StorageError naming the field that is wrong: who and what for are
    required; the consent date is not after today; the end date is given, after the consent date and not past."""
    by, purpose = by.strip(), " ".join(purpose.split())
    today = today_of(now)
    if not by:
        raise StorageError("say who gave consent: the person, or their parent or guardian (--consent-by)")
    if len(by) > MAX_TEXT:
        raise StorageError(f"who gave consent: at most {MAX_TEXT} characters (--consent-by)")
    if not purpose:
        raise StorageError(f"say what the consent is for, for example \u201c{DEFAULT_PURPOSE}\u201d "
                           "(--consent-purpose)")
    if len(purpose) > MAX_TEXT:
        raise StorageError(f"what the consent is for: at most {MAX_TEXT} characters (--consent-purpose)")
    if given > today:
        raise StorageError(
            f"consent date {given.isoformat()} is in the future (today is {today.isoformat()}): "
            "record the day the person (or their guardian) actually gave consent (--consent-date)"
        )
    if until is None:
        raise StorageError("give the day the consent ends, YYYY-MM-DD: the person agreed to be recognised until "
                           "then (--consent-until)")
    if until <= given:
        raise StorageError(f"consent end date {until.isoformat()} is not after the consent date "
                           f"{given.isoformat()} (--consent-until)")
    if until < today:
        raise StorageError(f"consent end date {until.isoformat()} is in the past (today is {today.isoformat()}) "
                           "(--consent-until)")
    return Consent(by, given, purpose, until)


def end_date(person: Person) -> date | None:
    """The person's consent end date; None when the record has none (a gallery from an older version)."""
    if person.consent_until is None:
        return None
    return date.fromisoformat(person.consent_until)  # checked when the record was loaded (gallery.person_from)


def status(person: Person, today: date) -> Status:
    """The person's consent on `today`: ended (the end date has passed: not recognised), ending within
    WARN_DAYS, valid, or no end date recorded (recognised, with a warning until the owner records one)."""
    until = end_date(person)
    if until is None:
        return Status("no_end_date", "no end date recorded", None)
    left = (until - today).days
    if left < 0:
        return Status("ended", f"ended on {until.isoformat()} \u2014 not recognised", left)
    if left == 0:
        return Status("ending", f"ends today ({until.isoformat()} is its last day)", left)
    if left <= WARN_DAYS:
        return Status("ending", f"ends in {left} day{'s' if left != 1 else ''} (last day {until.isoformat()})", left)
    return Status("valid", f"valid until {until.isoformat()}", left)


def check_record(data: dict[str, object]) -> None:
    """The consent fields of a person.json as read: ValueError naming a field that is not what it must be."""
    for key in ("consent_purpose", "consent_until", "person_id"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"{key} must be text")
    until = data.get("consent_until")
    if isinstance(until, str):
        try:
            date.fromisoformat(until)
        except ValueError:
            raise ValueError(f"consent_until {until[:40]!r} is not a date (YYYY-MM-DD)") from None


def warn_at_start(gallery: Gallery, today: date) -> None:
    """The daemon's start: a warning naming (by id) each person with no consent end date recorded (still
    recognised) and each whose consent has ended (not recognised); nothing is changed or deleted."""
    try:
        people = gallery.people()
    except StorageError:
        return  # the daemon's housekeeping reports an unreadable gallery
    for code, what in (("no_end_date", "have no consent end date recorded; they are still recognised"),
                       ("ended", "have a consent that has ended; they are not recognised")):
        ids = [p.person_id or "(no id)" for p in people if status(p, today).code == code]
        if ids:
            log.warning("face gallery: %d enrolled person(s) (ids %s) %s: record a new consent with `doorbell-edge "
                        "faces consent NAME ...` or on the Faces page, or forget them", len(ids), ", ".join(ids), what)
