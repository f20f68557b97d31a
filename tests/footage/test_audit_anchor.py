"""An audit the daemon cannot quietly rewrite: the four attacks of issue 12, each done to real files and caught by
`doorbell-edge audit verify` (the cross-check with the request store, or `--against` a head witnessed earlier: a
signed checkpoint, SEQ:HASH, or the retained MQTT head from a real mosquitto), naming the record."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.cli import main
from edge.clock import FakeClock
from edge.footage import checkpoint
from edge.footage.audit import GENESIS, HEAD_NAME, LOG_NAME, _canonical, record_hash
from edge.footage.desk import FootageDesk
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .factory import NOW, config, document, signed
from .test_export_e2e import FPS, WIN_START, find_faces, frames
from .test_service import desk_for


def write_config(tmp_path: Path, state: Path, **mqtt: Any) -> str:
    body = config(state).model_dump(mode="json", exclude_defaults=True)
    body.setdefault("storage", {})["state_dir"] = str(state)
    if mqtt:
        body["mqtt"] = mqtt
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def verify(capsys: pytest.CaptureFixture[str], cfg: str, *extra: str) -> tuple[int, str]:
    code = main(["audit", "verify", "--config", cfg, *extra])
    out = capsys.readouterr()
    return code, out.out + out.err


def head(state: Path) -> str:
    last = json.loads((state / "audit" / LOG_NAME).read_bytes().splitlines()[-1])
    return f"{last['seq']}:{last['hash']}"


def rewrite(state: Path, keep: Any) -> None:
    """What someone who can write audit/ does: drop records, re-number and re-chain the rest, rewrite the head."""
    path = state / "audit" / LOG_NAME
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    prev, out = GENESIS, []
    for record in (r for r in records if keep(r)):
        record.update(seq=len(out) + 1, prev=prev)
        record["hash"] = prev = record_hash(record)
        out.append(_canonical(record) + b"\n")
    path.write_bytes(b"".join(out))
    (state / "audit" / HEAD_NAME).write_text(json.dumps({"seq": len(out), "hash": prev}) + "\n")


def exported(tmp_path: Path, *, unblur: bool = False) -> tuple[FootageDesk, str, Path]:
    state = tmp_path / "state"
    clock = FakeClock(NOW)
    clips = ClipStore(state, clock)
    clip = write_test_clip(clips, "front_door", WIN_START + timedelta(seconds=5), frames(3, 1), FPS)
    desk = desk_for(state, clock, clips=clips)
    request, _ = desk.submit(signed(document("warrant")))
    desk.approve(request, unblur=[clip.id] if unblur else ())
    desk.export(request)
    ok, message = desk.verify_audit()
    assert ok, message
    return desk, request, state


def test_tail_dropped_and_head_rewritten_is_caught_against_an_earlier_head(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, _, state = exported(tmp_path)
    cfg = write_config(tmp_path, state)
    witnessed = head(state)  # published (retained on MQTT) and signed into a checkpoint before the attack
    key = tmp_path / "keys" / "audit-checkpoint.key"
    key.parent.mkdir()
    assert main(["audit", "checkpoint-key", str(key), "--config", cfg]) == 0
    note = tmp_path / "keys" / "today.checkpoint"
    assert main(["audit", "checkpoint", "--key", str(key), "--out", str(note), "--config", cfg]) == 0
    capsys.readouterr()
    seq = int(witnessed.split(":")[0])
    assert note.read_text().splitlines()[1] == str(seq)

    # The attacker cuts the export off the log (and off the store, so the cross-check has nothing to see).
    rewrite(state, lambda r: r["kind"] not in ("export_start", "export_complete"))
    with sqlite3.connect(state / "footage" / "requests.sqlite3") as db:
        db.execute("DELETE FROM exports")
        db.execute("DELETE FROM actions WHERE kind='export_complete'")
    code, text = verify(capsys, cfg)
    assert code == 0 and "chain intact" in text  # on its own, the rewrite is invisible

    code, text = verify(capsys, cfg, "--against", witnessed)
    assert code == 1
    assert f"record {seq}: missing: the log ends at record {seq - 2}, but a head witnessed earlier says record " \
           f"{seq} existed (cut off or rolled back)" in text
    code, text = verify(capsys, cfg, "--against", str(note), "--checkpoint-key", str(key.with_suffix(".pub")))
    assert code == 1 and f"record {seq}: missing" in text and f"the checkpoint {note}" in text

    # A record rewritten in place (same length) differs from the witnessed hash at that record.
    early = f"2:{json.loads((state / 'audit' / LOG_NAME).read_bytes().splitlines()[1])['hash']}"
    rewrite(state, lambda r: True if r["kind"] != "decision" else r.update(data={**r["data"], "codes": []}) or True)
    code, text = verify(capsys, cfg, "--against", early)
    assert code == 1 and "record 2: its hash" in text and "(rewritten or replaced)" in text


def test_a_forged_or_foreign_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    desk, _, state = exported(tmp_path)
    cfg = write_config(tmp_path, state)
    origin = checkpoint.origin_for(desk.config.device.id)
    signer, other = checkpoint.generate(origin), checkpoint.generate("someone-else")
    seq, digest = desk.audit.head()
    good = checkpoint.make(origin, seq, digest, signer, NOW)
    verifier = checkpoint.parse_vkey(signer.verifier)
    assert checkpoint.open_note(good, verifier).size == seq
    forged = good.replace(f"\n{seq}\n", f"\n{seq + 5}\n")
    with pytest.raises(checkpoint.CheckpointError, match="does not verify"):
        checkpoint.open_note(forged, verifier)
    with pytest.raises(checkpoint.CheckpointError, match="no signature by"):
        checkpoint.open_note(checkpoint.make(origin, seq, digest, other), verifier)
    with pytest.raises(checkpoint.CheckpointError, match="not this device's log"):
        checkpoint.open_note(checkpoint.make("doorbell-edge/next-door/footage-audit", seq, digest, signer), verifier,
                             origin)
    note = tmp_path / "forged.checkpoint"
    note.write_text(forged)
    code, text = verify(capsys, cfg, "--against", str(note), "--checkpoint-key", signer.verifier)
    assert code == 1 and "does not verify" in text
    note.write_text(good)
    code, text = verify(capsys, cfg, "--against", str(note), "--checkpoint-key", signer.verifier)
    assert code == 0, text
    assert f"holds record {seq} with the hash the checkpoint {note}" in text


@pytest.mark.parametrize("kind", ["export_complete", "export_start", "unblur"])
def test_an_export_or_unblur_record_deleted_and_rehashed_is_caught_by_the_cross_check(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    desk, request, state = exported(tmp_path, unblur=True)
    (export,) = desk.store.exports(request)
    rewrite(state, lambda r: r["kind"] != kind)
    assert desk.audit.verify().ok  # the chain and head file hold: only the store remembers
    code, text = verify(capsys, write_config(tmp_path, state))
    assert code == 1
    assert f"the request store and the log disagree: request {request}: " in text
    if kind == "unblur":
        assert "unblurs clip" in text and "no unblur record for it" in text
    else:
        assert f"export {export['id']}" in text and "not in the log" in text


def test_an_approval_inserted_only_into_the_request_store_is_caught(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    desk = desk_for(state, FakeClock(NOW))
    request, _ = desk.submit(signed(document("warrant")))
    with sqlite3.connect(state / "footage" / "requests.sqlite3") as db:
        cur = db.execute("INSERT INTO actions (request, kind, at, data) VALUES (?,?,?,?)",
                         (request, "approve", "2026-03-10T12:00:00.000Z",
                          json.dumps({"clips": None, "cameras": None, "data": None, "unblur": [],
                                      "attest_original": False, "by": "owner"})))
        action = cur.lastrowid
    code, text = verify(capsys, write_config(tmp_path, state))
    assert code == 1
    assert (f"request {request}: owner action {action} (approve, 2026-03-10T12:00:00.000Z) is in the request store "
            "but not in the log (inserted into the store, or its record removed from the log)") in text


def test_a_request_document_swapped_in_the_store_is_caught(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The intake record binds the document by its sha256: another document put in the store under an existing
    request (or only its recorded hash changed, or the intake record re-hashed to another document) disagrees."""
    state = tmp_path / "state"
    desk = desk_for(state, FakeClock(NOW))
    request, _ = desk.submit(signed(document("warrant")))
    other = signed(document("warrant", request_id="MPD-2026-0099"))
    cfg = write_config(tmp_path, state)
    assert verify(capsys, cfg)[0] == 0
    db_path = state / "footage" / "requests.sqlite3"
    with sqlite3.connect(db_path) as db:
        (raw, digest), = db.execute("SELECT raw, sha256 FROM requests WHERE id=?", (request,)).fetchall()
        db.execute("UPDATE requests SET raw=? WHERE id=?", (other, request))
    code, text = verify(capsys, cfg)
    assert code == 1 and f"request {request}: the document in the request store" in text, text
    import hashlib

    with sqlite3.connect(db_path) as db:  # the hash column made to match the swapped document as well
        db.execute("UPDATE requests SET sha256=? WHERE id=?", (hashlib.sha256(other).hexdigest(), request))
    code, text = verify(capsys, cfg)
    assert code == 1 and f"is not the one its intake record 1 received (sha256 {digest[:16]}" in text, text
    with sqlite3.connect(db_path) as db:
        db.execute("UPDATE requests SET raw=?, sha256=? WHERE id=?", (raw, digest, request))
    assert verify(capsys, cfg)[0] == 0
    rewrite(state, lambda r: r["kind"] != "intake" or r["data"].update(sha256="0" * 64) or True)
    assert desk.audit.verify().ok
    code, text = verify(capsys, cfg)
    assert code == 1 and f"request {request}: the document in the request store" in text, text


