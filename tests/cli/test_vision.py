"""The faces and eval commands through the real command line (config loader, state dir from the environment)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main

EX = Path("gallery") / "face_recognition" / "examples"


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DOORBELL_EDGE_STATE_DIR", str(tmp_path / "state"))
    cfg = tmp_path / "config.yaml"
    cfg.write_text("faces:\n  model: int8\n  threads: 2\n")
    monkeypatch.setenv("DOORBELL_EDGE_CONFIG", str(cfg))
    return tmp_path / "state"


def test_enroll_list_forget(data: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = sorted(str(p) for p in (data / EX / "knn_examples" / "train" / "obama").glob("*.jpg"))
    rc = main(
        ["faces", "enroll", "Barack Obama", *train, "--consent-by", "Barack Obama", "--consent-date", "2026-11-27",
         "--consent-until", "2099-12-31"]
    )
    assert rc == 0
    assert main(["faces", "list", "--json"]) == 0
    out = capsys.readouterr().out
    people = json.loads(out[out.index("[") :])
    assert [(p["name"], p["photos"], p["consent_by"]) for p in people] == [("Barack Obama", 2, "Barack Obama")]
    assert any(state.rglob("*.jpg"))
    assert main(["faces", "forget", "Barack Obama"]) == 0
    # Nothing of the person is left but the audit log's record of the enrolment and of the forgetting.
    assert [p for p in state.rglob("*") if p.is_file() and p.parent.name != "audit"] == []
    records = [json.loads(line) for line in (state / "audit" / "footage.jsonl").read_text().splitlines()]
    pid = people[0]["person_id"]
    assert [(r["kind"], r["data"]["person_id"]) for r in records] == [("face_enrol", pid), ("face_forget", pid)]
    assert "Obama" not in (state / "audit" / "footage.jsonl").read_text()  # nothing links the log to his name
    assert main(["faces", "forget", "Barack Obama"]) == 1


def test_enroll_needs_consent_and_a_face(data: Path, state: Path) -> None:
    with pytest.raises(SystemExit):  # argparse: --consent-by is required
        main(["faces", "enroll", "X", str(data / EX / "biden.jpg"), "--consent-date", "2026-11-27",
              "--consent-until", "2099-12-31"])
    neg = sorted((data / "negatives" / "skimage").glob("*"))[0]
    assert main(["faces", "enroll", "X", str(neg), "--consent-by", "X", "--consent-date", "2026-11-27",
                 "--consent-until", "2099-12-31"]) == 1
    assert not any(p.is_file() for p in state.rglob("*"))


def test_eval_commands_json(data: Path, state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "lfw", "--data", str(data / "lfw"), "--pairs", "100", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["pairs"] == 100 and r["model"] == "int8" and 0.9 <= r["accuracy_mean"] <= 1.0
    assert (
        main(["eval", "detect", "--faces", str(data / "gallery"), "--negatives", str(data / "negatives"), "--json"])
        == 0
    )
    d = json.loads(capsys.readouterr().out)
    assert d["negative_images"] == 110 and d["recall"] > 0.9
