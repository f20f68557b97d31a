"""Consent on the command line with the real models and photos: `faces enroll` needs an end date (not past, after
the consent date) and writes the purpose into the record; once the end date has passed `faces list` says so (text,
JSON, a warning) and `faces test` says the person would have been named but their consent has ended; `faces
consent` renews it (one audit record, by the person's id) and they are recognised again."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from edge.cli import main
from edge.clock import SystemClock
from edge.vision.consent import DEFAULT_PURPOSE

EX = Path("gallery") / "face_recognition" / "examples"


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOORBELL_EDGE_STATE_DIR", str(tmp_path / "state"))
    cfg = tmp_path / "config.yaml"
    cfg.write_text("faces:\n  model: int8\n  threads: 2\n")
    monkeypatch.setenv("DOORBELL_EDGE_CONFIG", str(cfg))
    return tmp_path / "state"


def today() -> date:
    return datetime.now(UTC).astimezone().date()


def test_enroll_needs_an_end_date_that_is_not_past(shared_data: Path, state: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    photo = str(shared_data / EX / "obama.jpg")
    given = ["--consent-by", "Barack Obama", "--consent-date", (today() - timedelta(days=30)).isoformat()]
    with pytest.raises(SystemExit):
        main(["faces", "enroll", "Barack Obama", photo, *given])
    assert "the following arguments are required: --consent-until" in capsys.readouterr().err
    yesterday = (today() - timedelta(days=1)).isoformat()
    assert main(["faces", "enroll", "Barack Obama", photo, *given, "--consent-until", yesterday]) == 1
    assert f"consent end date {yesterday} is in the past" in capsys.readouterr().err
    assert main(["faces", "enroll", "Barack Obama", photo, "--consent-by", "Barack Obama", "--consent-date",
                 today().isoformat(), "--consent-until", yesterday]) == 1
    assert f"consent end date {yesterday} is not after the consent date {today()} (--consent-until)" in (
        capsys.readouterr().err)
    assert not state.exists() or not [p for p in state.rglob("*") if p.is_file()]


def test_an_ended_consent_is_shown_tested_and_renewed(shared_data: Path, state: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    train = sorted(str(p) for p in (shared_data / EX / "knn_examples" / "train" / "obama").glob("*.jpg"))
    until = today() + timedelta(days=10)
    assert main(["faces", "enroll", "Barack Obama", *train, "--consent-by", "Barack Obama", "--consent-date",
                 today().isoformat(), "--consent-until", until.isoformat()]) == 0
    out = capsys.readouterr().out
    assert f"until {until} ({DEFAULT_PURPOSE}); id " in out  # the default purpose, written into the record
    probe = str(shared_data / EX / "obama-720p.jpg")

    assert main(["faces", "list"]) == 0
    captured = capsys.readouterr()
    assert f"consent=ends in 10 days (last day {until})" in captured.out
    assert "warning: Barack Obama: consent ends in 10 days" in captured.err

    later = datetime.now(UTC) + timedelta(days=20)  # twenty days on: the consent has ended
    monkeypatch.setattr(SystemClock, "now", lambda self: later)
    assert main(["faces", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["consent_status"]["code"] == "ended" and listed["consent_until"] == until.isoformat()
    assert main(["faces", "list"]) == 0
    captured = capsys.readouterr()
    assert f"consent=ended on {until} \u2014 not recognised" in captured.out
    assert f"warning: Barack Obama: consent ended on {until} \u2014 not recognised: renew it with" in captured.err

    assert main(["faces", "test", probe]) == 0
    out = capsys.readouterr().out
    assert "1 enrolled (1 not recognised: consent ended)" in out
    assert "unknown: Barack Obama (distance 0." in out and f"but their consent ended on {until}" in out
    assert main(["faces", "test", probe, "--json"]) == 0
    (face,) = json.loads(capsys.readouterr().out)["images"][0]["faces"]
    assert face["result"] == "unknown" and face["name"] is None and face["consent_ended"]["name"] == "Barack Obama"

    renewed = (later.astimezone().date() + timedelta(days=365)).isoformat()
    assert main(["faces", "consent", "Barack Obama", "--consent-by", "Barack Obama", "--consent-date",
                 later.astimezone().date().isoformat(), "--consent-until", renewed]) == 0
    assert f"consent recorded for Barack Obama: by Barack Obama on {later.astimezone().date()} until {renewed}" in (
        capsys.readouterr().out)
    assert main(["faces", "test", probe, "--json"]) == 0
    (face,) = json.loads(capsys.readouterr().out)["images"][0]["faces"]
    assert face["name"] == "Barack Obama" and face["consent_ended"] is None

    records = [json.loads(line) for line in (state / "audit" / "footage.jsonl").read_text().splitlines()]
    pid = json.loads((state / "faces" / "barack-obama" / "person.json").read_text())["person_id"]
    assert [(r["kind"], r["data"]["person_id"]) for r in records] == [("face_enrol", pid), ("face_consent", pid)]
    assert (records[1]["data"]["previous_until"], records[1]["data"]["consent_until"]) == (until.isoformat(), renewed)