def test_an_interrupted_step_is_a_note_not_a_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    desk = desk_for(state, FakeClock(NOW))
    request, _ = desk.submit(signed(document("warrant")))
    desk.audit.append("owner_deny", request=request, reason="no", by="owner")  # killed before the store write
    code, text = verify(capsys, write_config(tmp_path, state))
    assert code == 0, text
    assert f"note: record 3 (owner_deny, request {request}): audited, but the request store has no such step" in text


def test_whole_state_dir_rolled_back_is_caught_against_the_retained_mqtt_head(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edge.clock import SystemClock
    from edge.events.bus import EventBus
    from edge.mqtt.service import build
    from edge.mqtt.topics import topics_for
    from tests.mqtt.broker import Broker
    from tests.mqtt.conftest import Subscriber, wait_until

    broker = Broker(tmp_path / "broker").start()
    state = tmp_path / "state"
    try:
        cfg_path = write_config(tmp_path, state, host="127.0.0.1", port=broker.port, reconnect_min_s=0.1,
                                reconnect_max_s=1.0, discovery=False)
        from edge.config_load import load_config

        cfg = load_config(cfg_path)
        clock = FakeClock(NOW)
        desk = FootageDesk(cfg, clock, find_faces=find_faces)  # events go to the real outbox
        first, _ = desk.submit(signed(document("warrant")))
        yesterday = tmp_path / "yesterday"
        shutil.copytree(state, yesterday)  # the copy someone keeps to roll the device back to
        old_head = head(state)

        service = build(cfg, EventBus(), SystemClock(), state_provider=dict)
        service.start()
        topic = topics_for(cfg).audit_head
        try:
            desk.deny(first, "not without a hearing")
            second, _ = desk.submit(signed(document("warrant", request_id="MPD-2026-0002")))
            desk.deny(second, "no")
            later_head = head(state)
            later_seq = int(later_head.split(":")[0])
            watcher = Subscriber(broker.port, [topic], client_id="home-assistant")
            wait_until(lambda: any(b["seq"] == later_seq for b in watcher.json_on(topic)),
                       what=f"the retained audit head {later_seq}")
            watcher.close()
        finally:
            service.stop()

        shutil.rmtree(state)
        shutil.copytree(yesterday, state)  # the whole state dir, rolled back
        code, text = verify(capsys, cfg_path)
        assert code == 0 and "chain intact" in text and head(state) == old_head  # consistent with itself

        late = Subscriber(broker.port, [topic], client_id="late-witness")  # the retained head, read afterwards
        wait_until(lambda: bool(late.json_on(topic)), what="the retained audit head")
        (retained,) = late.json_on(topic)
        late.close()
        assert f"{retained['seq']}:{retained['hash']}" == later_head
        saved = tmp_path / "head.json"
        saved.write_text(json.dumps(retained))
        code, text = verify(capsys, cfg_path, "--against", str(saved))
        old_seq = int(old_head.split(":")[0])
        assert code == 1
        assert (f"record {later_seq}: missing: the log ends at record {old_seq}, but a head witnessed earlier says "
                f"record {later_seq} existed (cut off or rolled back)") in text
    finally:
        broker.stop()
