"""The daemon's periodic chores: footage requests swept (lapsed approvals, expired holds) and unreadable state said."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from edge.clock import Clock
from edge.config import Config
from edge.errors import StorageError
from edge.events.bus import Event, EventBus
from edge.layout import StateLayout
from edge.stage import Feature, Host

log = logging.getLogger(__name__)

HOUSEKEEPING_INTERVAL_S = 60.0


class Housekeeping:
    """A named thread that runs the chores at start and then every `interval` seconds."""

    def __init__(self, config: Config, bus: EventBus, clock: Clock, interval: float = HOUSEKEEPING_INTERVAL_S) -> None:
        self.config = config
        self.bus = bus
        self.clock = clock
        self.interval = interval
        self.pending_requests = 0
        self._state_problems: dict[str, str] = {}  # what -> the reason it cannot be read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            self.run_once()
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def state(self) -> dict[str, Any]:
        return {"pending_requests": self.pending_requests}

    def run_once(self) -> None:
        """Periodic chores that must happen even when nobody runs a command."""
        self.check_state_readable()
        if not StateLayout.of(self.config.state_dir).footage.exists():
            return  # no request was ever submitted: nothing to sweep (and no need to load the footage code)
        from edge.footage.desk import FootageDesk, pending_requests

        try:
            FootageDesk(self.config, self.clock, emit=self.bus.publish, actor="daemon").sweep()
            self.pending_requests = pending_requests(self.config, self.clock)
        except Exception:
            log.exception("footage housekeeping failed")

    def check_state_readable(self) -> None:
        """Say loudly (WARNING + a `system` event over MQTT) when the face gallery, the audit log or the legal holds
        cannot be read, e.g. files a root-run command left behind ("0 enrolled" would hide it) or a hold file the
        SD card damaged (retention then deletes nothing). Said again only when it changes."""
        from edge.vision.gallery import Gallery

        checks: dict[str, Callable[[], object]] = {}
        paths = StateLayout.of(self.config.state_dir)
        if any(os.path.lexists(p) for p in (paths.clip_index, paths.holds, paths.holds_moved)):
            from edge.recording.holds import HoldStore

            checks["holds"] = lambda: _raise(HoldStore(self.config.state_dir, self.clock).problem())
        # No audit log yet: nothing to read (nor footage code to load).
        if os.path.lexists(paths.audit):
            from edge.footage.audit import AuditLog

            checks["audit_log"] = AuditLog(self.config.state_dir, self.clock).check_access
        if self.config.faces.enabled:
            checks["face_gallery"] = Gallery(self.config.state_dir).templates
        for what in ("audit_log", "face_gallery", "holds"):
            problem = None
            try:
                checks.get(what, lambda: None)()
            except StorageError as exc:
                problem = str(exc)
            if problem == self._state_problems.get(what):
                continue
            if problem is None:
                del self._state_problems[what]
                log.info("%s can be read again", what.replace("_", " "))
                self.bus.publish(Event("system", None, self.clock.now(), {"status": "state_readable", "what": what}))
                continue
            self._state_problems[what] = problem
            if what == "holds":  # a fault of the disk, most likely; the daemon runs on, deleting nothing
                log.error("holds: %s; retention deletes no clip until the holds can be read (docs/recording.md, "
                          "Legal holds)", problem)
            else:
                log.warning("%s: %s%s", what, problem, "" if "read-only file system" in problem
                            else "; run owner commands as the service user (see README, Commands)")
            self.bus.publish(
                Event("system", None, self.clock.now(), {"status": "state_unreadable", "what": what, "error": problem})
            )


def _raise(problem: str | None) -> None:
    if problem is not None:
        raise StorageError(problem)


def build(config: Config, bus: EventBus, clock: Clock, host: Host) -> Feature:
    """Footage requests: lapsed approvals and expired holds are audited by the daemon too, not only when the
    owner next runs a footage command; the pending count feeds the state summary."""
    chores = Housekeeping(config, bus, clock)
    return Feature(chores, state=chores.state)
