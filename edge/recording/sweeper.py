"""Retention applied: deleting what retention.plan() chooses (each clip's holds re-checked as it goes), and the
thread that expires holds and applies retention every sweep_interval_s."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from edge.clock import Clock
from edge.config import RetentionConfig
from edge.recording.camera_recorder import retention_policy
from edge.recording.refs import RetentionReport
from edge.recording.retention import RetentionPolicy, StoredClip, plan
from edge.recording.space import MiB
from edge.recording.store import ClipStore

log = logging.getLogger(__name__)

FreeBytes = Callable[[], int]


def retention_candidates(store: ClipStore) -> list[StoredClip]:
    """Every finished clip as retention sees it (its snapshots count towards its size)."""
    snaps = store.snapshot_bytes()
    return [StoredClip(c.id, c.start, c.end, c.klass, c.size + snaps.get(c.id, 0), c.held, c.trusted, c.age_from)
            for c in store.list()]


def apply_retention(store: ClipStore, policy: RetentionPolicy, free_bytes: int) -> RetentionReport:
    """Delete what retention.plan() chooses (store.delete re-checks each clip's holds); nothing during a
    clock-jump grace period (docs/time.md)."""
    allowed, trusted, now = store.time_guard.retention()
    if trusted:
        store.settle_untrusted_ages(now)
    holds_problem = store.holds_problem()
    if holds_problem is not None:  # fail closed: an unreadable hold may hold any clip
        log.error("retention paused: %s; nothing is deleted until the holds can be read", holds_problem)
        return RetentionReport((), 0, paused=True)
    if not allowed:
        log.info("retention paused: the clock jumped and has not yet been stable long enough (docs/time.md)")
        return RetentionReport((), 0, paused=True)
    result = plan(retention_candidates(store), policy, now, free_bytes)
    deleted = tuple(d for d in result.deletions if store.delete(d.clip_id, d.reason))
    return RetentionReport(deleted, result.shortfall_bytes)


class RetentionSweeper:
    """Expires legal holds and applies retention every sweep_interval_s on its own thread."""

    def __init__(self, store: ClipStore, config: RetentionConfig, clock: Clock, free_bytes: FreeBytes) -> None:
        self.store = store
        self.config = config
        self.policy = retention_policy(config)
        self.clock = clock
        self._free_bytes = free_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sweep_once(self) -> None:
        if self.store.holds_problem() is None:  # else apply_retention pauses and says why
            self.store.expire_holds()
        report = self.store.apply_retention(self.policy, self._free_bytes())
        if report.deleted:
            log.info("retention deleted %d clips", len(report.deleted))
        if report.shortfall_bytes:
            log.warning("retention cannot meet its targets: %d MiB short (held clips)", report.shortfall_bytes // MiB)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.config.sweep_interval_s):
            try:
                self.sweep_once()
            except Exception:
                log.exception("retention sweep failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
