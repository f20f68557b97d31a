"""SIGKILL in the middle of an export (a real subprocess): no partial bundle, the audit shows the start without
completion and still verifies, and a retry completes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import yaml

from edge.clock import FakeClock
from edge.config_load import load_config
from edge.footage.desk import FootageDesk
from edge.footage.exporter import verify_bundle
from edge.footage.keys import device_key, public_key_b64
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from .factory import AGENCY_BOX, NOW, document, install_device_key, rules, signed
from .test_export_e2e import FPS, WIN_START, find_faces, frames

REPO = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from datetime import datetime
    from edge.clock import FakeClock
    from edge.config_load import load_config
    from edge.footage.desk import FootageDesk

    calls = 0

    def find_faces(image):
        global calls
        calls += 1
        if calls == 7:  # mid-way through the second clip
            os.kill(os.getpid(), signal.SIGKILL)
        return [(40, 30, 40, 40)]

    config = load_config(sys.argv[1])
    desk = FootageDesk(config, FakeClock(datetime.fromisoformat(sys.argv[3])), find_faces=find_faces)
    desk.export(sys.argv[2])
    print("finished")
    """
)


def test_sigkill_during_export_leaves_no_bundle_and_retry_completes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    clock = FakeClock(NOW)
    store = ClipStore(state, clock)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=10), frames(5, 1), FPS)
    write_test_clip(store, "front_door", WIN_START + timedelta(seconds=20), frames(5, 2), FPS)
    install_device_key(state)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump({"cameras": {"front_door": {}, "side_gate": {}}, "mqtt": {"enabled": False},
                                        "storage": {"state_dir": str(state)}, "footage_requests": rules()}))
    config = load_config(cfg_path)
    desk = FootageDesk(config, clock, clips=store, find_faces=find_faces)
    request, _ = desk.submit(signed(document("warrant")))
    desk.approve(request)

    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(cfg_path), request, NOW.isoformat()],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    exports = state / "footage" / "exports"
    assert not list(exports.glob("*.bundle")) and not list(exports.rglob("*.bundle"))
    kinds = [r["kind"] for r in desk.audit.records()]
    assert kinds[-1] == "export_start" and "export_complete" not in kinds
    assert desk.audit.verify().ok
    assert any((exports / ".partial").iterdir())  # the remains, never a bundle

    result = desk.export(request)
    device = public_key_b64(device_key(state))
    assert result.path.exists() and verify_bundle(result.path.read_bytes(), AGENCY_BOX, device).ok
    assert not any((exports / ".partial").iterdir())
    kinds = [r["kind"] for r in desk.audit.records()]
    assert kinds[-3:] == ["export_start", "export_start", "export_complete"]
    assert desk.audit.verify().ok
    assert [e["completed_at"] is not None for e in desk.store.exports(request)] == [False, True]
