"""A state dir with a signed warrant request for the test device and clips in its window (tests/footage's
builders), so the page has something real to decide."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edge.clock import Clock
from edge.config import Config, WebConfig
from edge.events.bus import Event
from edge.events.journal import EventJournal, HistoryBounds
from edge.events.journal_files import journal_path
from edge.footage.desk import FootageDesk
from edge.recording.codec import choose_codec, make_encoder
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


def seed_ring_with_clip(cfg: Config, clock: Clock, ts: datetime, seconds: float = 4.0) -> tuple[str, str]:
    """A ring in the event journal at `ts`, recorded by a real clip (encoded by the project's encoder, moving
    frames) with the ring's snapshot, as the recorder keeps them; returns (event id, clip id)."""
    import cv2

    journal = EventJournal(journal_path(cfg), clock=clock, history=HistoryBounds(keep_days=365, max_events=1000))
    try:
        event = journal.record(Event("ring", "front_door", ts, {"source": "button"}))
    finally:
        journal.close()
    fps = 10.0
    frames = [np.full((120, 160, 3), 40, np.uint8) for _ in range(int(seconds * fps))]
    for i, frame in enumerate(frames):  # a bar moving across: a real picture, different in every frame
        frame[40:80, (i * 4) % 150:(i * 4) % 150 + 10] = 220
    store = ClipStore(cfg.state_dir, clock)
    codec = choose_codec("auto")
    encoder = make_encoder(codec, 160, 120, fps, 1.0, "medium")
    writer = store.begin("front_door", ts, codec, 160, 120)
    try:
        for i, image in enumerate(frames):
            for packet in encoder.encode(image, ts + timedelta(seconds=i / fps), i / fps):
                writer.write(packet)
        writer.add_event(event.id, "ring", ts)
        ok, jpeg = cv2.imencode(".jpg", frames[0])
        assert ok
        writer.add_snapshot(event.id, ts, jpeg.tobytes())
    finally:
        encoder.close()
    ref = writer.finish()
    assert ref is not None
    return event.id, str(ref.id)
