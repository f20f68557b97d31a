"""Full and read-only state dirs on real mounts: a 20 MB tmpfs filled up, and a read-only bind mount.

Needs root (mount); it skips without root, except under CI=true where it fails instead."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.app import App
from edge.clock import SystemClock
from edge.config import CameraConfig, Config
from edge.diskfaults import RESERVE_NAME, SpaceReserve
from edge.errors import StorageError
from edge.events.bus import Event
from edge.footage.audit import AuditLog
from edge.footage.store import RequestStore, StoredRequest
from edge.mqtt.outbox import Outbox, emit
from edge.recording.store import ClipStore
from tests.clips import write_test_clip
from tests.mqtt.broker import Broker
from tests.mqtt.conftest import Subscriber, wait_until

REPO = Path(__file__).resolve().parents[2]


def _need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("these tests mount file systems and must run as root in CI")
        pytest.skip("mounting a tmpfs needs root")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 20 MB tmpfs."""
    _need_root()
    mount = tmp_path / "state"
    mount.mkdir()
    _run("mount", "-t", "tmpfs", "-o", "size=20m,mode=0750", "tmpfs", str(mount))
    try:
        yield mount
    finally:
        _run("umount", "-l", str(mount))


def _fill(directory: Path) -> Path:
    """Fill the file system to the last byte with one file (as a runaway log would)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):  # big chunks, then the crumbs
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size) == size:
                    pass
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


def _event(i: int) -> Event:
    return Event("ring", "porch", datetime.now(UTC), {"source": "test", "n": i, "pad": "x" * 400})


def test_the_outbox_and_audit_log_write_into_the_reserve_on_a_full_disk(tmpfs: Path) -> None:
    reserve = SpaceReserve(tmpfs)
    assert reserve.ensure() and reserve.present()
    outbox = Outbox(tmpfs / "mqtt-outbox.sqlite3")
    audit = AuditLog(tmpfs, SystemClock())
    audit.append("notification", request="fr-0", text="before the disk filled")
    _fill(tmpfs)
    try:
        # Without the reserve these fail (checked below on a disk with no reserve left).
        stamped = [outbox.record(_event(i)) for i in range(300)]
        audit.append("notification", request="fr-1", text="written on a full disk")
        assert not reserve.present()  # it was released for them
        assert outbox.stats().waiting == 300 and [e.seq for e in stamped] == list(range(1, 301))
        assert audit.verify().ok and audit.verify().records == 2
        # Sent events can still be removed (a delete needs WAL space too).
        assert outbox.remove(e.seq for e in stamped if e.seq is not None) == 300
        # The reserve is spent: with the disk still full, enough further writes now fail loudly and cleanly.
        with pytest.raises(StorageError, match=r"disk is full|No space"):
            for i in range(100_000):
                outbox.record(_event(1000 + i))
    finally:
        outbox.close()
        (tmpfs / "filler").unlink()
    assert reserve.ensure()  # room again: the recorder makes it anew


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def _config(state: Path, port: int | None, **recording: object) -> Config:
    return Config(
        device={"id": "diskbell", "name": "Disk Bell"},
        cameras={"porch": CameraConfig(source="demo", width=160, height=120, fps=10, analysis_width=64)},
        storage={"state_dir": state},
        mqtt={"host": "127.0.0.1", "port": port or 1, "reconnect_min_s": 0.1, "reconnect_max_s": 0.5,
              "enabled": port is not None},
        faces={"enabled": False},
        recording={"pre_roll_s": 1.0, "post_roll_s": 1.0, "disk_check_s": 0.2, **recording},
        retention={"min_free_mb": 1},
        output={"stdout_events": False},
    )


def test_full_state_dir_recording_paused_and_every_later_event_reach_mqtt(tmpfs: Path, broker: Broker) -> None:
    prefix = "doorbell-edge/diskbell"
    sub = Subscriber(broker.port, [f"{prefix}/events"], client_id="disk-sub")
    app = App(_config(tmpfs, broker.port), stdout=io.StringIO(), environ={}).build()
    app.start()
    try:
        wait_until(lambda: (tmpfs / RESERVE_NAME).exists(), what="the space reserve")
        wait_until(lambda: any(e.get("status") == "started" for e in sub.json_on(f"{prefix}/events")),
                   what="the started event")
        _fill(tmpfs)
        rings = [app.ring("porch", "button") for _ in range(30)]  # each one also asks the recorder for a clip
        wait_until(lambda: app.state()["recorders"]["porch"]["paused"], what="recording to pause")
        later = [app.ring("porch", "button") for _ in range(30)]
        wanted = {e.id for e in rings + later}

        def arrived() -> bool:
            events = sub.json_on(f"{prefix}/events")
            got = {e["id"] for e in events}
            return wanted <= got and any(e.get("status") == "recording_paused" for e in events)

        wait_until(arrived, timeout=30, what="recording_paused and every ring on the broker")
        paused = [e for e in sub.json_on(f"{prefix}/events") if e.get("status") == "recording_paused"]
        # Either the floor or the released reserve stopped recording; the reserve's space is not recorded into.
        assert paused[0]["camera"] == "porch" and paused[0]["reason"] in ("disk_full", "write_error")
        assert paused[0]["free_bytes"] < paused[0]["min_free_bytes"] or paused[0]["reserve_used"]
        assert not (tmpfs / RESERVE_NAME).exists()  # released for the journal
        seqs = [e["seq"] for e in sub.json_on(f"{prefix}/events")]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert app.state()["recorders"]["porch"]["paused"]  # still paused: the disk is still full
    finally:
        app.stop()
        sub.close()


@pytest.fixture
def read_only_state(tmp_path: Path) -> Iterator[Path]:
    """A state dir with a clip, a footage request and an audit log, then bind-mounted read-only on itself."""
    _need_root()
    state = tmp_path / "state"
    state.mkdir()
    clock = SystemClock()
    start = datetime.now(UTC) - timedelta(hours=1)
    frames = [np.full((120, 160, 3), 20 * i, np.uint8) for i in range(10)]
    write_test_clip(ClipStore(state, clock), "porch", start, frames, fps=10)
    audit = AuditLog(state, clock)
    doc_sha = hashlib.sha256(b"{}").hexdigest()  # audit verify checks the stored document against its intake
    audit.append("intake", request="fr-1", sha256=doc_sha, bytes=2, agency=None, request_id=None, basis=None)
    # audit verify cross-checks the request store: a stored request needs its decision record too
    audit.append("decision", request="fr-1", request_id=None, decision="deny",
                 reasons=[{"code": "INCOMPLETE", "detail": "test"}], clips=[], data=[], policy_hash=None)
    RequestStore(state).add(
        StoredRequest("fr-1", start, None, None, None, False, b"{}", doc_sha, "deny",
                      [{"code": "INCOMPLETE", "detail": "test"}]),
        mark_seen=False,
    )
    for status in ("started", "stopped"):  # two events waiting for MQTT, for `mqtt outbox` to report
        emit(Config(storage={"state_dir": state}), Event("system", None, datetime.now(UTC), {"status": status}))
    _run("mount", "--bind", str(state), str(state))
    _run("mount", "-o", "remount,bind,ro", str(state))
    try:
        with pytest.raises(OSError) as err:
            (state / "probe").write_text("x")
        assert err.value.errno == errno.EROFS  # root cannot write either
        yield state
    finally:
        _run("umount", "-l", str(state))


def _cli(state: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOORBELL_EDGE_")}
    env.update(DOORBELL_EDGE_STATE_DIR=str(state), HOME=str(home))
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)


def test_read_only_state_dir_daemon_stays_up_and_read_commands_work(
    read_only_state: Path, broker: Broker, tmp_path: Path
) -> None:
    state = read_only_state
    prefix = "doorbell-edge/diskbell"
    sub = Subscriber(broker.port, [f"{prefix}/events"], client_id="ro-sub")
    app = App(_config(state, broker.port), stdout=io.StringIO(), environ={}).build()
    assert app.storage_problem and "not writable" in app.storage_problem
    app.start()  # no exception: no restart loop
    try:
        ring = app.ring("porch", "button")
        wait_until(lambda: any(e["id"] == ring.id for e in sub.json_on(f"{prefix}/events")), what="the ring")
        events = sub.json_on(f"{prefix}/events")
        problem = [e for e in events if e.get("status") == "storage_read_only"]
        assert problem and "read-only" in problem[0]["error"]
        assert app.state()["storage_problem"] and app.state()["recorders"]["porch"]["paused"]
        frames = app.state()["cameras"]["porch"]["frames"]
        wait_until(lambda: app.state()["cameras"]["porch"]["frames"] > frames + 5, what="frames to keep flowing")
        assert app.health.stalled() == []

        listed = _cli(state, tmp_path, "clips", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert len([json.loads(line) for line in listed.stdout.splitlines()]) == 1
        requests = _cli(state, tmp_path, "requests", "list", "--json")
        assert requests.returncode == 0, requests.stderr
        assert [r["id"] for r in json.loads(requests.stdout)] == ["fr-1"]
        verified = _cli(state, tmp_path, "audit", "verify")
        assert verified.returncode == 0, verified.stderr
        assert "2 record(s), chain intact" in verified.stdout
        outbox = _cli(state, tmp_path, "mqtt", "outbox", "--json")
        assert outbox.returncode == 0, outbox.stderr
        assert json.loads(outbox.stdout)["waiting"] == 2
    finally:
        app.stop()
        sub.close()


def test_a_read_only_audit_log_is_not_blamed_on_ownership(
    read_only_state: Path, broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """The `state_unreadable` warning says "read-only file system", not who owns the file, and does not send
    the owner off to run commands as the service user."""
    with pytest.raises(StorageError) as caught:
        AuditLog(read_only_state, SystemClock()).check_access()
    assert "read-only file system" in str(caught.value) and "owned by" not in str(caught.value)
    events: list[Event] = []
    app = App(_config(read_only_state, broker.port), stdout=io.StringIO(), environ={}).build()
    app.bus.subscribe(events.append)
    caplog.set_level(logging.WARNING, logger="edge.app")
    app.check_state_readable()
    (told,) = [e for e in events if e.fields.get("status") == "state_unreadable"]
    assert told.fields["what"] == "audit_log" and "read-only file system" in told.fields["error"]
    warning = [r.getMessage() for r in caplog.records if r.getMessage().startswith("audit_log: ")]
    assert warning and "read-only file system" in warning[0] and "service user" not in warning[0]
