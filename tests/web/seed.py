"""A state dir with a signed warrant request for the test device and clips in its window (tests/footage's
builders), so the page has something real to decide."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edge.clock import Clock
from edge.config import Config, WebConfig
from edge.footage.desk import FootageDesk
from edge.recording.store import ClipStore
from tests.clips import write_test_clip

from ..footage.factory import NOW, config, document, signed
from .helpers import FAST_ARGON

WIN_START = NOW - timedelta(days=2, minutes=30)


def seeded_config(state: Path, **web: Any) -> Config:
    base = config(state)
    return base.model_copy(update={"web": WebConfig(enabled=True, hostname="doorbell.test", **FAST_ARGON, **web)})


def add_clip(cfg: Config, clock: Clock, minute: int) -> str:
    store = ClipStore(cfg.state_dir, clock)
    frames = [np.full((120, 160, 3), 60 + 10 * i, np.uint8) for i in range(3)]
    ref = write_test_clip(store, "front_door", WIN_START + timedelta(minutes=minute), frames, 10.0)
    return str(ref.id)


def seed_request(cfg: Config, clock: Clock, request_id: str = "MPD-2026-0001") -> str:
    desk = FootageDesk(cfg, clock, emit=lambda event: None)
    request, decision = desk.submit(signed(document("warrant", request_id=request_id)))
    assert decision.decision == "owner_review", decision
    return request
